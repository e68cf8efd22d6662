"""schemathesis hooks for scripts/fuzz.sh: get the fuzzer past the door.

- Three auth providers log in through the API and renew the access token every 240 s (tokens
  live 300 s); on a 401 schemathesis drops the cached token, calls `get` again and replays the
  request once. The admin's token goes to the admin operations and to revoke (so the `username`
  form is fuzzed past the role check); the ordinary user's token to the caller's own account
  operations (a fuzzed password change or session end then never touches the admin); a dedicated
  user's token to the second-factor and passkey operations (`/api/mfa…`, `/api/passkeys…`): a
  confirmed authenticator or a passkey would turn that user's password logins into
  `mfa_required`, so the ordinary user never gets one.
- Introspection gets the Basic credentials (`client_secret_basic`) of the client fuzz.sh added.
- Every FUZZ_VALID_EVERY-th call of an operation gets inputs that can succeed (real credentials,
  a fresh refresh token, an existing session id or user), so each operation answers 2xx at least
  once; the other calls stay as generated. Confirming and removing an authenticator each sign up
  a throwaway user per valid call (sign-up is open in fuzz.sh) and compute its current RFC 6238
  code here, so the dedicated user's state never matters. Passkey ceremonies get a fresh sealed
  ceremony and a well-formed (but unsigned) credential: they are refused deeper inside, since a
  2xx needs a real authenticator (openapi.yaml says why with `x-fuzz-no-2xx`).
- Every answer's status is recorded per operation and written to FUZZ_STATUS_RECORD at exit;
  scripts/fuzz_check.py fails the run when an operation never answered 2xx. Answers to another
  method than the operation's (schemathesis' unsupported-method probes, an OPTIONS preflight's
  204) are recorded as `METHOD status` and do not count as the operation's 2xx.

The fuzz users cannot be taken away mid-run: their names carry a random suffix, so a generated
`PATCH /api/users/{username}` or revoke-by-username cannot name them, and only the victim user
(`alice`, the spec's example name) is targeted on purpose. Revoking the admin's own sessions
(`{"scope":"global"}`) is recovered by logging in again on the 401. Should the ordinary or the
dedicated user's login ever fail (lost password change, lock), `handler user password` and
`user unlock` restore it; should the dedicated user's login answer `mfa_required` (a generated code
that happened to confirm its pending authenticator), `handler user reset-mfa` does.
"""

from __future__ import annotations

import atexit
import base64
import hashlib
import hmac
import json
import os
import secrets
import struct
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
MFA_USER = os.environ["FUZZ_MFA_USER"]
VICTIM = os.environ["FUZZ_VICTIM"]
EVERY = int(os.environ.get("FUZZ_VALID_EVERY", "4"))
RECORD = os.environ["FUZZ_STATUS_RECORD"]
CLIENT_ID = os.environ["FUZZ_CLIENT_ID"]
CLIENT_SECRET = os.environ["FUZZ_CLIENT_SECRET"]

ADMIN_OPERATIONS = ["listUsers", "createUser", "changeUser", "revoke", "revokeViaPatch"]
USER_OPERATIONS = [
    "changePassword", "listSessions", "endSession", "listIdentities", "linkIdentity", "unlinkIdentity",
    "getEmail", "setEmail", "verifyEmail",
]
OUTBOX = os.environ["FUZZ_OUTBOX"]
# The caller's second factors and passkeys: the dedicated user (the passkey sign-in ceremony takes
# no credentials).
MFA_OPERATIONS = [
    "factorState", "enrolTotp", "removeTotp", "confirmTotp",
    "listPasskeys", "removePasskey", "startPasskeyRegistration", "finishPasskeyRegistration",
]
# Access tokens live 300 s (the default); renew well before.
REFRESH_INTERVAL = 240

_lock = threading.RLock()
_passwords = {
    ADMIN: os.environ["FUZZ_ADMIN_PASSWORD"],
    USER: os.environ["FUZZ_USER_PASSWORD"],
    MFA_USER: os.environ["FUZZ_MFA_USER_PASSWORD"],
}
_calls: dict[str, int] = defaultdict(int)
_statuses: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
_pending_password: dict[int, str] = {}
_stats = {"logins": 0, "recoveries": 0, "throwaway_users": 0}


def strong_password() -> str:
    return "fz-" + secrets.token_urlsafe(24)


def _post(path: str, body: dict | None, token: str | None = None, method: str = "POST") -> requests.Response:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    return requests.request(method, f"{BASE}{path}", json=body, headers=headers, timeout=30)


def _recover(username: str) -> None:
    """Restores a fuzz user's password and clears its locks through the CLI."""
    _stats["recoveries"] += 1
    with _lock:
        password = _passwords[username]
    subprocess.run([BIN, "user", "password", username, "--password-stdin"], input=f"{password}\n",
                   text=True, check=True, capture_output=True)
    subprocess.run([BIN, "user", "unlock", username], check=True, capture_output=True)


