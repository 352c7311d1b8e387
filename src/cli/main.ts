#!/usr/bin/env node
// `rwsgi` entry point: parse the command line, run the arbiter, map errors
// to gunicorn's exit codes. The arbiter never exits without a last log
// line saying why.

import { Arbiter } from '../arbiter/arbiter.js';
import { RwsgiError } from '../errors.js';
import { exitOnUncaught, reportFatalSignals } from '../last-words.js';
import { describe, logger, setLogFile, setLogLevel } from '../log.js';
import { VERSION } from '../version.js';
import { parseCommand, USAGE } from './args.js';

/** Set once the reason for exiting has been said (or needs no saying). */
let explained = false;

function exit(code: number): never {
  explained = true;
  process.exit(code);
}

async function main(argv: string[]): Promise<number> {
  const command = parseCommand(argv);
  switch (command.kind) {
    case 'help':
      process.stdout.write(`${USAGE}\n`);
      return 0;
    case 'version':
      process.stdout.write(`rwsgi ${VERSION}\n`);
      return 0;
    case 'serve':
      setLogLevel(command.config.logLevel);
      setLogFile(command.config.errorLogfile);
      reportFatalSignals('arbiter');
      exitOnUncaught('arbiter', () => exit(1));
      process.on('exit', (code) => {
        if (!explained) logger.critical(`Arbiter (pid:${process.pid}) exiting with status ${code} before shutting down`);
      });
      return new Arbiter(command.config).run();
  }
}

main(process.argv.slice(2)).then(
  // Let piped stdout drain before exiting.
  (code) => process.stdout.write('', () => exit(code)),
  (err: unknown) => {
    if (err instanceof RwsgiError) {
      if (err.code === 'RWSGI_ERR_USAGE') process.stderr.write(`rwsgi: ${err.message}\n`);
      else logger.error(`${err.message} [${err.code}]`);
      exit(err.exitCode);
    }
    logger.critical(describe(err));
    exit(1);
  },
);
