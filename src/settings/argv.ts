// Flags as on a command line (the command line itself, or RWSGI_CMD_ARGS),
// read against the registry: `--flag value`, `--flag=value`, `-f value`,
// `-fvalue`, `--` ending the options. Values stay text; the settings'
// kinds check them (see resolve.ts), so every layer is validated alike.

import { RwsgiError } from '../errors.js';
import { NAMES, type SettingName, setting } from './registry.js';
import { didYouMean } from './suggest.js';

/** Options of the command itself rather than settings of the server. */
export const COMMAND_OPTIONS = {
  config: { flag: 'config', short: 'c', meta: 'FILE', doc: 'read settings from FILE (.mjs, .js, .cjs, .json, or TypeScript .mts, .ts, .cts); default ./rwsgi.config.<one of those> if there' },
  printConfig: { flag: 'print-config', short: undefined, meta: undefined, doc: 'print every setting with its value and where it came from, then exit' },
  json: { flag: 'json', short: undefined, meta: undefined, doc: 'with --print-config: as JSON' },
  help: { flag: 'help', short: 'h', meta: undefined, doc: 'this text' },
  version: { flag: 'version', short: 'v', meta: undefined, doc: 'the version' },
} as const;
export type CommandOption = keyof typeof COMMAND_OPTIONS;

/** One setting's flag occurrences: the texts in order, and the long flag. */
export interface FlagValue {
  texts: string[];
  flag: string;
}

export interface ParsedFlags {
  settings: Partial<Record<SettingName, FlagValue>>;
  config: string | null;
  printConfig: boolean;
  json: boolean;
  help: boolean;
  version: boolean;
  positionals: string[];
}

type Target = { setting: SettingName } | { option: CommandOption };

const byFlag = new Map<string, Target>();
const byShort = new Map<string, Target>();
for (const name of NAMES) {
  const s = setting(name);
  if (s.flag === undefined) continue;
  for (const flag of [s.flag, ...(s.aliases ?? [])]) byFlag.set(flag, { setting: name });
  if (s.short !== undefined) byShort.set(s.short, { setting: name });
}
for (const [option, o] of Object.entries(COMMAND_OPTIONS) as [CommandOption, (typeof COMMAND_OPTIONS)[CommandOption]][]) {
  byFlag.set(o.flag, { option });
  if (o.short !== undefined) byShort.set(o.short, { option });
}
const KNOWN_FLAGS = [...byFlag.keys()].map((f) => `--${f}`);

const takesValue = (t: Target): boolean => ('setting' in t ? setting(t.setting).kind !== 'switch' : t.option === 'config');

/** The long flag a target is named by in messages. */
const longFlag = (t: Target): string => `--${'setting' in t ? (setting(t.setting).flag as string) : COMMAND_OPTIONS[t.option].flag}`;

/** `origin`: '' for the command line, else where the flags came from (RWSGI_CMD_ARGS). */
export function parseFlags(args: readonly string[], origin = ''): ParsedFlags {
  const where = origin === '' ? '' : ` in ${origin}`;
  const fail = (message: string): never => {
    throw new RwsgiError('RWSGI_ERR_USAGE', message);
  };
  const out: ParsedFlags = { settings: {}, config: null, printConfig: false, json: false, help: false, version: false, positionals: [] };
  for (let i = 0; i < args.length; i++) {
    const arg = args[i] as string;
    if (arg === '--') {
      out.positionals.push(...args.slice(i + 1));
      break;
    }
    let target: Target | undefined;
    let inline: string | undefined;
    let spelled: string;
    if (arg.startsWith('--')) {
      const eq = arg.indexOf('=');
      spelled = eq < 0 ? arg : arg.slice(0, eq);
      if (eq >= 0) inline = arg.slice(eq + 1);
      target = byFlag.get(spelled.slice(2));
    } else if (arg.startsWith('-') && arg.length > 1) {
      spelled = arg.slice(0, 2);
      target = byShort.get(arg.slice(1, 2));
      if (arg.length > 2) inline = arg.slice(2);
    } else {
      out.positionals.push(arg);
      continue;
    }
    if (target === undefined) {
      return fail(`Unknown option '${spelled}'${where}${spelled.startsWith('--') ? didYouMean(spelled, KNOWN_FLAGS) : ''}`);
    }
    const name = longFlag(target);
    let value: string | undefined;
    if (takesValue(target)) {
      value = inline ?? args[++i];
      if (value === undefined) return fail(`${name}${where} needs a value`);
    } else if (inline !== undefined) {
      return fail(`${name}${where} takes no value, got '${inline}'`);
    }
    if ('setting' in target) {
      const entry = (out.settings[target.setting] ??= { texts: [], flag: name });
      // A repeatable flag adds up; any other, the last occurrence wins.
      const text = value ?? 'true';
      if (setting(target.setting).multiple) entry.texts.push(text);
      else entry.texts = [text];
    } else if (target.option === 'config') {
      out.config = value as string;
    } else {
      out[target.option] = true;
    }
  }
  return out;
}

/** Splits RWSGI_CMD_ARGS into words as a POSIX shell would (quotes, backslashes), without expansions. */
export function splitWords(text: string): string[] {
  const words: string[] = [];
  let word: string | null = null;
  let quote: '"' | "'" | null = null;
  for (let i = 0; i < text.length; i++) {
    const c = text[i] as string;
    if (quote === "'") {
      if (c === "'") quote = null;
      else word += c;
    } else if (quote === '"') {
      if (c === '"') quote = null;
      else if (c === '\\' && i + 1 < text.length && '"\\$`'.includes(text[i + 1] as string)) word += text[++i];
      else word += c;
    } else if (c === "'" || c === '"') {
      quote = c;
      word ??= '';
    } else if (c === '\\' && i + 1 < text.length) {
      word = (word ?? '') + text[++i];
    } else if (/\s/.test(c)) {
      if (word !== null) words.push(word);
      word = null;
    } else {
      word = (word ?? '') + c;
    }
  }
  if (quote !== null) throw new RwsgiError('RWSGI_ERR_USAGE', `RWSGI_CMD_ARGS has an unclosed ${quote} quote`);
  if (word !== null) words.push(word);
  return words;
}
