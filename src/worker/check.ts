// `rwsgi check`'s child: loads the worker hooks and the app as a worker
// would (same settings, same interface detection), without binding or
// serving. Prints the interface on stdout and exits 0, or the reason on
// stderr and exits 4.

import { detectApp } from '../apps/detect.js';
import { loadApp } from '../apps/load.js';
import { EXIT_APP_LOAD, RwsgiError } from '../errors.js';
import { describe } from '../log.js';
import { SPEC_VARIABLE, type WorkerSpec } from '../protocol/spec.js';
import { hooksIn } from '../settings/resolve.js';

async function main(): Promise<void> {
  const { config, configFile } = JSON.parse(process.env[SPEC_VARIABLE] ?? '{}') as WorkerSpec;
  const app = config.app ?? '';
  // As in a worker, something keeps the process up while the app loads: a
  // top-level await that never settles must meet --boot-timeout, not exit 0.
  setInterval(() => {}, 1 << 30);
  try {
    // A worker reads its hooks from the file too: that must work here as well.
    if (configFile !== null) await hooksIn(configFile, 'worker');
    const detected = await detectApp(await loadApp(app), config.interface, app);
    process.stdout.write(`${detected.label}\n`, () => process.exit(0));
  } catch (err) {
    process.stderr.write(`${err instanceof RwsgiError ? err.message : describe(err)}\n`, () => process.exit(EXIT_APP_LOAD));
  }
}

void main();
