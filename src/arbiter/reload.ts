// --reload: watches the app's directory (and the --reload-extra-file files
// and globs) and says, once edits have settled, that the code changed; the
// arbiter then replaces its workers as on HUP. Each directory is watched on
// its own rather than with `fs.watch(root, { recursive: true })`: on Linux
// Node's recursive watch adds an inotify watch for every directory below,
// node_modules included (thousands, against the per-user inotify limit),
// where this walk never enters node_modules or a dot-directory.

import { existsSync, type FSWatcher, readdirSync, statSync, watch } from 'node:fs';
import { basename, dirname, join, resolve, sep } from 'node:path';
import { splitAppSpec } from '../apps/load.js';
import { logger } from '../log.js';

/** Edits within this many ms of each other are one change (an editor's save
 * is often several writes and renames). */
export const RELOAD_DEBOUNCE_MS = 300;

const GLOB_CHARS = /[*?[]/;

/** Entries never watched under a watched tree: dependencies, and dot-names
 * (.git, editors' swap and lock files). */
const ignored = (name: string): boolean => name === 'node_modules' || name.startsWith('.');

/** `*` any name part, `**` any depth, `?` one character; absolute patterns. */
export function globToRegExp(pattern: string): RegExp {
  let re = '';
  for (let i = 0; i < pattern.length; i++) {
    const c = pattern[i] as string;
    if (c === '*' && pattern[i + 1] === '*') {
      const slash = pattern[i + 2] === '/';
      re += slash ? '(?:.*/)?' : '.*';
      i += slash ? 2 : 1;
    } else if (c === '*') re += '[^/]*';
    else if (c === '?') re += '[^/]';
    else re += c.replace(/[.+^${}()|[\]\\]/g, '\\$&');
  }
  return new RegExp(`^${re}$`);
}

/** What to watch for one pattern: the deepest directory without glob
 * characters, whether below it too, and which paths count. */
function target(pattern: string): { dir: string; deep: boolean; matches: (file: string) => boolean } {
  if (!GLOB_CHARS.test(pattern)) return { dir: dirname(pattern), deep: false, matches: (f) => f === pattern };
  const parts = pattern.split(sep);
  const first = parts.findIndex((p) => GLOB_CHARS.test(p));
  const dir = parts.slice(0, first).join(sep) || sep;
  const re = globToRegExp(pattern);
  return { dir, deep: parts.length - first > 1 || pattern.includes('**'), matches: (f) => re.test(f) };
}

/** The directory of the app's file; the working directory for an app
 * named as a package. */
export function appDirectory(spec: string, cwd = process.cwd()): string {
  const file = resolve(cwd, splitAppSpec(spec).module);
  return existsSync(file) ? dirname(file) : cwd;
}

export class Reloader {
  /** One watcher per directory, with the tests a changed path there must pass. */
  private readonly watched = new Map<string, { watcher: FSWatcher; tests: ((file: string) => boolean)[]; deep: boolean }>();
  private readonly changed = new Set<string>();
  private timer: NodeJS.Timeout | null = null;
  private warned = false;

  /** `onChange` gets the paths changed since the last call. */
  constructor(
    private readonly root: string,
    private readonly extra: readonly string[],
    private readonly onChange: (files: string[]) => void,
    private readonly debounceMs = RELOAD_DEBOUNCE_MS,
  ) {}

  start(): void {
    this.watchTree(this.root, () => true);
    for (const pattern of this.extra) {
      const { dir, deep, matches } = target(pattern);
      if (deep) this.watchTree(dir, matches);
      else this.watchDir(dir, matches);
    }
    const extra = this.extra.length > 0 ? ` and ${this.extra.join(', ')}` : '';
    logger.info(`Reload is on: watching ${this.root}${extra} (${this.watched.size} directories)`);
  }

  close(): void {
    if (this.timer) clearTimeout(this.timer);
    this.timer = null;
    for (const { watcher } of this.watched.values()) watcher.close();
    this.watched.clear();
  }

  private watchTree(dir: string, test: (file: string) => boolean): void {
    if (!this.watchDir(dir, test, true)) return;
    let entries;
    try {
      entries = readdirSync(dir, { withFileTypes: true });
    } catch {
      return; // Gone or unreadable meanwhile.
    }
    for (const e of entries) if (e.isDirectory() && !ignored(e.name)) this.watchTree(join(dir, e.name), test);
  }

  /** False if `dir` cannot be watched (missing, or out of inotify watches).
   * `deep`: directories made in it later are watched too. */
  private watchDir(dir: string, test: (file: string) => boolean, deep = false): boolean {
    const known = this.watched.get(dir);
    if (known) {
      known.tests.push(test);
      known.deep ||= deep;
      return true;
    }
    let watcher: FSWatcher;
    try {
      watcher = watch(dir, (_event, name) => this.onEvent(dir, name === null ? null : String(name)));
    } catch (err) {
      this.warn(`cannot watch ${dir}: ${(err as Error).message}`);
      return false;
    }
    // A removed directory ends its watcher; its parent sees the removal.
    watcher.on('error', () => {
      watcher.close();
      this.watched.delete(dir);
    });
    this.watched.set(dir, { watcher, tests: [test], deep });
    return true;
  }

  private onEvent(dir: string, name: string | null): void {
    const entry = this.watched.get(dir);
    if (!entry || (name !== null && ignored(basename(name)))) return;
    const file = name === null ? dir : join(dir, name);
    if (entry.deep && name !== null && !this.watched.has(file)) {
      try {
        if (statSync(file).isDirectory()) for (const t of [...entry.tests]) this.watchTree(file, t);
      } catch {
        // Removed again, or a file removed.
      }
    }
    if (!entry.tests.some((t) => t(file))) return;
    this.changed.add(file);
    if (this.timer) clearTimeout(this.timer);
    this.timer = setTimeout(() => {
      this.timer = null;
      const files = [...this.changed];
      this.changed.clear();
      this.onChange(files);
    }, this.debounceMs);
  }

  private warn(message: string): void {
    if (this.warned) return;
    this.warned = true;
    logger.warning(`Reload: ${message}; edits there are not seen`);
  }
}
