// `npm run docs:settings`: writes the settings table (from the registry, see
// table.ts) into README.md between its settings markers.

import { readFileSync, writeFileSync } from 'node:fs';
import { settingsTable } from './table.js';

const README = new URL('../../README.md', import.meta.url);
const text = readFileSync(README, 'utf8');
const marked = /(<!-- settings:start -->\n)[\s\S]*?(<!-- settings:end -->)/;
if (!marked.test(text)) throw new Error('README.md has no <!-- settings:start --> ... <!-- settings:end --> markers');
writeFileSync(README, text.replace(marked, (_, start: string, end: string) => `${start}${settingsTable()}${end}`));
