// How a dying process says why, in its error log: fatal signals are
// reported by the addon (crates/core/src/fatal.rs) with a native
// backtrace; an exception nothing caught is logged with its stack before
// the process exits.

import { describe, logger, onLogFd } from './log.js';
import { native } from './native.js';

export type Role = 'arbiter' | 'worker';

/** Fatal signals write their CRITICAL line to the current error log. */
export function reportFatalSignals(role: Role): void {
  const addon = native();
  onLogFd((fd) => addon.reportFatalSignals(role, fd));
}

/** An uncaught exception, or a promise rejection no listener handles (Node
 * turns those into uncaught exceptions), is logged with its stack; then
 * `exit()` ends the process. */
export function exitOnUncaught(role: Role, exit: () => void): void {
  process.on('uncaughtException', (err, origin) => {
    const what = origin === 'unhandledRejection' ? 'Unhandled promise rejection' : 'Uncaught exception';
    logger.critical(`${what} in the ${role} (pid:${process.pid}), exiting:\n${describe(err)}`);
    exit();
  });
}
