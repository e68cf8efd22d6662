#!/usr/bin/env python3
"""Structural check of infra/ without a Bicep compiler (Python 3 standard library only).

Reads the .bicep / .bicepparam files as text and asserts what the service needs from them:
every app setting src/settings.rs defines is set on the Function App, Cosmos DB runs without
keys and with the expected containers, secrets come from Key Vault references, the data-plane
roles are granted, modules and parameters line up. It is not a compiler: a green run does not
prove the template deploys, only that these essentials have not been lost.

Usage:  python3 infra/check.py            (exit status 0 when every check passes, 1 otherwise)
"""

from __future__ import annotations

import re
import sys
from dataclasses import dataclass, field
from pathlib import Path

INFRA = Path(__file__).resolve().parent
REPO = INFRA.parent
SETTINGS_RS = REPO / "src" / "settings.rs"
MAIN = INFRA / "main.bicep"
PARAMS = INFRA / "main.bicepparam"

# Names src/settings.rs defines that the Function App deliberately does not set, and why.
NOT_SET_IN_AZURE = {
    "JwtRefreshToken__Descriptor__PreviousKeys": "prefix of the optional __0, __1, ... settings used only during a key rotation",
    "JwtRefreshToken__Embedded__Path": "the embedded SQLite store is for local development; Azure uses Cosmos DB",
    "JwtRefreshToken__Cosmos__ConnectionString": "account-key auth; the account has disableLocalAuth and the app uses Entra ID",
}
# Of those, the ones that must not appear at all (setting them would change the store or fail start-up).
MUST_NOT_BE_SET = {
    "JwtRefreshToken__Embedded__Path",
    "JwtRefreshToken__Cosmos__ConnectionString",
    "AzureWebJobsStorage",  # a connection string with a key; the host uses AzureWebJobsStorage__accountName
}
COSMOS_SETTINGS = [
    "JwtRefreshToken__Cosmos__AccountEndpoint",
    "JwtRefreshToken__Cosmos__DatabaseName",
    "JwtRefreshToken__Cosmos__TokenContainerId",
    "JwtRefreshToken__Cosmos__UserContainerId",
]
KEY_VAULT_SETTINGS = {
    "JwtRefreshToken__Descriptor__AlgorithmKey": "jwt-algorithm-key",
    "JwtRefreshToken__Rotation__Secret": "jwt-rotation-secret",
}
COSMOS_DATA_CONTRIBUTOR = "00000000-0000-0000-0000-000000000002"
ROLE_IDS = {
    "Storage Blob Data Owner": "b7e6dc6d-f1e8-4753-8033-0f276bb0955b",
    "Storage Queue Data Contributor": "974c5e8b-45b9-4653-ba55-5f855dd0fb88",
    "Storage Table Data Contributor": "0a9a7e1f-b9d0-4cc4-a60d-0319b160aaa3",
    "Key Vault Secrets User": "4633458b-17de-408a-b874-0445c86b69e6",
}
REQUIRED_OUTPUTS = [
    "functionAppName",
    "functionAppDefaultHostName",
    "cosmosEndpoint",
    "keyVaultName",
    "functionAppPrincipalId",
]


# ------------------------------------------------------------------------------------------------
# A small Bicep reader: comments, strings, brackets and top-level statements. Enough for checks.


def strip_comments(text: str) -> str:
    """Removes // and /* */ comments, leaving strings ('...', '''...''') untouched."""
    out, i, n = [], 0, len(text)
    while i < n:
        if text.startswith("'''", i):
            j = text.find("'''", i + 3)
            j = n if j < 0 else j + 3
            out.append(text[i:j])
            i = j
        elif text[i] == "'":
            j = i + 1
            while j < n and text[j] != "'":
                j += 2 if text[j] == "\\" else 1
            out.append(text[i : j + 1])
            i = j + 1
        elif text.startswith("//", i):
            j = text.find("\n", i)
            i = n if j < 0 else j
        elif text.startswith("/*", i):
            j = text.find("*/", i + 2)
            i = n if j < 0 else j + 2
        else:
            out.append(text[i])
            i += 1
    return "".join(out)


