// The settings of one run, from four layers, later winning: defaults <
// config file < RWSGI_CMD_ARGS < command line (and PORT, when no layer
// binds). Every value is checked by its setting's kind, and a bad one is
// one line naming the setting, where it came from, the value and what is
// allowed.

import { RwsgiError } from '../errors.js';
import { type ParsedFlags, parseFlags, splitWords } from './argv.js';
import { type ConfigFile, findConfigFile, readConfigFile } from './file.js';
import { Invalid, quote, type Where } from './kinds.js';
import { type Config, isSettingName, NAMES, type SettingName, setting } from './registry.js';
import { didYouMean } from './suggest.js';

export type Source =
  | { kind: 'default' }
  | { kind: 'file'; file: string }
  | { kind: 'env'; name: string }
  | { kind: 'flag' };

export interface Resolved {
  config: Config;
  sources: Record<SettingName, Source>;
  /** The config file read, if any (workers read their hooks from it). */
  file: ConfigFile | null;
}

/** What the resolution starts from, kept so HUP can resolve again. */
export interface Inputs {
  /** The command line's flags, with the app (MODULE) as a positional. */
  flags: ParsedFlags;
  env: Readonly<Record<string, string | undefined>>;
  cwd: string;
}

function invalid(label: string, shown: string, err: unknown): never {
  if (!(err instanceof Invalid)) throw err;
  const message = err.sentence ? err.sentence(label, shown) : `${label} must be ${err.allowed}, got ${shown}`;
  throw new RwsgiError('RWSGI_ERR_CONFIG', message);
}

/** A layer's values for the settings it sets. */
type Layer = Partial<Record<SettingName, unknown>>;

function fromFlags(flags: ParsedFlags, origin: string): Layer {
  const layer: Layer = {};
  for (const [name, { texts, flag }] of Object.entries(flags.settings) as [SettingName, { texts: string[]; flag: string }][]) {
    const label = origin === '' ? flag : `${flag} in ${origin}`;
    try {
      layer[name] = setting(name).fromText(texts);
    } catch (err) {
      invalid(label, `'${texts[texts.length - 1] ?? ''}'`, err);
    }
  }
  return layer;
}

function fromFile(values: Record<string, unknown>, file: ConfigFile): Layer {
  const layer: Layer = {};
  for (const [key, value] of Object.entries(values)) {
    if (!isSettingName(key)) {
      throw new RwsgiError('RWSGI_ERR_CONFIG', `unknown setting '${key}' in ${file.label}${didYouMean(key, NAMES)}`);
    }
    try {
      layer[key] = setting(key).fromValue(value);
    } catch (err) {
      invalid(`${key} in ${file.label}`, typeof value === 'function' ? 'a function' : quote(value), err);
    }
  }
  return layer;
}

function envFlags(env: Inputs['env']): ParsedFlags | null {
  const text = env.RWSGI_CMD_ARGS;
  if (text === undefined || text.trim() === '') return null;
  const flags = parseFlags(splitWords(text), 'RWSGI_CMD_ARGS');
  if (flags.positionals.length > 0) {
    throw new RwsgiError('RWSGI_ERR_USAGE', `RWSGI_CMD_ARGS holds flags only, got '${flags.positionals[0]}'`);
  }
  return flags;
}

/** PORT, as platforms set it: binds 0.0.0.0:$PORT when nothing else binds. */
function portLayer(env: Inputs['env']): Layer {
  const port = env.PORT;
  if (port === undefined || port === '') return {};
  if (!/^\d+$/.test(port) || Number(port) > 65535) {
    throw new RwsgiError('RWSGI_ERR_CONFIG', `PORT must be a port number 0-65535, got '${port}'`);
  }
  return { bind: [`0.0.0.0:${Number(port)}`] };
}

export async function resolveSettings(inputs: Inputs): Promise<Resolved> {
  const { flags, env, cwd } = inputs;
  const fromEnv = envFlags(env);
  const explicit = flags.config ?? fromEnv?.config ?? null;
  const origin = flags.config !== null ? 'from -c' : 'from RWSGI_CMD_ARGS';
  const file = findConfigFile(explicit, cwd, origin);
  const fileLayer = file === null ? {} : fromFile(await readConfigFile(file), file);
  const envLayer = fromEnv === null ? {} : fromFlags(fromEnv, 'RWSGI_CMD_ARGS');
  const flagLayer = fromFlags(flags, '');
  const [app, ...extra] = flags.positionals;
  if (extra.length > 0) throw new RwsgiError('RWSGI_ERR_USAGE', `unexpected argument '${extra[0]}'`);
  if (app !== undefined) {
    try {
      flagLayer.app = setting('app').fromText([app]);
    } catch (err) {
      invalid('MODULE', `'${app}'`, err);
    }
  }
  const layers: [Layer, Source][] = [
    [flagLayer, { kind: 'flag' }],
    [envLayer, { kind: 'env', name: 'RWSGI_CMD_ARGS' }],
    [fileLayer, { kind: 'file', file: file?.label ?? '' }],
  ];
  if (!layers.some(([layer]) => Object.hasOwn(layer, 'bind'))) layers.push([portLayer(env), { kind: 'env', name: 'PORT' }]);
  const config: Record<string, unknown> = {};
  const sources: Partial<Record<SettingName, Source>> = {};
  for (const name of NAMES) {
    const hit = layers.find(([layer]) => Object.hasOwn(layer, name));
    config[name] = hit ? hit[0][name] : setting(name).default();
    sources[name] = hit ? hit[1] : { kind: 'default' };
  }
  return { config: config as Config, sources: sources as Record<SettingName, Source>, file };
}

export function describeSource(source: Source): string {
  switch (source.kind) {
    case 'default':
      return 'default';
    case 'file':
      return `file ${source.file}`;
    case 'env':
      return `env ${source.name}`;
    case 'flag':
      return 'command line';
  }
}

/** The hooks a config file sets for processes of kind `where`: a worker
 * reads its own from the file the arbiter's settings came from. */
export async function hooksIn(path: string, where: Where): Promise<Partial<Config>> {
  const file = { path, label: path };
  const values = await readConfigFile(file);
  const hooks: Record<string, unknown> = {};
  for (const name of NAMES) {
    const s = setting(name);
    if (s.kind !== 'hook' || !s.applies.includes(where) || !Object.hasOwn(values, name)) continue;
    try {
      hooks[name] = s.fromValue(values[name]);
    } catch (err) {
      invalid(`${name} in ${path}`, quote(values[name]), err);
    }
  }
  return hooks as Partial<Config>;
}
