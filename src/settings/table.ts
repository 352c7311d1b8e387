// The README's settings table, made from the registry (`npm run
// docs:settings` (write-readme.ts) writes it between the README's settings markers; a test
// fails when the two disagree).

import { defaultText } from './help.js';
import { SECTIONS } from './kinds.js';
import { NAMES, setting } from './registry.js';

const cell = (text: string): string => text.replace(/\|/g, '\\|');

export function settingsTable(): string {
  const rows = ['| setting (config file key) | flag | default | applies in | meaning |', '|---|---|---|---|---|'];
  for (const section of SECTIONS) {
    const names = NAMES.filter((n) => setting(n).section === section);
    if (names.length === 0) continue;
    rows.push(`| **${section}** | | | | |`);
    for (const name of names) {
      const s = setting(name);
      const flags = s.flag === undefined ? (s.kind === 'hook' ? 'config file only' : 'MODULE argument') : `${s.short ? `\`-${s.short}\`, ` : ''}\`--${s.flag}${s.meta ? ` ${s.meta}` : ''}\``;
      // A literal default in code font; one said in words (defaultText) as prose.
      const d = defaultText(name);
      const shown = d === '' || s.defaultText !== undefined ? cell(d) : `\`${cell(d)}\``;
      rows.push(`| \`${name}\` | ${cell(flags)} | ${shown} | ${s.applies.join(', ')} | ${cell(s.doc)} |`);
    }
  }
  return `${rows.join('\n')}\n`;
}
