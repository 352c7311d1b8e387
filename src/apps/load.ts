// Imports the user's module (ESM or CommonJS) and picks the app out of it.

import { existsSync } from 'node:fs';
import { createRequire } from 'node:module';
import { isAbsolute, resolve } from 'node:path';
import { pathToFileURL } from 'node:url';
import { EXIT_APP_LOAD, RwsgiError } from '../errors.js';
import { authoredNamespace, prepareTypeScript } from '../typescript.js';

/** `app.js:handler` -> module `app.js`, export `handler`. */
export function splitAppSpec(spec: string): { module: string; exportName: string | null } {
  const m = /^(.*):([A-Za-z_$][\w$]*)$/.exec(spec);
  if (m && m[1] !== '') return { module: m[1] as string, exportName: m[2] as string };
  return { module: spec, exportName: null };
}

function resolveModule(module: string, cwd: string): string {
  const asPath = isAbsolute(module) ? module : resolve(cwd, module);
  if (existsSync(asPath)) return asPath;
  try {
    return createRequire(resolve(cwd, 'noop.js')).resolve(module);
  } catch {
    throw new RwsgiError('RWSGI_ERR_APP_NOT_FOUND', `app module '${module}' not found (looked for ${asPath})`, EXIT_APP_LOAD);
  }
}

const FALLBACK_EXPORTS = ['app', 'application'];

export async function loadApp(spec: string, cwd = process.cwd()): Promise<unknown> {
  const { module, exportName } = splitAppSpec(spec);
  const file = resolveModule(module, cwd);
  await prepareTypeScript(file);
  let namespace: Record<string, unknown>;
  try {
    namespace = authoredNamespace((await import(pathToFileURL(file).href)) as Record<string, unknown>);
  } catch (err) {
    const detail = err instanceof Error ? (err.stack ?? err.message) : String(err);
    throw new RwsgiError('RWSGI_ERR_APP_LOAD', `failed to import ${file}:\n${detail}`, EXIT_APP_LOAD);
  }
  const fromDefault = namespace.default as Record<string, unknown> | undefined;
  const pick = (name: string): unknown =>
    name in namespace ? namespace[name] : fromDefault && typeof fromDefault === 'object' ? fromDefault[name] : undefined;
  let app: unknown;
  if (exportName !== null) {
    app = pick(exportName);
  } else {
    app = namespace.default;
    const servable = typeof app === 'function' || (typeof app === 'object' && app !== null && 'fetch' in app);
    if (!servable) app = FALLBACK_EXPORTS.map(pick).find((v) => v !== undefined) ?? app;
  }
  if (app === undefined || app === null) {
    const names = Object.keys(namespace).join(', ') || '(none)';
    throw new RwsgiError(
      'RWSGI_ERR_APP_EXPORT',
      `${file} has no ${exportName === null ? 'default export' : `export '${exportName}'`} (exports: ${names}); ` +
        'use MODULE:NAME to pick one',
      EXIT_APP_LOAD,
    );
  }
  return app;
}
