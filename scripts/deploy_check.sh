#!/usr/bin/env bash
# Offline checks of the deploy scripts, in one command (about a minute; no Azure, no network
# unless shellcheck has to be installed):
#   1. shellcheck over scripts/*.sh and infra/*.sh (installed from apt when missing)
#   2. scripts/test_deploy.py: deploy.sh and teardown.sh against a fake az/curl/handler
# Prints `deploy-check: N passed, M failed` and exits non-zero on any failure.
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v shellcheck >/dev/null 2>&1; then
    echo "== installing shellcheck (apt)"
    as_root() { if [[ $(id -u) -eq 0 ]]; then "$@"; else sudo "$@"; fi; }
    # apt-get update only when the package lists do not know shellcheck yet.
    if ! as_root apt-get install -y -qq shellcheck >/dev/null 2>&1; then
        as_root apt-get update -qq
        as_root apt-get install -y -qq shellcheck >/dev/null
    fi
fi

passed=0
failed=0

echo "== shellcheck $(shellcheck --version | sed -n 's/^version: //p')"
for script in scripts/*.sh infra/*.sh; do
    if shellcheck "$script"; then
        passed=$((passed + 1))
    else
        echo "shellcheck: $script has findings (above)"
        failed=$((failed + 1))
    fi
done

echo "== scripts/test_deploy.py (fake az, curl and handler on PATH)"
log=$(mktemp)
trap 'rm -f "$log"' EXIT
status=0
python3 scripts/test_deploy.py 2>&1 | tee "$log" || status=$?
summary=$(grep -E '^deploy-test: [0-9]+ passed, [0-9]+ failed$' "$log" | tail -1 || true)
if [[ -z "$summary" ]]; then
    echo "deploy-check: scripts/test_deploy.py printed no summary (exit $status)"
    failed=$((failed + 1))
else
    read -r t_passed t_failed < <(sed -E 's/^deploy-test: ([0-9]+) passed, ([0-9]+) failed$/\1 \2/' <<<"$summary")
    passed=$((passed + t_passed))
    failed=$((failed + t_failed))
    if [[ $status -ne 0 && $t_failed -eq 0 ]]; then
        failed=$((failed + 1))
    fi
fi

echo "deploy-check: ${passed} passed, ${failed} failed"
[[ $failed -eq 0 ]]
