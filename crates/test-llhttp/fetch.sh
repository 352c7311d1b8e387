#!/usr/bin/env bash
# rwsgi-core's tests and fuzz target are not Node, so they need llhttp
# compiled in: this fetches llhttp's generated C from a registry package (the
# PyPI sdist of the llhttp binding, which bundles llhttp 9.3's lib/*.c) into
# target/, never into git. build.rs runs it when the sources are missing.
set -euo pipefail
dest="${1:-$(cd "$(dirname "$0")/../.." && pwd)/target/llhttp-src}"
[ -f "$dest/lib/llhttp.c" ] && exit 0
tmp=$(mktemp -d)
python3 -m pip download --quiet --no-deps --no-binary :all: llhttp==9.3.0.0 -d "$tmp"
mkdir -p "$dest"
tar xzf "$tmp"/llhttp-9.3.0.0.tar.gz -C "$dest" --strip-components=1
rm -rf "$tmp"
