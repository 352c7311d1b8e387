// The command line of the commands that talk to a running server over its
// control socket: which server (--socket, --pid, or the only one of this
// user), the command and its argument.

import { RwsgiError } from '../errors.js';
import { didYouMean } from '../settings/suggest.js';

export const CONTROL_COMMANDS = {
  status: { usage: 'rwsgi status [--json] [--watch] [SERVER]', doc: "a running server's workers, requests and memory, at a glance" },
  reload: { usage: 'rwsgi reload [SERVER]', doc: 'reload the code and settings, as HUP: new workers, then the old ones drain' },
  stop: { usage: 'rwsgi stop [--quick] [SERVER]', doc: 'stop gracefully, as TERM (--quick: as INT)' },
  scale: { usage: 'rwsgi scale N [SERVER]', doc: 'run exactly N workers, as repeated TTIN/TTOU' },
  'restart-worker': { usage: 'rwsgi restart-worker PID [SERVER]', doc: 'replace one worker: a new one first, then it drains' },
  dump: { usage: 'rwsgi dump PID [SERVER]', doc: "a worker's JavaScript stack and its requests in flight" },
} as const;
export type ControlCommandName = keyof typeof CONTROL_COMMANDS;

export const isControlCommand = (name: string): name is ControlCommandName => Object.hasOwn(CONTROL_COMMANDS, name);

const OPTIONS_HELP = [
  'SERVER (by default the only server of this user, found in its control socket directory):',
  '  --socket PATH    the server listening on control socket PATH (its --control-socket)',
  '  -p, --pid FILE   the server whose pid is in FILE (its --pid)',
  'options:',
  '  --json           print the reply as JSON, for scripts',
  '  --watch          status: redraw every second until Ctrl-C',
  '  --quick          stop: quickly, as INT (workers exit at once)',
  '  -h, --help       this text',
  '',
  'Exit status: 0 done; 1 no server there, or it said no (the reason is printed); 2 several servers (pick one with --socket); 3 a mistake on this command line.',
].join('\n');

export function controlHelp(name: ControlCommandName): string {
  const c = CONTROL_COMMANDS[name];
  return `usage: ${c.usage}\n\n${c.doc}\n\n${OPTIONS_HELP}`;
}

export type Target = { socket: string } | { pidfile: string } | null;

export interface ControlCommandLine {
  kind: 'control';
  command: ControlCommandName;
  target: Target;
  json: boolean;
  watch: boolean;
  quick: boolean;
  /** scale's N, restart-worker's and dump's PID. */
  number: number | null;
  help: boolean;
}

const usage = (message: string): never => {
  throw new RwsgiError('RWSGI_ERR_USAGE', message);
};

/** `argv` starts with the command's name. */
export function parseControlCommand(argv: string[]): ControlCommandLine {
  const [name, ...args] = argv;
  if (name === undefined || !isControlCommand(name)) return usage(`unknown command '${name ?? ''}'`);
  const out: ControlCommandLine = { kind: 'control', command: name, target: null, json: false, watch: false, quick: false, number: null, help: false };
  const positionals: string[] = [];
  const flags: Record<string, () => void> = {
    '--json': () => (out.json = true),
    '--watch': () => (out.watch = true),
    '--quick': () => (out.quick = true),
    '--help': () => (out.help = true),
    '-h': () => (out.help = true),
  };
  for (let i = 0; i < args.length; i++) {
    const arg = args[i] as string;
    const eq = arg.startsWith('--') ? arg.indexOf('=') : -1;
    const flag = eq > 0 ? arg.slice(0, eq) : arg;
    const value = (): string => (eq > 0 ? arg.slice(eq + 1) : (args[++i] ?? usage(`${flag} needs a value`)));
    if (flag === '--socket') out.target = { socket: value() };
    else if (flag === '--pid' || flag === '-p') out.target = { pidfile: value() };
    else if (Object.hasOwn(flags, flag) && eq < 0) (flags[flag] as () => void)();
    else if (arg.startsWith('-') && !/^-\d/.test(arg)) usage(`unknown option '${flag}' for ${name}${didYouMean(flag, ['--socket', '--pid', ...Object.keys(flags)])}`);
    else positionals.push(arg);
  }
  if (out.help) return out;
  if (out.watch && name !== 'status') usage('--watch is for status only');
  if (out.quick && name !== 'stop') usage('--quick is for stop only');
  const wants = name === 'scale' ? 'N' : name === 'restart-worker' || name === 'dump' ? 'PID' : null;
  if (wants === null) {
    if (positionals.length > 0) usage(`unexpected argument '${positionals[0]}' (${CONTROL_COMMANDS[name].usage})`);
    return out;
  }
  const [text, extra] = positionals;
  if (text === undefined || extra !== undefined || !/^\d+$/.test(text) || Number(text) < 1) {
    usage(`${name} needs ${wants}, a whole number >= 1 (${CONTROL_COMMANDS[name].usage})`);
  }
  out.number = Number(text);
  return out;
}
