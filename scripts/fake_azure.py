#!/usr/bin/env python3
"""Stand-ins for `az`, `curl` and `handler`, for scripts/test_deploy.py (no Azure, no network).

scripts/test_deploy.py links this file as `az`, `curl` and `handler` into a directory placed first
on PATH; the program name picks the role. Every call appends one JSON line to $FAKE_DIR/calls.jsonl
with its argv, whether anything arrived on stdin, and (for `keyvault secret set --file`) the file's
mode. Azure's state (resource group, deployment, secrets, role assignments, users) lives in
$FAKE_DIR/state.json, so a second run of the deploy script sees what the first one created.

Scenario knobs (environment):
  FAKE_RUNTIMES        custom (default): Flex offers the custom runtime; none: an empty list;
                       error: the command fails
  FAKE_FORBIDDEN_SETS  how many `keyvault secret set` calls answer Forbidden first (default 0)
An az command this file does not know fails with exit 2, so an unexpected call fails the test.
"""

from __future__ import annotations

import json
import os
import stat
import sys
import uuid
from pathlib import Path

FAKE = Path(os.environ["FAKE_DIR"])
STATE = FAKE / "state.json"
APP = "jwtrt-func-fake0000000001"
HOST = f"{APP}.azurewebsites.net"
KV = "kvjwtrtfake0000000001"
COSMOS = "jwtrt-cosmos-fake0000000001"
DB = "jwt-refresh-token"


def load() -> dict:
    if STATE.exists():
        return json.loads(STATE.read_text())
    return {
        "group": None,
        "deployments": 0,
        "secrets": {},
        "forbidden_sets_left": int(os.environ.get("FAKE_FORBIDDEN_SETS", "0")),
        "cosmos_roles": [],
        "users": {},
        "published": 0,
        "deleted_vaults": [],
    }


def save(state: dict) -> None:
    STATE.write_text(json.dumps(state, indent=1))


def read_stdin() -> bytes:
    if sys.stdin is None or sys.stdin.closed or sys.stdin.isatty():
        return b""
    return sys.stdin.buffer.read()


def log(entry: dict) -> None:
    with open(FAKE / "calls.jsonl", "a", encoding="utf-8") as f:
        f.write(json.dumps(entry) + "\n")


def options(args: list[str]) -> tuple[list[str], dict[str, str]]:
    """Leading words (the command) and --option value pairs (a flag maps to "")."""
    words, opts, i = [], {}, 0
    while i < len(args) and not args[i].startswith("-"):
        words.append(args[i])
        i += 1
    while i < len(args):
        a = args[i]
        if a.startswith("-") and i + 1 < len(args) and not args[i + 1].startswith("-"):
            opts[a] = args[i + 1]
            i += 2
        else:
            opts[a] = ""
            i += 1
    return words, opts


def opt(opts: dict[str, str], *names: str) -> str | None:
    for n in names:
        if n in opts:
            return opts[n]
    return None


def outputs(rg: str) -> dict:
    app_id = f"/subscriptions/00000000-0000-0000-0000-0000000000aa/resourceGroups/{rg}/providers/Microsoft.Web/sites/{APP}"
    values = {
        "functionAppName": APP,
        "functionAppId": app_id,
        "functionAppDefaultHostName": HOST,
        "tokenUrl": f"https://{HOST}/api/token",
        "issuer": f"https://{HOST}/api",
        "jwtAlgorithm": "ES256",
        "keyVaultName": KV,
        "algorithmKeySecretName": "jwt-algorithm-key",
        "rotationSecretName": "jwt-rotation-secret",
        "cosmosAccountName": COSMOS,
        "cosmosEndpoint": f"https://{COSMOS}.documents.azure.com:443/",
        "cosmosDatabaseName": DB,
    }
    return {k: {"type": "String", "value": v} for k, v in values.items()}


