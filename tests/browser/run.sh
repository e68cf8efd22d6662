#!/usr/bin/env bash
# The browser end-to-end test: examples/web against the handler in headless Chromium.
# Installs what is missing (Debian's chromium, the pinned playwright-core), builds the handler if
# target/debug/handler is missing, runs the test, and ends with "browser: N passed, M failed".
# Exits non-zero when any step or attack behaves wrongly.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../.." && pwd)"

if [[ ! -x /usr/bin/chromium ]]; then
    echo "== installing chromium (Debian)"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null
fi

wanted="$(node -p "require('$here/package.json').devDependencies['playwright-core']")"
have="$(node -p "try { require('$here/node_modules/playwright-core/package.json').version } catch { '' }")"
if [[ "$have" != "$wanted" ]]; then
    echo "== npm ci (playwright-core $wanted)"
    (cd "$here" && npm ci --no-audit --no-fund --loglevel=error)
fi

export HANDLER="${HANDLER:-$root/target/debug/handler}"
if [[ ! -x "$HANDLER" ]]; then
    echo "== building the handler"
    (cd "$root" && nice -n 19 cargo build --locked --bin handler)
fi

echo "== browser test ($(/usr/bin/chromium --version 2>/dev/null | head -1), playwright-core $wanted)"
log="$(mktemp)"
trap 'rm -f "$log"' EXIT
status=0
(cd "$here" && node --test --test-concurrency=1 --test-reporter=spec browser.test.mjs) 2>&1 | tee "$log" || status=$?
passed="$(grep -Eo '^ℹ pass [0-9]+' "$log" | awk '{print $3}' | tail -1)"
failed="$(grep -Eo '^ℹ fail [0-9]+' "$log" | awk '{print $3}' | tail -1)"
passed="${passed:-0}"
cancelled="$(grep -Eo '^ℹ cancelled [0-9]+' "$log" | awk '{print $3}' | tail -1)"
failed=$(( ${failed:-0} + ${cancelled:-0} ))   # a test that timed out is "cancelled": it failed
echo "browser: ${passed} passed, ${failed} failed"
if [[ "$status" -ne 0 || "$failed" -ne 0 || "$passed" -eq 0 ]]; then
    exit 1
fi
