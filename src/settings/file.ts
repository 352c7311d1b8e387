// Config files: `-c FILE`, else ./rwsgi.config.{mjs,js,cjs,json,mts,ts,cts}
// if one is there (as gunicorn reads ./gunicorn.conf.py; TypeScript loads
// as apps do, see ../typescript.ts). A JS file exports an object of settings (default export, or named exports), or a function, sync or
// async, returning one; JSON holds the object.

import { existsSync, readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { extname, isAbsolute, relative, resolve } from 'node:path';
import { pathToFileURL } from 'node:url';
import { RwsgiError } from '../errors.js';
import { authoredNamespace, prepareTypeScript } from '../typescript.js';

const EXTENSIONS = ['.mjs', '.js', '.cjs', '.json', '.mts', '.ts', '.cts'];
export const DEFAULT_FILES = EXTENSIONS.map((ext) => `rwsgi.config${ext}`);

export interface ConfigFile {
  /** Absolute path. */
  path: string;
  /** As messages name it: relative to the working directory when inside it. */
  label: string;
}

function configError(message: string): RwsgiError {
  return new RwsgiError('RWSGI_ERR_CONFIG', message);
}

function labelled(path: string, cwd: string): ConfigFile {
  const rel = relative(cwd, path);
  return { path, label: rel !== '' && !rel.startsWith('..') && !isAbsolute(rel) ? rel : path };
}

/** The config file to read: `explicit` (which must exist), else a default one, else none. */
export function findConfigFile(explicit: string | null, cwd: string, origin: string): ConfigFile | null {
  if (explicit !== null) {
    const path = resolve(cwd, explicit);
    if (!existsSync(path)) throw configError(`config file '${explicit}' (${origin}) not found (looked for ${path})`);
    if (!EXTENSIONS.includes(extname(path))) {
      throw configError(`config file '${explicit}' (${origin}) must end in ${EXTENSIONS.join(', ')}`);
    }
    return labelled(path, cwd);
  }
  const found = DEFAULT_FILES.map((f) => resolve(cwd, f)).find((p) => existsSync(p));
  return found === undefined ? null : labelled(found, cwd);
}

let loads = 0;

async function evaluate(file: ConfigFile): Promise<unknown> {
  if (file.path.endsWith('.json')) return JSON.parse(readFileSync(file.path, 'utf8'));
  // A fresh copy each time, so HUP sees an edited file: a new URL for the
  // ES module loader, and no cached CommonJS module either.
  const require = createRequire(file.path);
  delete require.cache[file.path];
  await prepareTypeScript(file.path);
  const namespace = authoredNamespace(
    (await import(`${pathToFileURL(file.path).href}?load=${++loads}`)) as Record<string, unknown>,
  );
  return 'default' in namespace ? namespace.default : { ...namespace };
}

/** The file's settings object, not yet checked key by key. */
export async function readConfigFile(file: ConfigFile): Promise<Record<string, unknown>> {
  let value: unknown;
  try {
    value = await evaluate(file);
    if (typeof value === 'function') value = await (value as () => unknown)();
  } catch (err) {
    const why = err instanceof Error ? `${err.name}: ${err.message}` : String(err);
    throw configError(`cannot load config file ${file.label}: ${why}`);
  }
  if (typeof value !== 'object' || value === null || Array.isArray(value)) {
    const got = value === null ? 'null' : Array.isArray(value) ? 'an array' : `a ${typeof value}`;
    throw configError(`config file ${file.label} must export an object of settings (or a function returning one), got ${got}`);
  }
  return value as Record<string, unknown>;
}
