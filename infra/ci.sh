#!/usr/bin/env bash
# Every offline check of infra/, in one command (a few minutes on the 2-core machine):
#   1. syntax gate: tree-sitter Bicep grammar over every .bicep; .bicepparam params vs main.bicep
#   2. checkov's Bicep rules: no parsing error, no failed check, every skip with a written reason
#   3. check.py: the project's own facts (settings table, identity, roles, order, network, ...)
#   4. broken-template tests: each gate fails when its fact is broken in a copy
# Tools are pinned in infra/requirements.txt and installed into .venv (created if missing).
set -euo pipefail
cd "$(dirname "$0")/.."

VENV=${VENV:-.venv}
if [[ ! -x "$VENV/bin/python" ]]; then
    python3 -m venv "$VENV"
fi
"$VENV/bin/python" -m pip install --quiet --disable-pip-version-check -r infra/requirements.txt
PY="$VENV/bin/python"

status=0
step() {
    echo "== $1"
    shift
    "$@" || status=1
}
step "infra syntax gate (tree-sitter-bicep; .bicepparam against main.bicep)" "$PY" infra/syntax_gate.py
step "infra checkov (--framework bicep --skip-download)" "$PY" infra/checkov_gate.py
step "infra facts check" "$PY" infra/check.py
step "infra broken-template tests" "$PY" infra/test_check.py
exit $status