def split_top_level(text: str) -> list[str]:
    """Splits text at newlines that are outside brackets and strings; drops blank pieces."""
    pieces, depth, start, i, n = [], 0, 0, 0, len(text)
    while i < n:
        c = text[i]
        if text.startswith("'''", i):
            j = text.find("'''", i + 3)
            i = n if j < 0 else j + 3
            continue
        if c == "'":
            j = i + 1
            while j < n and text[j] != "'":
                j += 2 if text[j] == "\\" else 1
            i = j + 1
            continue
        if c in "([{":
            depth += 1
        elif c in ")]}":
            depth -= 1
        elif c == "\n" and depth == 0:
            pieces.append(text[start:i])
            start = i + 1
        i += 1
    pieces.append(text[start:])
    return [p.strip() for p in pieces if p.strip()]


def block_after(text: str, opener: str = "{") -> str | None:
    """The inside of the first balanced {...} (or [...]) in text, strings skipped."""
    closer = {"{": "}", "[": "]", "(": ")"}[opener]
    start = -1
    depth, i, n = 0, 0, len(text)
    while i < n:
        c = text[i]
        if c == "'":
            j = i + 1
            while j < n and text[j] != "'":
                j += 2 if text[j] == "\\" else 1
            i = j + 1
            continue
        if c == opener:
            if depth == 0:
                start = i + 1
            depth += 1
        elif c == closer and depth > 0:
            depth -= 1
            if depth == 0:
                return text[start:i]
        i += 1
    return None


ENTRY = re.compile(r"^(?:'([^']*)'|([A-Za-z_$][\w$]*))\s*:\s*(.*)$", re.S)


def entries(obj_inner: str) -> dict[str, str]:
    """key -> value text of the top-level properties of an object body."""
    result = {}
    for piece in split_top_level(obj_inner):
        m = ENTRY.match(piece)
        if m:
            result[m.group(1) if m.group(1) is not None else m.group(2)] = m.group(3).strip()
    return result


def get(obj_inner: str | None, path: str) -> str | None:
    """Value text at a dotted path of nested object literals, or None."""
    current = obj_inner
    for part in path.split("."):
        if current is None:
            return None
        value = entries(current).get(part)
        if value is None:
            return None
        if value.startswith("{"):
            current = block_after(value)
        else:
            current = value
    return current


def unquote(value: str | None) -> str | None:
    if value is None:
        return None
    value = value.strip()
    return value[1:-1] if len(value) >= 2 and value[0] == value[-1] == "'" else value


@dataclass
class Param:
    name: str
    type: str
    default: str | None
    decorators: list[str]


@dataclass
class Resource:
    symbol: str
    type: str
    version: str
    existing: bool
    body: str  # inside of the resource's object literal


@dataclass
class BicepFile:
    path: Path
    text: str
    params: dict[str, Param] = field(default_factory=dict)
    vars: dict[str, str] = field(default_factory=dict)
    resources: list[Resource] = field(default_factory=list)
    modules: dict[str, tuple[str, str]] = field(default_factory=dict)  # symbol -> (path, body)
    outputs: dict[str, str] = field(default_factory=dict)

    def resources_of(self, rtype: str) -> list[Resource]:
        return [r for r in self.resources if r.type.lower() == rtype.lower()]


RESOURCE = re.compile(r"^resource\s+(\w+)\s+'([^'@]+)@([^']+)'\s*(existing)?\s*=\s*(.*)$", re.S)
MODULE = re.compile(r"^module\s+(\w+)\s+'([^']+)'\s*=\s*(.*)$", re.S)
PARAM = re.compile(r"^param\s+(\w+)\s+(\w+)(?:\s*=\s*(.*))?$", re.S)
VAR = re.compile(r"^var\s+(\w+)\s*=\s*(.*)$", re.S)
OUTPUT = re.compile(r"^output\s+(\w+)\s+\w+\s*=\s*(.*)$", re.S)


