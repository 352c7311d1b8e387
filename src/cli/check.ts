// `rwsgi check`: the settings resolved (a mistake already exited 3), then
// the app loaded in a child process as a worker would, without binding.
// Exit 0 when both are good, 4 when the app does not load.

import { spawn } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { checkTls } from '../arbiter/tls.js';
import { EXIT_APP_LOAD, EXIT_CONFIG } from '../errors.js';
import { SPEC_VARIABLE, type WorkerSpec } from '../protocol/spec.js';
import type { Resolved } from '../settings/resolve.js';

const CHECK_ENTRY = fileURLToPath(new URL('../worker/check.js', import.meta.url));

export async function runCheck({ config, file }: Resolved): Promise<number> {
  const say = (line: string): void => void process.stdout.write(`${line}\n`);
  if (config.app === null) {
    process.stderr.write("rwsgi check: no app to check: give MODULE[:EXPORT], or app in a config file\nsee 'rwsgi check --help'\n");
    return EXIT_CONFIG;
  }
  try {
    checkTls(config);
  } catch (err) {
    process.stderr.write(`rwsgi check: ${(err as Error).message}\n`);
    return EXIT_CONFIG;
  }
  say(`settings: ok (config file: ${file?.label ?? 'none'})`);
  const spec: WorkerSpec = { config, configFile: file?.path ?? null, listeners: 0, slot: 0, generation: 0, strayFds: [], tls: null };
  const child = spawn(process.execPath, [CHECK_ENTRY], {
    stdio: ['ignore', 'pipe', 'pipe'],
    env: { ...process.env, [SPEC_VARIABLE]: JSON.stringify(spec) },
  });
  let out = '';
  let err = '';
  child.stdout.on('data', (d: Buffer) => (out += d.toString()));
  child.stderr.on('data', (d: Buffer) => (err += d.toString()));
  const timer = setTimeout(() => child.kill('SIGKILL'), config.bootTimeout * 1000);
  const [code, signal] = await new Promise<[number | null, NodeJS.Signals | null]>((resolve) =>
    child.on('close', (c, s) => resolve([c, s])),
  );
  clearTimeout(timer);
  if (code === 0) {
    say(`app: ok (${config.app} loads, interface ${out.trim()})`);
    return 0;
  }
  const why = signal === 'SIGKILL' ? `it did not load within --boot-timeout ${config.bootTimeout}s` : err.trim();
  process.stderr.write(`rwsgi check: app ${config.app} does not load: ${why}\n`);
  return EXIT_APP_LOAD;
}
