#!/bin/sh
# Installs the Python packages the tests need (test/requirements.txt) for
# the user, unless they are there already; run by `npm test` (pretest).
cd "$(dirname "$0")"
python3 -c 'import prometheus_client, yaml' 2>/dev/null && exit 0
python3 -m pip install --quiet --user -r requirements.txt 2>/dev/null ||
  python3 -m pip install --quiet --user --break-system-packages -r requirements.txt
