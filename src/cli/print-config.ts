// `--print-config`: every resolved setting, its value and where it came from.

import { describeSource, type Resolved } from '../settings/resolve.js';
import { NAMES, setting } from '../settings/registry.js';

export function printConfig({ config, sources, file }: Resolved, json: boolean): string {
  if (json) {
    const out = Object.fromEntries(
      NAMES.map((name) => {
        const value = config[name];
        const { kind, ...detail } = sources[name];
        return [name, { value: typeof value === 'function' ? setting(name).show(value) : value, source: kind, ...detail }];
      }),
    );
    return `${JSON.stringify(out, null, 2)}\n`;
  }
  const width = Math.max(...NAMES.map((n) => n.length));
  const lines = NAMES.map((name) => {
    const shown = setting(name).show(config[name]);
    return `${name.padEnd(width)} = ${(shown === '' ? '(none)' : shown).padEnd(24)} # ${describeSource(sources[name])}`;
  });
  return `# config file: ${file?.label ?? '(none)'}\n${lines.join('\n')}\n`;
}
