#!/usr/bin/env bash
# The peers bench/run.mjs measures rwsgi against, from the registries:
# wrk and nginx (Debian), gunicorn and matplotlib for the chart (PyPI), Bun (npm, into bench/peers/).
# uWebSockets.js (npm, into bench/peers/).
set -euo pipefail
cd "$(dirname "$0")"
export DEBIAN_FRONTEND=noninteractive
command -v wrk >/dev/null && command -v nginx >/dev/null || { apt-get update -q && apt-get install -y -q wrk nginx-light; }
# matplotlib draws the chart (bench/chart.py) next to the markdown and JSON.
python3 -m pip install --quiet gunicorn matplotlib
# uWebSockets.js: the official builds are on GitHub only; this registry copy of
# v20.30 carries the same binaries (v20.5x builds need glibc 2.38, newer than
# Debian 12 has).
# @hono/node-server: Hono on its own Node server, the peer of rwsgi-hono (it
# resolves hono from the project's devDependencies).
npm install --no-save --prefix peers bun@1 @trufflesuite/uws-js-unofficial@20.30.0-unofficial.0 @hono/node-server@1
