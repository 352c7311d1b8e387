// `rwsgi serve --help`: the settings by section, from the registry.

import { COMMAND_OPTIONS } from './argv.js';
import { SECTIONS } from './kinds.js';
import { NAMES, setting } from './registry.js';

const WIDTH = 100;
const COLUMN = 33;

/** Markdown to terminal: no backticks. */
const plain = (text: string): string => text.replace(/`/g, '');

function wrap(text: string, width: number): string[] {
  const lines: string[] = [];
  let line = '';
  for (const word of text.split(/\s+/)) {
    if (line !== '' && line.length + 1 + word.length > width) {
      lines.push(line);
      line = word;
    } else {
      line = line === '' ? word : `${line} ${word}`;
    }
  }
  if (line !== '') lines.push(line);
  return lines;
}

function entry(flags: string, doc: string): string {
  const head = `  ${flags}`;
  const body = wrap(doc, WIDTH - COLUMN);
  const pad = ' '.repeat(COLUMN);
  const first = head.length < COLUMN - 1 ? `${head.padEnd(COLUMN)}${body.shift() ?? ''}` : `${head}\n${pad}${body.shift() ?? ''}`;
  return [first, ...body.map((l) => pad + l)].join('\n');
}

const flagsOf = (long: string, short: string | undefined, meta: string | undefined): string =>
  `${short ? `-${short}, ` : '    '}--${long}${meta ? ` ${meta}` : ''}`;

/** The default as help and the README say it. */
export function defaultText(name: (typeof NAMES)[number]): string {
  const s = setting(name);
  return s.defaultText ?? s.show(s.default());
}

/** A command's help: `usage`, then every flag by section. */
export function settingsHelp(usage: string, summary: string): string {
  const out = [
    `usage: ${usage}`,
    '',
    `${summary[0]?.toUpperCase()}${summary.slice(1)}.`,
    'Settings come from defaults < config file < RWSGI_CMD_ARGS < these flags;',
    'config files also hold the hooks (see the README).',
  ];
  for (const section of SECTIONS) {
    const names = NAMES.filter((n) => setting(n).section === section && setting(n).flag !== undefined);
    if (names.length === 0) continue;
    out.push('', `${section}:`);
    for (const name of names) {
      const s = setting(name);
      const d = defaultText(name);
      out.push(entry(flagsOf(s.flag as string, s.short, s.meta), `${plain(s.doc)}${d === '' ? '' : ` (default ${d})`}`));
    }
  }
  const hooks = NAMES.filter((n) => setting(n).kind === 'hook');
  out.push('', 'Hooks (functions in a config file):', ...wrap(hooks.join(', '), WIDTH - 2).map((l) => `  ${l}`));
  out.push('', 'Command:');
  for (const o of Object.values(COMMAND_OPTIONS)) out.push(entry(flagsOf(o.flag, o.short, o.meta), o.doc));
  return out.join('\n');
}