def az(args: list[str], stdin: bytes) -> int:
    words, opts = options(args)
    cmd = " ".join(words)
    entry = {"prog": "az", "argv": args, "stdin": bool(stdin)}
    state = load()
    out = None
    rc = 0
    if cmd == "account show":
        out = "Fake subscription\t00000000-0000-0000-0000-0000000000aa\toperator@example.com"
    elif cmd == "bicep build":
        if not Path(opt(opts, "--file", "-f") or "").is_file():
            print("bicep: no such file", file=sys.stderr)
            rc = 1
        else:
            Path(opts["--outfile"]).write_text("{}")
    elif cmd == "functionapp list-flexconsumption-runtimes":
        mode = os.environ.get("FAKE_RUNTIMES", "custom")
        if mode == "error":
            print(f"ERROR: location '{opt(opts, '--location', '-l')}' does not support Flex Consumption", file=sys.stderr)
            rc = 1
        elif mode == "none":
            out = json.dumps([])
        else:
            out = json.dumps([{"name": "custom", "version": "1.0", "isDefault": True, "sku": {"skuCode": "FC1"}}])
    elif cmd == "group exists":
        out = "true" if state["group"] else "false"
    elif cmd == "group show":
        out = json.dumps({"name": opts["--name"], "location": state["group"]})
    elif cmd == "provider register":
        pass
    elif cmd == "group create":
        state["group"] = opt(opts, "--location", "-l")
    elif cmd == "group delete":
        state["deleted_vaults"].append(
            {"name": KV, "properties": {"vaultId": f"/subscriptions/s/resourceGroups/{opts['--name']}/providers/Microsoft.KeyVault/vaults/{KV}",
                                        "location": state["group"], "purgeProtectionEnabled": True, "scheduledPurgeDate": "2027-03-02T05:00:00+00:00"}})
        state["deleted_vaults"].append(
            {"name": "kvother", "properties": {"vaultId": f"/subscriptions/s/resourceGroups/{opts['--name']}/providers/Microsoft.KeyVault/vaults/kvother",
                                               "location": state["group"], "purgeProtectionEnabled": False, "scheduledPurgeDate": "2027-03-02T05:00:00+00:00"}})
        state["group"] = None
    elif cmd in ("deployment group what-if", "deployment group create"):
        params = Path(opt(opts, "--parameters", "-p") or "")
        if not state["group"]:
            print(f"(ResourceGroupNotFound) Resource group '{opts['--resource-group']}' could not be found.", file=sys.stderr)
            rc = 3
        elif not params.is_file() or not os.environ.get("OPERATOR_PRINCIPAL_ID"):
            print("bicepparam missing or OPERATOR_PRINCIPAL_ID not in the environment", file=sys.stderr)
            rc = 1
        elif cmd.endswith("what-if"):
            out = "Resource and property changes are indicated with these symbols:\n  + Create\n\nResource changes: 22 to create."
        else:
            state["deployments"] += 1
    elif cmd == "deployment group show":
        if not state["deployments"]:
            print("(DeploymentNotFound)", file=sys.stderr)
            rc = 3
        else:
            rg = opts["--resource-group"]
            out = json.dumps({"properties": {"outputs": outputs(rg), "parameters": {
                "networkIsolation": {"value": False}, "jwtAudience": {"value": "api://example-app"}}}})
    elif cmd == "keyvault secret list":
        out = json.dumps([{"id": f"https://{KV}.vault.azure.net/secrets/{n}", "name": n} for n in state["secrets"]])
    elif cmd == "keyvault secret set":
        # --value is accepted as az does, so the test's argv check (not a crash here) catches it.
        path = Path(opts["--file"]) if "--file" in opts else None
        if path:
            entry["file_mode"] = stat.S_IMODE(path.stat().st_mode)
            entry["file"] = str(path)
        if state["forbidden_sets_left"] > 0:
            state["forbidden_sets_left"] -= 1
            print("ERROR: (Forbidden) Caller is not authorized to perform action on resource.\n"
                  "If role assignments, deny assignments or role definitions were changed recently, please observe propagation time.\n"
                  "Code: Forbidden", file=sys.stderr)
            rc = 1
        else:
            state["secrets"][opts["--name"]] = path.read_text(encoding="utf-8") if path else opts["--value"]
    elif cmd == "rest":
        if opts.get("--method") == "get":
            out = json.dumps({"value": [
                {"name": "JwtRefreshToken__Descriptor__AlgorithmKey", "properties": {"status": "Resolved" if "jwt-algorithm-key" in state["secrets"] else "SecretNotFound"}},
                {"name": "JwtRefreshToken__Rotation__Secret", "properties": {"status": "Resolved" if "jwt-rotation-secret" in state["secrets"] else "SecretNotFound"}},
            ]})
    elif cmd == "functionapp deployment source config-zip":
        if not Path(opts["--src"]).is_file():
            print("zip not found", file=sys.stderr)
            rc = 1
        else:
            state["published"] += 1
    elif cmd == "cosmosdb sql role assignment list":
        out = json.dumps(state["cosmos_roles"])
    elif cmd == "cosmosdb sql role assignment create":
        state["cosmos_roles"].append({
            "principalId": opts["--principal-id"],
            "scope": f"/subscriptions/s/resourceGroups/{opts['--resource-group']}/providers/Microsoft.DocumentDB/databaseAccounts/{COSMOS}{opts['--scope']}",
            "roleDefinitionId": f"/subscriptions/s/.../sqlRoleDefinitions/{opts['--role-definition-id']}",
        })
    elif cmd == "keyvault list":
        out = json.dumps([{"name": KV}] if state["group"] else [])
    elif cmd == "keyvault list-deleted":
        out = json.dumps(state["deleted_vaults"])
    elif cmd == "keyvault purge":
        state["deleted_vaults"] = [v for v in state["deleted_vaults"] if v["name"] != opts["--name"]]
    else:
        print(f"fake az: unknown command: {cmd!r}", file=sys.stderr)
        rc = 2
    entry["rc"] = rc
    log(entry)
    save(state)
    if out is not None:
        print(out)
    return rc


