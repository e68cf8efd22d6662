"""schemathesis hooks for scripts/fuzz.sh: get the fuzzer past the door.

- Two auth providers log in through the API and renew the access token every 240 s (tokens live
  300 s); on a 401 schemathesis drops the cached token, calls `get` again and replays the request
  once. The admin's token goes to the admin operations and to revoke (so the `username` form is
  fuzzed past the role check); the ordinary user's token to the caller's own account operations
  (a fuzzed password change or session end then never touches the admin).
- Introspection gets the Basic credentials (`client_secret_basic`) of the client fuzz.sh added.
- Every FUZZ_VALID_EVERY-th call of an operation gets inputs that can succeed (real credentials,
  a fresh refresh token, an existing session id or user), so each operation answers 2xx at least
  once; the other calls stay as generated.
- Every answer's status is recorded per operation and written to FUZZ_STATUS_RECORD at exit;
  scripts/fuzz_check.py fails the run when an operation never answered 2xx.

The fuzz users cannot be taken away mid-run: their names carry a random suffix, so a generated
`PATCH /api/users/{username}` or revoke-by-username cannot name them, and only the victim user
(`alice`, the spec's example name) is targeted on purpose. Revoking the admin's own sessions
(`{"scope":"global"}`) is recovered by logging in again on the 401. Should the ordinary user's
login ever fail (lost password change, lock), `handler user password` and `user unlock` restore it.
"""

from __future__ import annotations

import atexit
import base64
import json
import os
import secrets
import subprocess
import threading
import time
from collections import defaultdict
from urllib.parse import quote_plus

import requests
import schemathesis

BASE = os.environ["FUZZ_BASE_URL"]
BIN = os.environ["FUZZ_HANDLER"]
ADMIN = os.environ["FUZZ_ADMIN"]
USER = os.environ["FUZZ_USER"]
VICTIM = os.environ["FUZZ_VICTIM"]
EVERY = int(os.environ.get("FUZZ_VALID_EVERY", "4"))
RECORD = os.environ["FUZZ_STATUS_RECORD"]
CLIENT_ID = os.environ["FUZZ_CLIENT_ID"]
CLIENT_SECRET = os.environ["FUZZ_CLIENT_SECRET"]

ADMIN_OPERATIONS = ["listUsers", "createUser", "changeUser", "revoke", "revokeViaPatch"]
USER_OPERATIONS = ["changePassword", "listSessions", "endSession", "listIdentities", "linkIdentity", "unlinkIdentity"]
# Access tokens live 300 s (the default); renew well before.
REFRESH_INTERVAL = 240

_lock = threading.RLock()
_passwords = {ADMIN: os.environ["FUZZ_ADMIN_PASSWORD"], USER: os.environ["FUZZ_USER_PASSWORD"]}
_calls: dict[str, int] = defaultdict(int)
_statuses: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
_pending_password: dict[int, str] = {}
_stats = {"logins": 0, "recoveries": 0}


def strong_password() -> str:
    return "fz-" + secrets.token_urlsafe(24)


def _post(path: str, body: dict, token: str | None = None, method: str = "POST") -> requests.Response:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    return requests.request(method, f"{BASE}{path}", json=body, headers=headers, timeout=30)


def _recover(username: str) -> None:
    """Restores the ordinary user's password and clears its locks through the CLI."""
    _stats["recoveries"] += 1
    with _lock:
        password = _passwords[username]
    subprocess.run([BIN, "user", "password", username, "--password-stdin"], input=f"{password}\n",
                   text=True, check=True, capture_output=True)
    subprocess.run([BIN, "user", "unlock", username], check=True, capture_output=True)


def login(username: str) -> dict:
    """A token pair for `username` (logs in through the API; waits out 429/503; recovers once)."""
    recovered = False
    for _ in range(8):
        with _lock:
            password = _passwords[username]
        r = _post("/api/token", {"username": username, "password": password})
        _stats["logins"] += 1
        if r.status_code == 200:
            return r.json()
        if r.status_code in (429, 503):
            time.sleep(min(float(r.headers.get("Retry-After", "1")), 5.0))
            continue
        if r.status_code == 400 and username == USER and not recovered:
            _recover(username)
            recovered = True
            continue
        raise RuntimeError(f"login of {username} failed: {r.status_code} {r.text}")
    raise RuntimeError(f"login of {username} kept failing")


