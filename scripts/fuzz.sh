#!/usr/bin/env bash
# Property-based fuzzing of the running handler against openapi.yaml with schemathesis (pinned in
# scripts/fuzz-requirements.txt, installed into .venv-fuzz). A fixed seed and a bounded number of
# examples per operation make the run repeatable and a few minutes long. It fails on any 5xx, any
# response that does not match openapi.yaml (status, content type, headers, body schema), or a
# crash of the handler.
#
# Usage: scripts/fuzz.sh [path/to/handler]     (default: target/debug/handler, built if missing)
set -euo pipefail
cd "$(dirname "$0")/.."

BIN=${1:-target/debug/handler}
VENV=${VENV_FUZZ:-.venv-fuzz}
EXAMPLES=${FUZZ_EXAMPLES:-200}
SEED=${FUZZ_SEED:-20261201}

if [[ ! -x "$BIN" ]]; then
    cargo build --locked --bin handler
fi
if [[ ! -x "$VENV/bin/schemathesis" ]]; then
    python3 -m venv "$VENV"
fi
"$VENV/bin/python" -m pip install --quiet --disable-pip-version-check -r scripts/fuzz-requirements.txt

store=$(mktemp -d)
log=$(mktemp)
port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
export FUNCTIONS_CUSTOMHANDLER_PORT=$port JwtRefreshToken__Embedded__Path=$store RUST_LOG=warn
export JwtRefreshToken__Descriptor__Issuer=https://issuer.fuzz JwtRefreshToken__Descriptor__Audience=api://fuzz
# Sign-up open and a long-lived access token, so the Bearer routes are fuzzed as an admin too.
export JwtRefreshToken__Registration__Mode=open JwtRefreshToken__Expires__CreateExpiresInMs=3600000
export JwtRefreshToken__Registration__MaxPerAddress=100000
JwtRefreshToken__Descriptor__AlgorithmKey=$("$BIN" keys generate --algorithm HS256)
export JwtRefreshToken__Descriptor__AlgorithmKey
printf 'fuzz-password-0123\n' | "$BIN" user add alice --role admin --create --password-stdin >/dev/null
"$BIN" >"$log" 2>&1 &
pid=$!
# shellcheck disable=SC2317 # called by the EXIT trap below
cleanup() {
    kill "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
    rm -rf "$store" "$log"
}
trap cleanup EXIT
for _ in $(seq 100); do
    curl -fsS "http://127.0.0.1:$port/" >/dev/null 2>&1 && break
    sleep 0.05
done

token=$(curl -fsS -H 'Content-Type: application/json' -d '{"username":"alice","password":"fuzz-password-0123"}' \
    "http://127.0.0.1:$port/api/token" | python3 -c 'import json, sys; print(json.load(sys.stdin)["access_token"])')

status=0
"$VENV/bin/schemathesis" run openapi.yaml \
    --url "http://127.0.0.1:$port" \
    -H "Authorization: Bearer $token" \
    --checks not_a_server_error,status_code_conformance,content_type_conformance,response_headers_conformance,response_schema_conformance \
    --max-examples "$EXAMPLES" --seed "$SEED" \
    --no-color || status=$?
if ! kill -0 "$pid" 2>/dev/null; then
    echo "fuzz: the handler died during the run" >&2
    cat "$log" >&2
    status=1
fi
if grep -q '"level":"ERROR"' "$log"; then
    echo "fuzz: the handler logged errors:" >&2
    grep '"level":"ERROR"' "$log" >&2
    status=1
fi
if [[ $status -eq 0 ]]; then echo "fuzz: 1 passed, 0 failed"; else echo "fuzz: 0 passed, 1 failed"; fi
exit $status