def read_bicep(path: Path) -> BicepFile:
    raw = path.read_text(encoding="utf-8")
    text = strip_comments(raw)
    bf = BicepFile(path, text)
    decorators: list[str] = []
    for stmt in split_top_level(text):
        if stmt.startswith("@"):
            decorators.append(stmt)
            continue
        if stmt.startswith("#"):  # #disable-next-line pragmas
            continue
        if m := PARAM.match(stmt):
            bf.params[m.group(1)] = Param(m.group(1), m.group(2), m.group(3), decorators)
        elif m := VAR.match(stmt):
            bf.vars[m.group(1)] = m.group(2).strip()
        elif m := RESOURCE.match(stmt):
            body = block_after(m.group(5)) or ""
            bf.resources.append(Resource(m.group(1), m.group(2), m.group(3), bool(m.group(4)), body))
        elif m := MODULE.match(stmt):
            bf.modules[m.group(1)] = (m.group(2), block_after(m.group(3)) or "")
        elif m := OUTPUT.match(stmt):
            bf.outputs[m.group(1)] = m.group(2).strip()
        decorators = []
    return bf


def read_bicepparam(path: Path) -> tuple[str | None, dict[str, str]]:
    text = strip_comments(path.read_text(encoding="utf-8"))
    using, values = None, {}
    for stmt in split_top_level(text):
        if m := re.match(r"^using\s+'([^']+)'", stmt):
            using = m.group(1)
        elif m := re.match(r"^param\s+(\w+)\s*=\s*(.*)$", stmt, re.S):
            values[m.group(1)] = m.group(2).strip()
    return using, values


def settings_rs_names(path: Path) -> list[str]:
    """Setting names declared as constants (`const X: &str = "JwtRefreshToken__..."`)."""
    text = path.read_text(encoding="utf-8")
    pattern = r'^\s*(?:pub(?:\([^)]*\))?\s+)?const\s+\w+\s*:\s*&(?:\'static\s+)?str\s*=\s*"(JwtRefreshToken__\w+)"'
    return sorted(set(re.findall(pattern, text, re.M)))


# ------------------------------------------------------------------------------------------------
# Checks


class Checks:
    def __init__(self) -> None:
        self.results: list[tuple[str, list[str]]] = []

    def run(self, name: str, fn) -> None:
        problems: list[str] = []
        try:
            fn(problems)
        except Exception as e:  # a crash in a check is a failure of that check, with its cause
            problems.append(f"check crashed: {type(e).__name__}: {e}")
        self.results.append((name, problems))

    def report(self) -> int:
        failed = 0
        for name, problems in self.results:
            if problems:
                failed += 1
                print(f"FAIL  {name}")
                for p in problems:
                    print(f"      - {p}")
            else:
                print(f"ok    {name}")
        passed = len(self.results) - failed
        # One word before the colon, so CI log readers take it as a plain "N passed, N failed" line.
        print(f"infra-check: {passed} passed, {failed} failed")
        return 1 if failed else 0


