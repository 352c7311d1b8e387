// TypeScript modules (apps, and anything else rwsgi imports by path): run by
// Node's own type stripping where this Node has it on, else through a loader
// the project installed (tsx, then ts-node's ESM loader), registered once
// before the first TypeScript module is imported.

import { createRequire, register } from 'node:module';
import { pathToFileURL } from 'node:url';
import { EXIT_APP_LOAD, RwsgiError } from './errors.js';

const TYPESCRIPT_FILE = /\.[cm]?ts$/;

/** The ways a TypeScript module can be made importable, first that works wins. */
const LOADERS: { package: string; register(require: NodeJS.Require, file: string): Promise<void> }[] = [
  {
    package: 'tsx',
    async register(require) {
      // What `node --import tsx` runs: ESM and CommonJS hooks both, so .ts, .mts and .cts load.
      await import(pathToFileURL(require.resolve('tsx')).href);
    },
  },
  {
    package: 'ts-node',
    async register(require, file) {
      register(pathToFileURL(require.resolve('ts-node/esm')).href, pathToFileURL(file));
    },
  },
];

let ready: Promise<void> | null = null;

/** Whether this Node strips types itself (22.10+ with the flag, on by default from 23.6). */
function nodeStripsTypes(): boolean {
  return Boolean((process.features as { typescript?: unknown }).typescript);
}

/** Makes `file` importable if it is TypeScript; fails (exit 4) naming what to install. */
export function prepareTypeScript(file: string): Promise<void> {
  if (!TYPESCRIPT_FILE.test(file) || nodeStripsTypes()) return Promise.resolve();
  ready ??= registerLoader(file);
  return ready;
}

async function registerLoader(file: string): Promise<void> {
  // The project's own loader, found from the module's directory.
  const require = createRequire(file);
  for (const loader of LOADERS) {
    try {
      require.resolve(`${loader.package}/package.json`);
    } catch {
      continue;
    }
    await loader.register(require, file);
    return;
  }
  throw new RwsgiError(
    'RWSGI_ERR_APP_LOAD',
    `${file} is TypeScript, which Node ${process.version} does not run by itself: ` +
      'install a loader in the project (npm i -D tsx), or run rwsgi with Node 23.6 or later',
    EXIT_APP_LOAD,
  );
}

/** A module's namespace as its author wrote it: a transpiled ES module
 * loaded as CommonJS (a `.ts` file outside a `"type": "module"` package,
 * through tsx or ts-node) arrives as `{ default: { __esModule, default, ... } }`. */
export function authoredNamespace(namespace: Record<string, unknown>): Record<string, unknown> {
  const inner = namespace.default as Record<string, unknown> | null | undefined;
  return typeof inner === 'object' && inner !== null && inner.__esModule === true ? inner : namespace;
}
