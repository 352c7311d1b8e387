// The Prometheus text exposition format 0.0.4: one block per metric family
// (HELP, TYPE, then its samples), label values escaped.

export const CONTENT_TYPE = 'text/plain; version=0.0.4; charset=utf-8';

export type Labels = Record<string, string>;

export interface Sample {
  /** Appended to the family's name: `_bucket`, `_sum`, `_count` (histograms). */
  suffix?: string;
  labels?: Labels;
  value: number;
}

export interface Family {
  name: string;
  type: 'counter' | 'gauge' | 'histogram';
  help: string;
  samples: Sample[];
}

const escapeHelp = (text: string): string => text.replace(/\\/g, '\\\\').replace(/\n/g, '\\n');
const escapeLabel = (text: string): string => escapeHelp(text).replace(/"/g, '\\"');

function number(value: number): string {
  if (Number.isNaN(value)) return 'NaN';
  if (value === Infinity) return '+Inf';
  if (value === -Infinity) return '-Inf';
  return String(value);
}

function labelText(labels: Labels | undefined): string {
  const pairs = Object.entries(labels ?? {}).map(([k, v]) => `${k}="${escapeLabel(v)}"`);
  return pairs.length > 0 ? `{${pairs.join(',')}}` : '';
}

export function render(families: Family[]): string {
  let out = '';
  for (const { name, type, help, samples } of families) {
    out += `# HELP ${name} ${escapeHelp(help)}\n# TYPE ${name} ${type}\n`;
    for (const s of samples) out += `${name}${s.suffix ?? ''}${labelText(s.labels)} ${number(s.value)}\n`;
  }
  return out;
}

/** A histogram's samples from per-bucket counts (not cumulative; one more
 * than `bounds`, the last for everything above them). */
export function histogramSamples(bounds: number[], counts: number[], sum: number, labels: Labels = {}): Sample[] {
  const samples: Sample[] = [];
  let cumulative = 0;
  for (let i = 0; i <= bounds.length; i++) {
    cumulative += counts[i] ?? 0;
    samples.push({ suffix: '_bucket', labels: { ...labels, le: number(bounds[i] ?? Infinity) }, value: cumulative });
  }
  samples.push({ suffix: '_sum', labels, value: sum }, { suffix: '_count', labels, value: cumulative });
  return samples;
}
