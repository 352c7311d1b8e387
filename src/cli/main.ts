#!/usr/bin/env node
// `rwsgi` entry point: parse the command line, run the arbiter, map errors
// to gunicorn's exit codes.

import { Arbiter } from '../arbiter/arbiter.js';
import { RwsgiError } from '../errors.js';
import { describe, logger, setLogFile, setLogLevel } from '../log.js';
import { VERSION } from '../version.js';
import { parseCommand, USAGE } from './args.js';

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
      return new Arbiter(command.config).run();
  }
}

main(process.argv.slice(2)).then(
  // Let piped stdout drain before exiting.
  (code) => process.stdout.write('', () => process.exit(code)),
  (err: unknown) => {
    if (err instanceof RwsgiError) {
      if (err.code === 'RWSGI_ERR_USAGE') process.stderr.write(`rwsgi: ${err.message}\n`);
      else logger.error(`${err.message} [${err.code}]`);
      process.exit(err.exitCode);
    }
    logger.critical(describe(err));
    process.exit(1);
  },
);
