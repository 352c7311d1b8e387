// Writes the settings table (from the registry, see src/settings/table.ts)
// into README.md between its settings markers. Run after `npm run build:ts`.

import { readFileSync, writeFileSync } from 'node:fs';
import { settingsTable } from '../dist/settings/table.js';

const README = new URL('../README.md', import.meta.url);
const text = readFileSync(README, 'utf8');
const marked = /(<!-- settings:start -->\n)[\s\S]*?(<!-- settings:end -->)/;
if (!marked.test(text)) throw new Error('README.md has no <!-- settings:start --> ... <!-- settings:end --> markers');
writeFileSync(README, text.replace(marked, (_, start, end) => `${start}${settingsTable()}${end}`));