def _reset_factors(username: str) -> None:
    """Removes the dedicated user's second factors through the CLI (its logins take one step again)."""
    _stats["recoveries"] += 1
    subprocess.run([BIN, "user", "reset-mfa", username], check=True, capture_output=True)


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
        if r.status_code == 400 and username in (USER, MFA_USER) and not recovered:
            _recover(username)
            recovered = True
            continue
        if r.status_code == 401 and username == MFA_USER and "mfa_required" in r.text:
            _reset_factors(username)
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


@schemathesis.auth(refresh_interval=REFRESH_INTERVAL).apply_to(operation_id=MFA_OPERATIONS)
class MfaAuth(_Bearer):
    username = MFA_USER


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


def totp_code(secret: str, step: int | None = None) -> str:
    """RFC 6238 (over RFC 4226): HMAC-SHA-1, 30-second steps, 6 digits, of a base32 secret."""
    key = base64.b32decode(secret.upper() + "=" * (-len(secret) % 8))
    counter = int(time.time()) // 30 if step is None else step
    mac = hmac.new(key, struct.pack(">Q", counter), hashlib.sha1).digest()
    offset = mac[-1] & 0x0F
    value = struct.unpack(">I", mac[offset:offset + 4])[0] & 0x7FFFFFFF
    return f"{value % 1_000_000:06d}"


def _checked(r: requests.Response, expected: int, what: str) -> dict:
    if r.status_code != expected:
        raise RuntimeError(f"{what}: {r.status_code} {r.text}")
    return r.json()


def throwaway_user() -> str:
    """Signs up a new user through the API (sign-up is open); its access token."""
    for _ in range(8):
        r = _post("/api/register", {"username": f"fz-mfa-{secrets.token_hex(6)}", "password": strong_password()})
        if r.status_code in (429, 503):
            time.sleep(min(float(r.headers.get("Retry-After", "1")), 5.0))
            continue
        _stats["throwaway_users"] += 1
        return _checked(r, 201, "sign-up of a throwaway user")["access_token"]
    raise RuntimeError("sign-up of a throwaway user kept being throttled")


def _mails_to(address: str) -> list[tuple[float, str | None]]:
    """(time written, code) of every mail in the outbox to `address`, oldest first."""
    found = []
    names = os.listdir(OUTBOX) if os.path.isdir(OUTBOX) else []
    for name in (n for n in names if n.endswith(".eml")):
        path = os.path.join(OUTBOX, name)
        with open(path, encoding="utf-8", errors="replace") as f:
            lines = f.read().splitlines()
        if f"To: {address}" in lines:
            code = next((line[len("Code: "):].strip() for line in lines if line.startswith("Code: ")), None)
            found.append((os.path.getmtime(path), code))
    return sorted(found, key=lambda m: m[0])


def mailed_code(address: str, before: int) -> str:
    """The code of mail number `before + 1` to `address` (waits up to 10 s for it)."""
    deadline = time.time() + 10
    while time.time() < deadline:
        mails = _mails_to(address)
        if len(mails) > before and mails[-1][1]:
            return mails[-1][1]
        time.sleep(0.05)
    raise RuntimeError(f"no mail {before + 1} to {address} in the outbox")


def user_with_address(verified: bool) -> tuple[str, str, str]:
    """A throwaway user signed up with an address (verified with its mailed code when `verified`):
    (access token, username, address)."""
    for _ in range(8):
        name = f"fz-mail-{secrets.token_hex(6)}"
        address = f"{name}@example.com"
        r = _post("/api/register", {"username": name, "password": strong_password(), "email": address})
        if r.status_code in (429, 503):
            time.sleep(min(float(r.headers.get("Retry-After", "1")), 5.0))
            continue
        _stats["throwaway_users"] += 1
        token = _checked(r, 201, "sign-up with an address")["access_token"]
        if verified:
            code = mailed_code(address, 0)
            _checked(_post("/api/email/verify", {"code": code}, token), 200, "address verification")
        return token, name, address
    raise RuntimeError("sign-up of a throwaway user kept being throttled")


def pending_authenticator() -> tuple[str, str]:
    """A throwaway user with a pending TOTP authenticator: (access token, base32 secret)."""
    token = throwaway_user()
    enrolment = _checked(_post("/api/mfa/totp", None, token), 201, "TOTP enrolment")
    return token, enrolment["secret"]


