#!/usr/bin/env node
// `rwsgi` entry point: parse the command line, run the command, map errors
// to gunicorn's exit codes. The arbiter never exits without a last log
// line saying why.

import { Arbiter } from '../arbiter/arbiter.js';
import { RwsgiError } from '../errors.js';
import { exitOnUncaught, reportFatalSignals } from '../last-words.js';
import { describe, logger, setLogFile, setLogLevel } from '../log.js';
import { settingsHelp } from '../settings/help.js';
import { type Resolved, resolveSettings } from '../settings/resolve.js';
import { VERSION } from '../version.js';
import { COMMANDS, parseCommand, USAGE } from './args.js';
import { runCheck } from './check.js';
import { isControlCommand } from './control-args.js';
import { runControl } from './control.js';
import { printConfig } from './print-config.js';

/** A mistake in the settings: one line, and where to read more. */
class SettingsError extends Error {
  constructor(
    readonly cause: RwsgiError,
    readonly command: string,
  ) {
    super(cause.message);
  }
}

async function settings(resolve: () => Promise<Resolved>, command: string): Promise<Resolved> {
  try {
    return await resolve();
  } catch (err) {
    throw err instanceof RwsgiError ? new SettingsError(err, command) : err;
  }
}

/** Set once the reason for exiting has been said (or needs no saying). */
let explained = false;

function exit(code: number): never {
  explained = true;
  process.exit(code);
}

async function main(argv: string[]): Promise<number> {
  const hint = argv.find((a) => Object.hasOwn(COMMANDS, a) || isControlCommand(a)) ?? null;
  let command;
  try {
    command = parseCommand(argv);
  } catch (err) {
    throw err instanceof RwsgiError ? new SettingsError(err, hint ?? '') : err;
  }
  switch (command.kind) {
    case 'help':
      if (command.command === null) process.stdout.write(`${USAGE}\n`);
      else process.stdout.write(`${settingsHelp(COMMANDS[command.command].usage, COMMANDS[command.command].doc)}\n`);
      return 0;
    case 'version':
      process.stdout.write(`rwsgi ${VERSION}\n`);
      return 0;
    case 'control':
      return runControl(command);
    case 'check':
      return runCheck(await settings(() => resolveSettings(command.inputs), 'check'));
    case 'serve': {
      const resolved = await settings(() => resolveSettings(command.inputs), 'serve');
      if (command.printConfig) {
        process.stdout.write(printConfig(resolved, command.json));
        return 0;
      }
      if (resolved.config.app === null) {
        throw new SettingsError(new RwsgiError('RWSGI_ERR_USAGE', 'missing MODULE[:EXPORT] to serve (after serve, or app in a config file)'), 'serve');
      }
      setLogLevel(resolved.config.logLevel);
      setLogFile(resolved.config.errorLogfile);
      reportFatalSignals('arbiter');
      exitOnUncaught('arbiter', () => exit(1));
      process.on('exit', (code) => {
        if (!explained) logger.critical(`Arbiter (pid:${process.pid}) exiting with status ${code} before shutting down`);
      });
      return new Arbiter(resolved, () => resolveSettings(command.inputs)).run();
    }
  }
}

main(process.argv.slice(2)).then(
  // Let piped stdout drain before exiting.
  (code) => process.stdout.write('', () => exit(code)),
  (err: unknown) => {
    if (err instanceof SettingsError) {
      process.stderr.write(`rwsgi: ${err.message}\nsee 'rwsgi ${err.command === '' ? '' : `${err.command} `}--help'\n`);
      exit(err.cause.exitCode);
    }
    if (err instanceof RwsgiError) {
      logger.error(`${err.message} [${err.code}]`);
      exit(err.exitCode);
    }
    logger.critical(describe(err));
    exit(1);
  },
);
