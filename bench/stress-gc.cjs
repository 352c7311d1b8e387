// Preloaded into every process of bench/stress.mjs's servers (arbiters and
// workers, through NODE_OPTIONS="--expose-gc --require=..."): V8 compacts
// (moves objects) on every full GC, and a GC is forced every STRESS_GC_MS,
// under load and while idle, so native code holding a pointer into the
// JavaScript heap across calls meets a moved or freed object quickly.
// `--gc-interval` would be the finer tool, but this Node's release V8 is
// built without allocation timeouts and ignores it; `--stress-compaction`
// and `gc()` work, from NODE_OPTIONS or `v8.setFlagsFromString`.
'use strict';

const v8 = require('node:v8');

v8.setFlagsFromString('--stress-compaction');
const every = Number(process.env.STRESS_GC_MS ?? 200);
let forced = 0;
if (typeof globalThis.gc === 'function' && every > 0) {
  const gc = globalThis.gc;
  // Three minor GCs (they move the young generation) to one full, compacting one.
  setInterval(() => gc(++forced % 4 === 0 ? undefined : { type: 'minor' }), every).unref();
}
process.on('exit', () => {
  process.stderr.write(`[stress-gc] pid ${process.pid}: ${forced} forced GCs\n`);
});