def confirmed_authenticator() -> tuple[str, list[str]]:
    """A throwaway user with a confirmed TOTP authenticator: (access token, recovery codes)."""
    token, secret = pending_authenticator()
    confirmed = _checked(_post("/api/mfa/totp/verify", {"code": totp_code(secret)}, token), 200, "TOTP confirmation")
    return token, confirmed["recovery_codes"]


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _well_formed_credential(kind: str, challenge: str) -> dict:
    """A PublicKeyCredential in WebAuthn's JSON form that parses but was signed by no authenticator."""
    raw_id = secrets.token_bytes(16)
    client_data = json.dumps({"type": f"webauthn.{kind}", "challenge": challenge, "origin": "http://localhost:8080"})
    response = {"clientDataJSON": _b64(client_data.encode())}
    if kind == "create":
        response["attestationObject"] = _b64(secrets.token_bytes(64))
    else:
        response |= {"authenticatorData": _b64(secrets.token_bytes(37)), "signature": _b64(secrets.token_bytes(70)),
                     "userHandle": _b64(secrets.token_bytes(16))}
    return {"id": _b64(raw_id), "rawId": _b64(raw_id), "type": "public-key", "response": response,
            "clientExtensionResults": {}}


def _ceremony(path: str, token: str | None = None) -> tuple[str, str]:
    """A fresh sealed ceremony of `path` (`register/start`, `login/start`) and its challenge."""
    started = _checked(_post(f"/api/passkeys/{path}", None, token), 200, f"passkey {path}")
    return started["ceremony"], started["options"]["publicKey"]["challenge"]


def _is_json(case) -> bool:
    return (case.media_type or "").split(";")[0].strip() == "application/json"


def _bearer(case, token: str) -> None:
    case.headers = {**(case.headers or {}), "Authorization": f"Bearer {token}"}


def _valid_inputs(operation: str, case) -> None:
    """Replaces the generated inputs of `case` with ones that can succeed."""
    n = _calls[operation]
    # A generated DPoP header is never a valid proof (it is fuzzed on the other calls: 400
    # invalid_dpop_proof); the calls that can succeed go without one, as bearer clients do.
    if case.headers:
        case.headers = {k: v for k, v in case.headers.items() if k.lower() != "dpop"}
    if case.headers and operation in ("startPasskeyLogin", "finishPasskeyLogin"):
        case.headers = {k: v for k, v in case.headers.items() if k.lower() != "x-token-transport"}
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
        if n % 2:
            case.body["email"] = f"fz{n}-{secrets.token_hex(4)}@example.com"
    elif operation == "setEmail" and _structured(case):
        case.body = {"email": f"fz-set-{n}-{secrets.token_hex(4)}@example.com"}
    elif operation == "verifyEmail" and _structured(case):
        token, _, address = user_with_address(verified=False)
        _bearer(case, token)
        case.body = {"code": mailed_code(address, 0)}
    elif operation == "forgotPassword" and _structured(case):
        case.body = {"username": USER} if n % 2 else {"email": f"nobody-{n}@example.com"}
    elif operation == "resetPassword" and _structured(case):
        _, name, address = user_with_address(verified=True)
        _checked(_post("/api/password/forgot", {"username": name}), 202, "password reset request")
        case.body = {"username": name, "code": mailed_code(address, 1), "password": strong_password()}
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
    elif operation == "confirmTotp" and _structured(case):
        # A throwaway user's pending authenticator, and its current code.
        token, secret = pending_authenticator()
        _bearer(case, token)
        case.body = {"code": totp_code(secret)}
    elif operation == "removeTotp" and _structured(case):
        # A throwaway user's confirmed authenticator (its code's step is used up): a recovery code.
        token, codes = confirmed_authenticator()
        _bearer(case, token)
        case.body = {"code": codes[n % len(codes)]}
    elif operation == "finishPasskeyRegistration" and _is_json(case):
        ceremony, challenge = _ceremony("register/start", login(MFA_USER)["access_token"])
        generated = case.body.get("credential") if isinstance(case.body, dict) else None
        credential = generated if n % 2 and isinstance(generated, dict) else _well_formed_credential("create", challenge)
        case.body = {"ceremony": ceremony, "credential": credential, "name": f"fuzz key {n}"}
    elif operation == "startPasskeyLogin" and _structured(case):
        case.body = {}
    elif operation == "finishPasskeyLogin" and _is_json(case):
        ceremony, challenge = _ceremony("login/start")
        generated = case.body.get("credential") if isinstance(case.body, dict) else None
        credential = generated if n % 2 and isinstance(generated, dict) else _well_formed_credential("get", challenge)
        case.body = {"ceremony": ceremony, "credential": credential}


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
    status = str(response.status_code)
    if str(case.method).upper() != str(case.operation.method).upper():
        status = f"{str(case.method).upper()} {status}"
    with _lock:
        _statuses[operation][status] += 1
        new = _pending_password.pop(id(case), None)
        if new is not None and response.status_code == 200:
            _passwords[USER] = new


@atexit.register
def _write_record() -> None:
    with open(RECORD, "w", encoding="utf-8") as f:
        json.dump({"statuses": _statuses, "helper": _stats}, f, indent=1, sort_keys=True)
