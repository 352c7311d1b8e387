#!/usr/bin/env bash
# The peers bench/run.mjs measures rwsgi against, from the registries:
# wrk and nginx (Debian), gunicorn (PyPI), Bun (npm, into bench/peers/).
# uWebSockets.js is not on the npm registry (GitHub only), so it is skipped.
set -euo pipefail
cd "$(dirname "$0")"
export DEBIAN_FRONTEND=noninteractive
command -v wrk >/dev/null && command -v nginx >/dev/null || { apt-get update -q && apt-get install -y -q wrk nginx-light; }
python3 -m pip install --quiet gunicorn
npm install --no-save --prefix peers bun@1