def _sid(access_token: str) -> str:
    claims = access_token.split(".")[1]
    return json.loads(base64.urlsafe_b64decode(claims + "=" * (-len(claims) % 4)))["sid"]


class _Bearer:
    username = ""

    def get(self, case, context):
        return login(self.username)["access_token"]

    def set(self, case, data, context):
        case.headers = case.headers or {}
        case.headers["Authorization"] = f"Bearer {data}"


@schemathesis.auth(refresh_interval=REFRESH_INTERVAL).apply_to(operation_id=ADMIN_OPERATIONS)
class AdminAuth(_Bearer):
    username = ADMIN


@schemathesis.auth(refresh_interval=REFRESH_INTERVAL).apply_to(operation_id=USER_OPERATIONS)
class UserAuth(_Bearer):
    username = USER


@schemathesis.auth().apply_to(operation_id="introspect")
class ClientBasicAuth:
    """RFC 6749 §2.3.1: id and secret form-encoded, joined with ':', base64-encoded."""

    def get(self, case, context):
        joined = f"{quote_plus(CLIENT_ID)}:{quote_plus(CLIENT_SECRET)}"
        return base64.b64encode(joined.encode()).decode()

    def set(self, case, data, context):
        case.headers = case.headers or {}
        case.headers["Authorization"] = f"Basic {data}"


def _operation_id(case) -> str:
    return case.operation.definition.raw.get("operationId", case.operation.label)


def _structured(case) -> bool:
    media = (case.media_type or "").split(";")[0].strip()
    return media in ("application/json", "application/x-www-form-urlencoded")


def _valid_inputs(operation: str, case) -> None:
    """Replaces the generated inputs of `case` with ones that can succeed."""
    n = _calls[operation]
    # A generated DPoP header is never a valid proof (it is fuzzed on the other calls: 400
    # invalid_dpop_proof); the calls that can succeed go without one, as bearer clients do.
    if case.headers:
        case.headers = {k: v for k, v in case.headers.items() if k.lower() != "dpop"}
    if operation == "login" and _structured(case):
        if n % 2:
            case.body = {"grant_type": "refresh_token", "refresh_token": login(USER)["refresh_token"]}
        else:
            case.body = {"username": USER, "password": _passwords[USER]}
    elif operation in ("refresh", "refreshViaToken") and _structured(case):
        pair = login(USER)
        case.body = {"refresh_token": pair["refresh_token"]}
        if n % 2:
            case.body["access_token"] = pair["access_token"]
    elif operation == "introspect" and _structured(case):
        case.body = {"token": login(USER)["access_token"]}
        if n % 2:
            case.body["token_type_hint"] = "access_token"
    elif operation == "register" and _structured(case):
        case.body = {"username": f"fz{n}-{secrets.token_hex(4)}", "password": strong_password()}
    elif operation == "changePassword" and _structured(case):
        new = strong_password()
        case.body = {"current_password": _passwords[USER], "new_password": new}
        _pending_password[id(case)] = new
    elif operation == "endSession":
        # A spare session of the caller, so the caller's own session stays.
        case.path_parameters = {**(case.path_parameters or {}), "id": _sid(login(USER)["access_token"])}
    elif operation == "listIdentities":
        case.query = {}
    elif operation == "listUsers":
        case.query = {}
    elif operation == "createUser" and (case.media_type or "").startswith("application/json"):
        case.body = {"username": f"fz{n}-{secrets.token_hex(4)}", "password": strong_password(), "roles": []}
    elif operation == "changeUser" and (case.media_type or "").startswith("application/json"):
        case.path_parameters = {**(case.path_parameters or {}), "username": VICTIM}
        case.body = {"disabled": bool(n % 4 == 1), "unlock": True}


@schemathesis.hook
def before_call(context, case, kwargs):
    operation = _operation_id(case)
    with _lock:
        _calls[operation] += 1
        if _calls[operation] % EVERY == 0:
            _valid_inputs(operation, case)


@schemathesis.hook
def after_call(context, case, response):
    operation = _operation_id(case)
    with _lock:
        _statuses[operation][str(response.status_code)] += 1
        new = _pending_password.pop(id(case), None)
        if new is not None and response.status_code == 200:
            _passwords[USER] = new


@atexit.register
def _write_record() -> None:
    with open(RECORD, "w", encoding="utf-8") as f:
        json.dump({"statuses": _statuses, "helper": _stats}, f, indent=1, sort_keys=True)
