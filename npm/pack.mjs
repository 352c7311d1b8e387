#!/usr/bin/env node
// Packs a release the napi-rs way, into OUT_DIR: the package of this
// machine's platform (npm/<platform> with the binary `npm run build` made)
// and the main package. The main package's optionalDependencies, one per
// platform package at the same version, are written here, at packing (as
// `napi prepublish` does), so a checkout's own `npm ci` never looks for
// packages that are not published. Prints the tarballs' paths.
//
//   node npm/pack.mjs OUT_DIR

import { execFileSync } from 'node:child_process';
import { cpSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { platformName } from '../dist/native.js';

const ROOT = fileURLToPath(new URL('..', import.meta.url));
const NPM_DIR = join(ROOT, 'npm');
const out = resolve(process.argv[2] ?? '.');
const readJson = (file) => JSON.parse(readFileSync(file, 'utf8'));
const main = readJson(join(ROOT, 'package.json'));

/** `npm pack`s `dir` into `out`; returns the tarball's path. */
function pack(dir) {
  const name = execFileSync('npm', ['pack', '--ignore-scripts', '--silent', '--pack-destination', out], { cwd: dir, encoding: 'utf8' });
  return join(out, name.trim().split('\n').at(-1));
}

function staged(fill) {
  const dir = mkdtempSync(join(tmpdir(), 'rwsgi-pack-'));
  try {
    fill(dir);
    return pack(dir);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

const platforms = readdirSync(NPM_DIR, { withFileTypes: true }).filter((e) => e.isDirectory()).map((e) => e.name);
const platform = platformName();
if (!platforms.includes(platform)) throw new Error(`no npm/${platform} package: this platform is not a napi target`);

const binary = `rwsgi.${platform}.node`;
const platformTarball = staged((dir) => {
  cpSync(join(NPM_DIR, platform), dir, { recursive: true });
  cpSync(join(ROOT, 'dist', binary), join(dir, binary));
});

const mainTarball = staged((dir) => {
  // What only a checkout uses stays behind.
  const manifest = { ...main };
  for (const key of ['devDependencies', 'scripts', 'ava', 'napi']) delete manifest[key];
  manifest.optionalDependencies = Object.fromEntries(
    platforms.map((p) => {
      const { name, version } = readJson(join(NPM_DIR, p, 'package.json'));
      if (version !== main.version) throw new Error(`npm/${p} is at ${version}, rwsgi at ${main.version}`);
      return [name, version];
    }),
  );
  writeFileSync(join(dir, 'package.json'), `${JSON.stringify(manifest, null, 2)}\n`);
  cpSync(join(ROOT, 'README.md'), join(dir, 'README.md'));
  cpSync(join(ROOT, 'dist'), join(dir, 'dist'), { recursive: true, filter: (src) => !src.endsWith('.node') });
});

process.stdout.write(`${mainTarball}\n${platformTarball}\n`);
