#!/usr/bin/env bash
# Property-based fuzzing of the running handler against openapi.yaml with schemathesis (pinned in
# scripts/fuzz-requirements.txt, installed into .venv-fuzz). A fixed seed and a bounded number of
# examples per operation make the run repeatable and a few minutes long. It fails on any 5xx, any
# response that does not match openapi.yaml (status, content type, headers, body schema), or a
# crash of the handler. It also fails when an operation answered only 401/403 (schemathesis'
# missing_auth warning, scripts/fuzz.toml) or never answered 2xx (scripts/fuzz_check.py; an
# operation whose 2xx needs what the fuzzer cannot make says why with `x-fuzz-no-2xx`): the hooks
# in scripts/fuzz_hooks.py log in as an admin, an ordinary user and a user of its own for the
# second-factor and passkey routes, renew their tokens, and authenticate introspection as a
# client added with `handler clients add`.
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
# Sign-up open (and not throttled), so register is fuzzed past its throttle and the hooks can sign
# up throwaway users to confirm and remove authenticators on. Access tokens keep
# their default 300 s lifetime: the auth hooks renew them. Login locks last 1 s and need 1000
# failures: failed password changes of the fuzz user count as failed logins and must not lock it
# out for the rest of the run (lockout itself is covered by tests/api/lockout.rs).
export JwtRefreshToken__Registration__Mode=open JwtRefreshToken__Registration__MaxPerAddress=100000
export JwtRefreshToken__Registration__MaxPerMinute=100000
export JwtRefreshToken__Login__MaxFailures=1000 JwtRefreshToken__Login__MaxFailuresPerUsername=100000
export JwtRefreshToken__Login__LockoutMs=1000
# Introspection is fuzzed past its per-client limit (the limit is covered by tests/api/introspection.rs).
export JwtRefreshToken__Introspection__MaxPerMinute=1000000
# Passkeys on (a relying party for a local web app), so their ceremonies can start: 200.
export JwtRefreshToken__Passkeys__RpId=localhost JwtRefreshToken__Passkeys__Origins=http://localhost:8080
# E-mail to the outbox (one .eml per mail), budgets past what the run sends, so the hooks can read
# the codes of throwaway users and verify addresses and reset passwords with them: 200.
export JwtRefreshToken__Email__Transport=outbox JwtRefreshToken__Email__From=no-reply@fuzz.test
export JwtRefreshToken__Email__OutboxPath=$store/outbox FUZZ_OUTBOX=$store/outbox
export JwtRefreshToken__Email__CodesPerHour=100 JwtRefreshToken__Email__MailsPerAddressPerHour=1000
JwtRefreshToken__Descriptor__AlgorithmKey=$("$BIN" keys generate --algorithm HS256)
export JwtRefreshToken__Descriptor__AlgorithmKey

# The fuzz users (see scripts/fuzz_hooks.py): an admin, an ordinary user and the user of the
# second-factor and passkey routes (kept apart: an authenticator or passkey of its own would turn
# its password logins into mfa_required), with long random passwords and names nothing generated
# can hit, and `alice` (the spec's example username) as the user the admin operations may change.
suffix=$(python3 -c 'import secrets; print(secrets.token_hex(6))')
new_password() { python3 -c 'import secrets; print("fz-" + secrets.token_urlsafe(24))'; }
export FUZZ_ADMIN="fuzz-admin-$suffix" FUZZ_USER="fuzz-user-$suffix" FUZZ_MFA_USER="fuzz-mfa-$suffix" FUZZ_VICTIM=alice
FUZZ_ADMIN_PASSWORD=$(new_password) FUZZ_USER_PASSWORD=$(new_password) FUZZ_MFA_USER_PASSWORD=$(new_password)
export FUZZ_ADMIN_PASSWORD FUZZ_USER_PASSWORD FUZZ_MFA_USER_PASSWORD
printf '%s\n' "$FUZZ_ADMIN_PASSWORD" | "$BIN" user add "$FUZZ_ADMIN" --role admin --create --password-stdin >/dev/null
printf '%s\n' "$FUZZ_USER_PASSWORD" | "$BIN" user add "$FUZZ_USER" --password-stdin >/dev/null
printf '%s\n' "$FUZZ_MFA_USER_PASSWORD" | "$BIN" user add "$FUZZ_MFA_USER" --password-stdin >/dev/null
new_password | "$BIN" user add "$FUZZ_VICTIM" --password-stdin >/dev/null
# The introspection client (client_secret_basic): the hooks send its credentials to introspect.
client=$("$BIN" clients add "fuzz-rs-$suffix")
FUZZ_CLIENT_ID=$(sed -n 's/^client_id=\([^ ]*\) .*/\1/p' <<<"$client")
FUZZ_CLIENT_SECRET=$(sed -n 's/.* client_secret=\(.*\)$/\1/p' <<<"$client")
export FUZZ_CLIENT_ID FUZZ_CLIENT_SECRET

"$BIN" >"$log" 2>&1 &
pid=$!
record=$(mktemp)
# shellcheck disable=SC2317 # called by the EXIT trap below
cleanup() {
    kill "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
    rm -rf "$store" "$log" "$record"
}
trap cleanup EXIT
for _ in $(seq 100); do
    curl -fsS "http://127.0.0.1:$port/" >/dev/null 2>&1 && break
    sleep 0.05
done

export FUZZ_BASE_URL="http://127.0.0.1:$port" FUZZ_HANDLER=$BIN FUZZ_STATUS_RECORD=$record
status=0
PYTHONPATH=scripts SCHEMATHESIS_HOOKS=fuzz_hooks "$VENV/bin/schemathesis" --config-file scripts/fuzz.toml run openapi.yaml \
    --url "$FUZZ_BASE_URL" \
    --checks not_a_server_error,status_code_conformance,content_type_conformance,response_headers_conformance,response_schema_conformance \
    --max-examples "$EXAMPLES" --seed "$SEED" \
    --no-color || status=$?
# Every operation answered 2xx at least once (the fuzzer got past authentication everywhere).
"$VENV/bin/python" scripts/fuzz_check.py openapi.yaml "$record" || status=1
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