def main() -> int:
    checks = Checks()
    for required in (MAIN, PARAMS, SETTINGS_RS):
        if not required.is_file():
            print(f"FAIL  inputs\n      - missing {required}")
            print("infra-check: 0 passed, 1 failed")
            return 1

    main_bf = read_bicep(MAIN)
    module_files: dict[str, BicepFile] = {}
    for symbol, (rel, _body) in main_bf.modules.items():
        p = (INFRA / rel).resolve()
        if p.is_file():
            module_files[symbol] = read_bicep(p)
    all_files = [main_bf] + list(module_files.values())
    for extra in sorted((INFRA / "modules").glob("*.bicep")):
        if all(extra.resolve() != f.path.resolve() for f in all_files):
            all_files.append(read_bicep(extra))

    def module_by_resource(rtype: str) -> BicepFile | None:
        for f in module_files.values():
            if f.resources_of(rtype) and not all(r.existing for r in f.resources_of(rtype)):
                return f
        return None

    def module_symbol(bf: BicepFile | None) -> str | None:
        for symbol, f in module_files.items():
            if f is bf:
                return symbol
        return None

    app_bf = module_by_resource("Microsoft.Web/sites")
    cosmos_bf = module_by_resource("Microsoft.DocumentDB/databaseAccounts")
    kv_bf = module_by_resource("Microsoft.KeyVault/vaults")
    storage_bf = module_by_resource("Microsoft.Storage/storageAccounts")
    roles_bf = next((f for f in module_files.values() if f.resources_of("Microsoft.Authorization/roleAssignments")), None)

    # -- the Function App's app settings: union of the var objects named in the appsettings resource
    app_settings: dict[str, str] = {}
    settings_expr = ""

    def collect_settings(expr: str, seen: set[str]) -> None:
        """Adds the keys of every object variable the expression reaches (through other variables)."""
        for ident in re.findall(r"\b([A-Za-z_]\w*)\b", expr):
            value = app_bf.vars.get(ident)
            if value is None or ident in seen:
                continue
            seen.add(ident)
            if value.startswith("{"):
                app_settings.update(entries(block_after(value) or ""))
            else:
                collect_settings(value, seen)
    if app_bf:
        for r in app_bf.resources_of("Microsoft.Web/sites/config"):
            if unquote(get(r.body, "name")) == "appsettings":
                settings_expr = get(r.body, "properties") or ""
                inline = block_after(settings_expr) if settings_expr.startswith("{") else None
                if inline is not None:
                    app_settings.update(entries(inline))
                collect_settings(settings_expr, set())

    def check_modules(problems: list[str]) -> None:
        if not main_bf.modules:
            problems.append("main.bicep declares no module")
        for symbol, (rel, body) in main_bf.modules.items():
            p = INFRA / rel
            if not p.is_file():
                problems.append(f"module {symbol}: file {rel} does not exist (relative to infra/)")
                continue
            mod = module_files[symbol]
            params_value = get(body, "params")
            passed = entries(params_value) if params_value is not None else {}
            for name in passed:
                if name not in mod.params:
                    problems.append(f"module {symbol}: passes {name}, which {rel} does not declare")
            for name, prm in mod.params.items():
                if prm.default is None and name not in passed:
                    problems.append(f"module {symbol}: required parameter {name} of {rel} is not passed")
        for f in all_files:
            for sym, out in re.findall(r"\b(\w+)\.outputs\.(\w+)", f.text):
                target = module_files.get(sym)
                if target is not None and out not in target.outputs:
                    problems.append(f"{f.path.name}: {sym}.outputs.{out} is not an output of {target.path.name}")

    def check_bicepparam(problems: list[str]) -> None:
        using, values = read_bicepparam(PARAMS)
        if using is None:
            problems.append("main.bicepparam has no `using` line")
        elif (INFRA / using).resolve() != MAIN.resolve():
            problems.append(f"main.bicepparam uses {using!r}, expected 'main.bicep'")
        for name in values:
            if name not in main_bf.params:
                problems.append(f"main.bicepparam sets {name}, which main.bicep does not declare")
        for name, prm in main_bf.params.items():
            if prm.default is None and name not in values:
                problems.append(f"main.bicep requires {name} but main.bicepparam does not set it")
            secure = any(d.startswith("@secure") for d in prm.decorators)
            if secure and name in values and not re.match(r"^(readEnvironmentVariable|getSecret|az\.getSecret)\(", values[name]):
                problems.append(f"secure parameter {name} is given a literal in main.bicepparam; read it with readEnvironmentVariable()")

    def check_param_decorators(problems: list[str]) -> None:
        for f in all_files:
            for name, prm in f.params.items():
                if not any(d.startswith("@description(") for d in prm.decorators):
                    problems.append(f"{f.path.name}: param {name} has no @description")
        for name in ("jwtAlgorithmKey", "jwtRotationSecret"):
            prm = main_bf.params.get(name)
            if prm is None:
                problems.append(f"main.bicep: param {name} missing")
            elif not any(d.startswith("@secure") for d in prm.decorators):
                problems.append(f"main.bicep: param {name} is not @secure()")
            elif prm.default:
                problems.append(f"main.bicep: secure param {name} has a default value")
        if kv_bf:
            for name, prm in kv_bf.params.items():
                if re.search(r"key|secret", name, re.I) and prm.type == "string" and not any(d.startswith("@secure") for d in prm.decorators):
                    problems.append(f"{kv_bf.path.name}: param {name} looks secret but is not @secure()")
        for f in all_files:
            for out, value in f.outputs.items():
                for secret in ("jwtAlgorithmKey", "jwtRotationSecret", "algorithmKey", "rotationSecret"):
                    if re.search(rf"\b{secret}\b", value):
                        problems.append(f"{f.path.name}: output {out} exposes the secure parameter {secret}")

    def check_api_versions(problems: list[str]) -> None:
        seen: dict[str, set[str]] = {}
        for f in all_files:
            for r in f.resources:
                if not re.fullmatch(r"\d{4}-\d{2}-\d{2}", r.version):
                    problems.append(f"{f.path.name}: {r.type}@{r.version} is not a stable API version")
                seen.setdefault(r.type.lower(), set()).add(r.version)
        for rtype, versions in seen.items():
            if len(versions) > 1:
                problems.append(f"{rtype} is used with several API versions: {sorted(versions)}")

    def check_naming(problems: list[str]) -> None:
        if "namePrefix" not in main_bf.params:
            problems.append("main.bicep has no namePrefix parameter")
        if not re.search(r"uniqueString\(\s*resourceGroup\(\)\.id\s*\)", main_bf.text):
            problems.append("main.bicep does not derive names from uniqueString(resourceGroup().id)")

    def check_service_settings(problems: list[str]) -> None:
        if not app_settings:
            problems.append("no appsettings resource (Microsoft.Web/sites/config 'appsettings') found in the Function App module")
            return
        names = settings_rs_names(SETTINGS_RS)
        if not names:
            problems.append(f"no JwtRefreshToken__ constants found in {SETTINGS_RS}")
        for name in names:
            if name in NOT_SET_IN_AZURE:
                continue
            if name not in app_settings:
                problems.append(
                    f"{name} (declared in src/settings.rs) is not set on the Function App; "
                    f"add it to the app settings in {app_bf.path.name} or, with a reason, to NOT_SET_IN_AZURE in check.py"
                )
        for name in COSMOS_SETTINGS:
            if name not in app_settings:
                problems.append(f"{name} is not set on the Function App")
        for name in sorted(MUST_NOT_BE_SET):
            if name in app_settings:
                problems.append(f"{name} must not be set on the Function App ({NOT_SET_IN_AZURE.get(name, 'uses a storage key')})")

    def check_cosmos_endpoint_wiring(problems: list[str]) -> None:
        value = app_settings.get("JwtRefreshToken__Cosmos__AccountEndpoint")
        if value is None:
            problems.append("JwtRefreshToken__Cosmos__AccountEndpoint not set")
            return
        app_sym = module_symbol(app_bf)
        cosmos_sym = module_symbol(cosmos_bf)
        passed = entries(get(main_bf.modules[app_sym][1], "params") or "") if app_sym else {}
        source = passed.get(value.strip(), "")
        m = re.fullmatch(r"(\w+)\.outputs\.(\w+)", source)
        if not m or m.group(1) != cosmos_sym:
            problems.append(f"AccountEndpoint comes from {value!r} = {source!r}, not from the Cosmos module's outputs")
            return
        out = cosmos_bf.outputs.get(m.group(2), "")
        if not re.fullmatch(r"\w+\.properties\.documentEndpoint", out):
            problems.append(f"Cosmos output {m.group(2)} is {out!r}, expected <account>.properties.documentEndpoint")

    def check_key_vault_references(problems: list[str]) -> None:
        if kv_bf is None:
            problems.append("no Key Vault module")
            return
        app_sym, kv_sym = module_symbol(app_bf), module_symbol(kv_bf)
        passed = entries(get(main_bf.modules[app_sym][1], "params") or "") if app_sym else {}
        secrets = {unquote(get(r.body, "name")): r for r in kv_bf.resources_of("Microsoft.KeyVault/vaults/secrets")}
        for setting, secret_name in KEY_VAULT_SETTINGS.items():
            value = app_settings.get(setting)
            m = re.fullmatch(r"'@Microsoft\.KeyVault\(SecretUri=\$\{(\w+)\}\)'", value or "")
            if not m:
                problems.append(f"{setting} is {value!r}, not a Key Vault reference '@Microsoft.KeyVault(SecretUri=${{...}})'")
                continue
            source = passed.get(m.group(1), "")
            sm = re.fullmatch(r"(\w+)\.outputs\.(\w+)", source)
            if not sm or sm.group(1) != kv_sym:
                problems.append(f"{setting}: SecretUri {m.group(1)!r} is not fed from the Key Vault module (got {source!r})")
                continue
            out = kv_bf.outputs.get(sm.group(2), "")
            secret = secrets.get(secret_name)
            if secret is None:
                problems.append(f"Key Vault module has no secret named {secret_name!r}")
                continue
            if not re.fullmatch(rf"{secret.symbol}\.properties\.secretUri(WithVersion)?", out):
                problems.append(f"{setting}: Key Vault output {sm.group(2)} is {out!r}, not the URI of secret {secret_name}")
            value_param = (get(secret.body, "properties.value") or "").strip()
            prm = kv_bf.params.get(value_param)
            if prm is None or not any(d.startswith("@secure") for d in prm.decorators):
                problems.append(f"secret {secret_name} takes its value from {value_param!r}, which is not a @secure() param")

    def check_key_vault(problems: list[str]) -> None:
        vault = next((r for r in (kv_bf.resources_of("Microsoft.KeyVault/vaults") if kv_bf else []) if not r.existing), None)
        if vault is None:
            problems.append("no Key Vault resource")
            return
        for prop in ("enableRbacAuthorization", "enableSoftDelete", "enablePurgeProtection"):
            if get(vault.body, f"properties.{prop}") != "true":
                problems.append(f"Key Vault properties.{prop} is not true")

    def check_cosmos_account(problems: list[str]) -> None:
        account = next((r for r in (cosmos_bf.resources_of("Microsoft.DocumentDB/databaseAccounts") if cosmos_bf else []) if not r.existing), None)
        if account is None:
            problems.append("no Cosmos DB account resource")
            return
        expected = {
            "properties.disableLocalAuth": "true",
            "properties.minimalTlsVersion": "'Tls12'",
            "properties.consistencyPolicy.defaultConsistencyLevel": "'Session'",
        }
        for path, want in expected.items():
            got = get(account.body, path)
            if got != want:
                problems.append(f"Cosmos account {path} is {got!r}, expected {want}")
        if "EnableServerless" not in (get(account.body, "properties.capabilities") or ""):
            problems.append("Cosmos account has no EnableServerless capability option")

    def check_containers(problems: list[str]) -> None:
        containers = cosmos_bf.resources_of("Microsoft.DocumentDB/databaseAccounts/sqlDatabases/containers") if cosmos_bf else []
        wanted = {
            "/userId": ("tokens", "tokenContainerName", ["/userId/?"]),
            "/id": ("users", "userContainerName", []),
        }
        found = {}
        for c in containers:
            paths = re.findall(r"'([^']+)'", get(c.body, "properties.resource.partitionKey.paths") or "")
            if len(paths) == 1:
                found[paths[0]] = c
        for pk, (label, name_param, included) in wanted.items():
            c = found.get(pk)
            if c is None:
                problems.append(f"no container with partition key {pk} ({label})")
                continue
            if get(c.body, "properties.resource.defaultTtl") != "-1":
                problems.append(f"{label} container: defaultTtl is not -1")
            if (get(c.body, "name") or "").strip() != name_param:
                problems.append(f"{label} container: name is not the {name_param} parameter")
            excluded = re.findall(r"'([^']+)'", get(c.body, "properties.resource.indexingPolicy.excludedPaths") or "")
            inc = re.findall(r"'([^']+)'", get(c.body, "properties.resource.indexingPolicy.includedPaths") or "")
            if excluded != ["/*"]:
                problems.append(f"{label} container: excludedPaths is {excluded}, expected ['/*']")
            if inc != included:
                problems.append(f"{label} container: includedPaths is {inc}, expected {included}")
            if get(c.body, "properties.resource.indexingPolicy.indexingMode") != "'consistent'":
                problems.append(f"{label} container: indexingMode must be 'consistent' (TTL needs an index)")
        defaults = {"cosmosTokenContainerName": "'tokens'", "cosmosUserContainerName": "'users'", "cosmosDatabaseName": "'jwt-refresh-token'"}
        for name, want in defaults.items():
            prm = main_bf.params.get(name)
            if prm is None or (prm.default or "").strip() != want:
                problems.append(f"main.bicep param {name} should default to {want}")

    def check_cosmos_rbac(problems: list[str]) -> None:
        assignments = [(f, r) for f in all_files for r in f.resources_of("Microsoft.DocumentDB/databaseAccounts/sqlRoleAssignments")]
        if not assignments:
            problems.append("no Microsoft.DocumentDB/databaseAccounts/sqlRoleAssignments resource")
            return
        for f, r in assignments:
            role = get(r.body, "properties.roleDefinitionId") or ""
            scope = get(r.body, "properties.scope") or ""
            role_text = f.vars.get(role.strip(), role)
            scope_text = f.vars.get(scope.strip(), scope)
            # Follow ${var} interpolations one level (e.g. the role GUID kept in a variable).
            role_text = " ".join([role_text] + [f.vars.get(v, "") for v in re.findall(r"\$\{(\w+)\}", role_text)])
            if COSMOS_DATA_CONTRIBUTOR not in role_text:
                problems.append(f"sqlRoleAssignment {r.symbol}: role is not Cosmos DB Built-in Data Contributor ({COSMOS_DATA_CONTRIBUTOR})")
            if "/sqlRoleDefinitions/" not in role_text:
                problems.append(f"sqlRoleAssignment {r.symbol}: roleDefinitionId is not <account id>/sqlRoleDefinitions/<id>")
            if "/dbs/" not in scope_text:
                problems.append(f"sqlRoleAssignment {r.symbol}: scope is not a database (<account id>/dbs/<name>)")
            if not get(r.body, "properties.principalId"):
                problems.append(f"sqlRoleAssignment {r.symbol}: no principalId")

    def check_azure_rbac(problems: list[str]) -> None:
        text = "\n".join(f.text for f in all_files)
        for role, rid in ROLE_IDS.items():
            if rid not in text:
                problems.append(f"role {role} ({rid}) is never assigned")
        if roles_bf is None or not roles_bf.resources_of("Microsoft.Authorization/roleAssignments"):
            problems.append("no Microsoft.Authorization/roleAssignments resources")

    def check_storage(problems: list[str]) -> None:
        account = next((r for r in (storage_bf.resources_of("Microsoft.Storage/storageAccounts") if storage_bf else []) if not r.existing), None)
        if account is None:
            problems.append("no storage account resource")
            return
        if get(account.body, "properties.allowSharedKeyAccess") != "false":
            problems.append("storage allowSharedKeyAccess is not false")
        if "AzureWebJobsStorage__accountName" not in app_settings:
            problems.append("AzureWebJobsStorage__accountName is not set (identity-based host storage)")
        for name in app_settings:
            if name.startswith("WEBSITE_CONTENTAZUREFILECONNECTIONSTRING") or name == "WEBSITE_CONTENTSHARE":
                problems.append(f"{name} needs a storage key; the chosen plans must run without an Azure Files content share")

    def check_function_app(problems: list[str]) -> None:
        site = next((r for r in (app_bf.resources_of("Microsoft.Web/sites") if app_bf else []) if not r.existing), None)
        if site is None:
            problems.append("no Function App resource")
            return
        if "linux" not in (get(site.body, "kind") or ""):
            problems.append("Function App kind is not Linux")
        if get(site.body, "properties.httpsOnly") != "true":
            problems.append("Function App httpsOnly is not true")
        identity_text = (get(site.body, "identity") or "") + " " + " ".join(app_bf.vars.values())
        if "'SystemAssigned" not in identity_text:
            problems.append("Function App has no system-assigned identity")
        # Runtime: custom handler on every plan.
        flex_runtime = [v for v in app_bf.vars.values() if v.startswith("{") and get(block_after(v), "runtime.name")]
        if not any(unquote(get(block_after(v), "runtime.name")) == "custom" for v in flex_runtime):
            problems.append("Flex Consumption functionAppConfig.runtime.name is not 'custom'")
        if unquote(app_settings.get("FUNCTIONS_WORKER_RUNTIME")) != "custom":
            problems.append("FUNCTIONS_WORKER_RUNTIME is not 'custom' (Dedicated plan settings)")
        if unquote(app_settings.get("FUNCTIONS_EXTENSION_VERSION")) != "~4":
            problems.append("FUNCTIONS_EXTENSION_VERSION is not '~4' (Dedicated plan settings)")
        holder = next((n for n, v in app_bf.vars.items() if v.startswith("{") and "FUNCTIONS_WORKER_RUNTIME" in entries(block_after(v) or "")), None)
        if holder and not re.search(rf"\?\s*\{{\s*\}}\s*:\s*{holder}\b", settings_expr):
            problems.append(f"{holder} (FUNCTIONS_WORKER_RUNTIME) must be applied only off Flex Consumption (`isFlex ? {{}} : {holder}`), which rejects it")
        # TLS and FTP.
        site_configs = [v for v in app_bf.vars.values() if v.startswith("{") and "minTlsVersion" in entries(block_after(v) or "")]
        if not site_configs or any(get(block_after(v), "minTlsVersion") != "'1.2'" for v in site_configs):
            problems.append("siteConfig minTlsVersion is not '1.2' on every plan")
        if not any(get(block_after(v), "ftpsState") == "'Disabled'" for v in site_configs):
            problems.append("no siteConfig sets ftpsState 'Disabled' (Dedicated plan)")
        # Optional user-assigned identity -> AZURE_CLIENT_ID.
        if "AZURE_CLIENT_ID" not in app_settings:
            problems.append("AZURE_CLIENT_ID is never set for the user-assigned identity")
        if "userAssignedIdentityResourceId" not in main_bf.params:
            problems.append("main.bicep has no userAssignedIdentityResourceId parameter")
        if "APPLICATIONINSIGHTS_CONNECTION_STRING" not in app_settings:
            problems.append("APPLICATIONINSIGHTS_CONNECTION_STRING is not set")

    def check_outputs(problems: list[str]) -> None:
        for name in REQUIRED_OUTPUTS:
            if name not in main_bf.outputs:
                problems.append(f"main.bicep has no output {name}")

    checks.run("every module path exists, module params and outputs line up", check_modules)
    checks.run("main.bicepparam: using main.bicep, only declared params, secrets from the environment", check_bicepparam)
    checks.run("every param has @description; secrets are @secure() and never output", check_param_decorators)
    checks.run("stable API versions, one per resource type", check_api_versions)
    checks.run("names from namePrefix + uniqueString(resourceGroup().id)", check_naming)
    checks.run("every setting in src/settings.rs and the four Cosmos settings are set on the Function App", check_service_settings)
    checks.run("Cosmos AccountEndpoint is the account's documentEndpoint", check_cosmos_endpoint_wiring)
    checks.run("AlgorithmKey and Rotation__Secret are Key Vault references to jwt-algorithm-key / jwt-rotation-secret", check_key_vault_references)
    checks.run("Key Vault: RBAC authorization, soft delete, purge protection", check_key_vault)
    checks.run("Cosmos account: disableLocalAuth, Tls12, Session, serverless option", check_cosmos_account)
    checks.run("containers tokens (/userId) and users (/id): defaultTtl -1, minimal indexing", check_containers)
    checks.run(f"Cosmos sqlRoleAssignments: Built-in Data Contributor ({COSMOS_DATA_CONTRIBUTOR}) on the database", check_cosmos_rbac)
    checks.run("storage, queue, table and Key Vault Secrets User roles are assigned", check_azure_rbac)
    checks.run("storage: no shared keys, identity-based AzureWebJobsStorage, no content share", check_storage)
    checks.run("Function App: Linux custom handler, HTTPS only, TLS 1.2, FTP off, identities", check_function_app)
    checks.run("main.bicep outputs", check_outputs)
    return checks.report()


if __name__ == "__main__":
    sys.exit(main())