def handler(args: list[str], stdin: bytes) -> int:
    log({"prog": "handler", "argv": args, "stdin": bool(stdin)})
    state = load()
    if args[:2] == ["keys", "generate"]:
        algorithm = args[args.index("--algorithm") + 1]
        secret = f"SECRET-{algorithm}-{uuid.uuid4().hex}"
        with open(FAKE / "secrets.txt", "a", encoding="utf-8") as f:
            f.write(secret + "\n")
        if algorithm == "HS256":
            print(secret)
        else:
            print(f"-----BEGIN PRIVATE KEY-----\n{secret}\n-----END PRIVATE KEY-----")
        return 0
    if args[:1] == ["user"]:
        if not os.environ.get("JwtRefreshToken__Cosmos__AccountEndpoint"):
            print("JwtRefreshToken__Cosmos__AccountEndpoint is not set", file=sys.stderr)
            return 2
        if args[1] == "list":
            for name in state["users"]:
                print(f"{name}\t{uuid.uuid5(uuid.NAMESPACE_DNS, name)}\tactive\troles: admin")
            return 0
        if args[1] == "add" and "--password-stdin" in args:
            line = stdin.decode("utf-8").split("\n", 1)[0]
            state["users"][args[2]] = line
            save(state)
            print(f"added user {args[2]} (id x, roles: admin)")
            return 0
    print(f"fake handler: unknown arguments {args}", file=sys.stderr)
    return 2


def curl(args: list[str], stdin: bytes) -> int:
    log({"prog": "curl", "argv": args, "stdin": bool(stdin)})
    state = load()
    url = next(a for a in args if a.startswith("https://"))
    out_file = args[args.index("-o") + 1] if "-o" in args else None
    if url == f"https://{HOST}/api/jwks" and state["published"]:
        status, body = 200, {"keys": [{"kty": "EC", "crv": "P-256", "kid": "k1", "x": "AA", "y": "BB", "alg": "ES256", "use": "sig"}]}
    elif url == f"https://{HOST}/api/token" and state["published"]:
        sent = json.loads(stdin.decode("utf-8"))
        if state["users"].get(sent.get("username")) == sent.get("password"):
            status, body = 200, {"access_token": "eyJ.fake.token", "token_type": "Bearer", "expires_in": 300}
        else:
            status, body = 400, {"error": "invalid_grant"}
    else:
        status, body = 404, {"error": "not found"}
    text = json.dumps(body)
    if out_file:
        Path(out_file).write_text(text)
    else:
        sys.stdout.write(text)
    if "-w" in args:
        sys.stdout.write(str(status))
    if status >= 400 and "-fsS" in args:
        return 22
    return 0


def main() -> int:
    prog = Path(sys.argv[0]).name
    stdin = read_stdin()
    return {"az": az, "handler": handler, "curl": curl}[prog](sys.argv[1:], stdin)


if __name__ == "__main__":
    sys.exit(main())
