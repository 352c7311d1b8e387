// `rwsgi` command-line parsing: which command, and the inputs its settings
// resolve from (src/settings/ holds the flags themselves).

import { RwsgiError } from '../errors.js';
import { parseFlags } from '../settings/argv.js';
import type { Inputs } from '../settings/resolve.js';
import { didYouMean } from '../settings/suggest.js';
import { CONTROL_COMMANDS, type ControlCommandLine, isControlCommand, parseControlCommand } from './control-args.js';

// Kept where it was for callers of the old module; bind parsing lives with the settings.
export { parseBind } from '../settings/bind.js';

export const COMMANDS = {
  serve: { usage: 'rwsgi serve MODULE[:EXPORT] [options]', doc: 'serve an app: an arbiter and its workers' },
  check: { usage: 'rwsgi check [MODULE[:EXPORT]] [options]', doc: 'check the settings and that the app loads, without serving (exit 0, 3 or 4)' },
} as const;
export type CommandName = keyof typeof COMMANDS;

const ALL_COMMANDS = { ...COMMANDS, ...CONTROL_COMMANDS };

export const USAGE = [
  ...Object.values(ALL_COMMANDS).map((c, i) => `${i === 0 ? 'usage: ' : '       '}${c.usage}`),
  '       rwsgi --help | --version',
  '',
  'commands:',
  ...Object.entries(ALL_COMMANDS).map(([name, c]) => `  ${name.padEnd(16)}${c.doc}`),
  '',
  "'rwsgi COMMAND --help' lists a command's settings or options.",
].join('\n');

export type Command =
  | { kind: 'serve'; inputs: Inputs; printConfig: boolean; json: boolean }
  | { kind: 'check'; inputs: Inputs }
  | { kind: 'help'; command: CommandName | null }
  | { kind: 'version' }
  | ControlCommandLine;

const isCommand = (name: string): name is CommandName => Object.hasOwn(COMMANDS, name);

export function parseCommand(argv: string[], env: Inputs['env'] = process.env, cwd = process.cwd()): Command {
  // The commands that talk to a running server take their own few options.
  const first = argv.findIndex((a) => !a.startsWith('-'));
  if (first >= 0 && isControlCommand(argv[first] as string)) return parseControlCommand([argv[first] as string, ...argv.slice(0, first), ...argv.slice(first + 1)]);
  const flags = parseFlags(argv);
  const [command, ...rest] = flags.positionals;
  if (command !== undefined && !isCommand(command)) {
    throw new RwsgiError('RWSGI_ERR_USAGE', `unknown command '${command}'${didYouMean(command, Object.keys(ALL_COMMANDS))}`);
  }
  if (flags.help) return { kind: 'help', command: command ?? null };
  if (flags.version) return { kind: 'version' };
  if (command === undefined) throw new RwsgiError('RWSGI_ERR_USAGE', 'missing command');
  const inputs: Inputs = { flags: { ...flags, positionals: rest }, env, cwd };
  if (command === 'check') return { kind: 'check', inputs };
  return { kind: 'serve', inputs, printConfig: flags.printConfig, json: flags.json };
}
