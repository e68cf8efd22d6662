#!/usr/bin/env bash
# Interoperability with OAuth clients no one here wrote, pinned: openid-client and oauth4webapi
# (npm, package-lock.json) and Authlib (PyPI, requirements.txt) against the handler binary $1.
set -euo pipefail
bin=$(realpath "${1:?usage: tests/interop/run.sh <handler binary>}")
cd "$(dirname "$0")"
npm ci --no-audit --no-fund --loglevel=error
HANDLER_BIN="$bin" node --test clients.test.mjs
venv=../../.venv-interop
[[ -x "$venv/bin/python" ]] || python3 -m venv "$venv"
"$venv/bin/pip" install --quiet --disable-pip-version-check -r requirements.txt
"$venv/bin/python" authlib_test.py "$bin"
