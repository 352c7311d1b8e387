// Log lines in gunicorn's shape: `[2026-11-25 14:00:00 +0000] [pid] [LEVEL] msg`,
// on stderr (or --error-logfile), shared by the arbiter and the workers.

import { closeSync, openSync, writeSync } from 'node:fs';

export const LEVELS = ['debug', 'info', 'warning', 'error', 'critical'] as const;
export type Level = (typeof LEVELS)[number];

const rank: Record<Level, number> = { debug: 10, info: 20, warning: 30, error: 40, critical: 50 };

let threshold: Level = 'info';

export function setLogLevel(level: Level): void {
  threshold = level;
}

/** Whether lines of `level` are written at the current threshold. */
export function enabled(level: Level): boolean {
  return rank[level] >= rank[threshold];
}

function pad(n: number): string {
  return n < 10 ? `0${n}` : String(n);
}

export function timestamp(date = new Date()): string {
  const offset = -date.getTimezoneOffset();
  const sign = offset >= 0 ? '+' : '-';
  const abs = Math.abs(offset);
  return (
    `${date.getFullYear()}-${pad(date.getMonth() + 1)}-${pad(date.getDate())} ` +
    `${pad(date.getHours())}:${pad(date.getMinutes())}:${pad(date.getSeconds())} ` +
    `${sign}${pad(Math.floor(abs / 60))}${pad(abs % 60)}`
  );
}

let logFile: { path: string; fd: number } | null = null;
const fdListeners: ((fd: number) => void)[] = [];

// A log reader that goes away (the pipe closed: EPIPE) must not take the
// server with it: with no listener the write error would end the process,
// silently, since the error cannot be printed either. The lines are lost;
// the requests are still served.
process.stderr.on('error', () => {});

/** Sends log lines to `path` (appending) instead of stderr. */
export function setLogFile(path: string | null): void {
  if (logFile) closeSync(logFile.fd);
  logFile = path === null ? null : { path, fd: openSync(path, 'a') };
  for (const listener of fdListeners) listener(logFd());
}

/** The descriptor log lines go to. */
function logFd(): number {
  return logFile?.fd ?? 2;
}

/** Calls `listener` with the log's descriptor now and whenever it changes. */
export function onLogFd(listener: (fd: number) => void): void {
  fdListeners.push(listener);
  listener(logFd());
}

/** USR1: reopen the log file, so a rotated file is let go of. */
export function reopenLogFile(): void {
  if (logFile) setLogFile(logFile.path);
}

export function log(level: Level, message: string): void {
  if (rank[level] < rank[threshold]) return;
  const line = `[${timestamp()}] [${process.pid}] [${level.toUpperCase()}] ${message}\n`;
  if (logFile) writeSync(logFile.fd, line);
  else process.stderr.write(line);
}

export const logger = {
  debug: (m: string) => log('debug', m),
  info: (m: string) => log('info', m),
  warning: (m: string) => log('warning', m),
  error: (m: string) => log('error', m),
  critical: (m: string) => log('critical', m),
};

/** The stack of an error, or its string form for non-errors. */
export function describe(err: unknown): string {
  if (err instanceof Error) return err.stack ?? `${err.name}: ${err.message}`;
  return String(err);
}
