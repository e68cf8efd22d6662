#!/usr/bin/env python3
"""Facts check of infra/ without a Bicep compiler (Python 3 standard library only).

Reads the .bicep / .bicepparam files as text, the setting table src/settings/names.rs and
local.settings.json.example, and asserts what the service needs from them: every setting the
table marks Deploy::Template is set on the Function App, none marked Local or Platform is, every
JwtRefreshToken__ setting the template sets is in the table (names it builds at deployment from a
parameter, such as the sign-in providers' `…Providers__${name}__Audiences__${n}`, too), secrets are Key Vault references
the template never holds the value of, Cosmos DB runs without keys and grants the app's identity
the data-plane role, App Insights takes Entra ID ingestion only, the app settings are applied
after the role assignments, names fit each resource's rules, and the network, CORS and scale
options are wired. It is not a compiler (infra/syntax_gate.py parses the files; checkov runs the
security rules): a green run does not prove the template deploys, only that these facts hold.

Usage:  python3 infra/check.py [--root DIR]    (DIR: a repository copy; default: this repository)
        exit status 0 when every check passes, 1 otherwise
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path

COSMOS_DATA_CONTRIBUTOR = "00000000-0000-0000-0000-000000000002"
ROLE_IDS = {
    "Storage Blob Data Owner": "b7e6dc6d-f1e8-4753-8033-0f276bb0955b",
    "Storage Queue Data Contributor": "974c5e8b-45b9-4653-ba55-5f855dd0fb88",
    "Storage Table Data Contributor": "0a9a7e1f-b9d0-4cc4-a60d-0319b160aaa3",
    "Key Vault Secrets User": "4633458b-17de-408a-b874-0445c86b69e6",
    "Monitoring Metrics Publisher": "3913510d-42f4-4e42-8a64-420c390055eb",
}
# Which resource each role must be scoped to (the `existing` symbol's type in roles.bicep).
ROLE_SCOPES = {
    "Storage Blob Data Owner": "Microsoft.Storage/storageAccounts",
    "Storage Queue Data Contributor": "Microsoft.Storage/storageAccounts",
    "Storage Table Data Contributor": "Microsoft.Storage/storageAccounts",
    "Key Vault Secrets User": "Microsoft.KeyVault/vaults",
    "Monitoring Metrics Publisher": "Microsoft.Insights/components",
}
# Settings outside names.rs the template must set (the Functions host's own).
HOST_SETTINGS = [
    "AzureWebJobsStorage__accountName",
    "AzureWebJobsStorage__credential",
    "AzureWebJobsStorage__clientId",
    "APPLICATIONINSIGHTS_CONNECTION_STRING",
    "APPLICATIONINSIGHTS_AUTHENTICATION_STRING",
]
# Settings that must never be set: they carry a key or a content share that needs one.
KEYED_SETTINGS = ["AzureWebJobsStorage", "WEBSITE_CONTENTAZUREFILECONNECTIONSTRING", "WEBSITE_CONTENTSHARE"]
REQUIRED_OUTPUTS = [
    "functionAppName",
    "functionAppDefaultHostName",
    "tokenUrl",
    "cosmosEndpoint",
    "cosmosAccountName",
    "keyVaultName",
    # Named in src/settings/names.rs (Email__From, Email__Acs__Endpoint) and the custom-domain steps.
    "emailSenderAddress",
    "communicationEndpoint",
    "emailServiceName",
    "communicationServiceName",
]
# Built-in "Communication and Email Service Owner": the role Microsoft documents for sending email
# with an Entra ID identity (infra/README.md, "E-mail").
COMMUNICATION_EMAIL_OWNER = "09976791-48a7-449e-bb21-39d1a415f350"
# Resource types without a stable API version that has the properties used (diagnostic
# settings: workspaceId + logAnalyticsDestinationType exist only in the preview versions).
PREVIEW_API_ALLOWED = {"microsoft.insights/diagnosticsettings"}


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


@dataclass
class SettingSpec:
    name: str
    deploy: str  # Template | Optional | Platform | Local
    secret: bool
    fields: tuple[str, ...] = ()  # Kind::Family(FIELDS): the set is `name__<name>__<field>`


def read_setting_table(path: Path) -> list[SettingSpec]:
    """The `ALL` table of src/settings/names.rs: `Setting::new(CONST, Deploy::X)` or
    `Setting::secret(CONST, Deploy::X)` entries, with each CONST resolved through its
    `pub const CONST: &str = "...";` line; an entry's `.kind(Kind::Family(FIELDS))` through its
    `pub const FIELDS: &[&str] = &["...", ...];` line."""
    text = path.read_text(encoding="utf-8")
    text_nc = re.sub(r"//[^\n]*", "", text)
    consts = dict(re.findall(r'\bconst\s+([A-Z][A-Z0-9_]*)\s*:\s*&(?:\'static\s+)?str\s*=\s*"([^"]*)"\s*;', text_nc))
    m = re.search(r"\bconst\s+ALL\s*:\s*&\[\s*Setting\s*\]\s*=\s*&\[(.*?)\];", text_nc, re.S)
    if not m:
        raise ValueError(f"{path}: no `pub const ALL: &[Setting] = &[ ... ];` table")
    lists = {
        k: tuple(re.findall(r'"([^"]*)"', v))
        for k, v in re.findall(r"\bconst\s+([A-Z][A-Z0-9_]*)\s*:\s*&(?:'static\s+)?\[\s*&(?:'static\s+)?str\s*\]\s*=\s*&\[(.*?)\]\s*;", text_nc, re.S)
    }
    specs = []
    entry = re.compile(r"Setting::(new|secret)\(\s*([A-Z][A-Z0-9_]*)\s*,\s*Deploy::(\w+)\s*\)")
    found = list(entry.finditer(m.group(1)))
    for i, e in enumerate(found):
        kind, const, deploy = e.groups()
        if const not in consts:
            raise ValueError(f"{path}: ALL names {const}, which is not a `const {const}: &str` in the file")
        if deploy not in {"Template", "Optional", "Platform", "Local"}:
            raise ValueError(f"{path}: {const} has unknown Deploy::{deploy}")
        chain = m.group(1)[e.end() : found[i + 1].start() if i + 1 < len(found) else len(m.group(1))]
        fields: tuple[str, ...] = ()
        if fm := re.search(r"Kind::Family\(\s*([A-Z][A-Z0-9_]*)\s*\)", chain):
            if fm.group(1) not in lists or not lists[fm.group(1)]:
                raise ValueError(f"{path}: {const} is Kind::Family({fm.group(1)}), which is not a `const {fm.group(1)}: &[&str]` in the file")
            fields = lists[fm.group(1)]
        specs.append(SettingSpec(consts[const], deploy, kind == "secret", fields))
    if not specs:
        raise ValueError(f"{path}: the ALL table has no Setting entries")
    return specs


def spec_for(name: str, specs: list[SettingSpec]) -> SettingSpec | None:
    """The table entry a concrete setting name belongs to: itself (names match without case, as
    the handler reads them), a prefix entry such as PreviousKeys for `…PreviousKeys__0`, or a
    family such as Federation__Providers for `…Providers__apple__Audiences__0` (a name of a-z, 0-9
    and -, then one of the family's fields, numbered or not)."""
    lower = name.lower()
    for s in specs:
        if s.name.lower() == lower:
            return s
    for s in specs:
        if re.fullmatch(re.escape(s.name.lower()) + r"__\d+", lower):
            return s
    for s in specs:
        fields = "|".join(re.escape(f.lower()) for f in s.fields)
        if fields and re.fullmatch(re.escape(s.name.lower()) + rf"__[a-z0-9-]+__(?:{fields})(?:__\d+)?", lower):
            return s
    return None


# A setting name the template builds at deployment: a string starting with the service's prefix
# and holding an interpolation, e.g. 'JwtRefreshToken__Federation__Providers__${p.name}__Issuer'.
BUILT_NAME = re.compile(r"'(JwtRefreshToken__[^'$]*\$\{[^']*)'")


def built_sample(name: str) -> str:
    """A concrete name of the shape a built name gives: every ${...} as 0 (a valid provider name
    and a valid index), so spec_for can place it."""
    return re.sub(r"\$\{[^}]*\}", "0", name)


# Naming rules of the resources main.bicep names (Azure's documented limits).
NAME_RULES = {
    "storage": (r"[a-z0-9]{3,24}", "3-24 lowercase letters and digits"),
    "keyVault": (r"(?!.*--)[A-Za-z][A-Za-z0-9-]{1,22}[A-Za-z0-9]", "3-24 letters, digits, single hyphens, starting with a letter"),
    "cosmos": (r"(?!.*--)[a-z0-9][a-z0-9-]{1,42}[a-z0-9]", "3-44 lowercase letters, digits, hyphens"),
    "functionApp": (r"(?!.*--)[a-z0-9][a-z0-9-]{0,58}[a-z0-9]", "2-60 letters, digits, hyphens"),
    "plan": (r"[A-Za-z0-9][A-Za-z0-9-]{0,38}[A-Za-z0-9]", "1-40 letters, digits, hyphens"),
    "logAnalytics": (r"[A-Za-z0-9][A-Za-z0-9-]{2,61}[A-Za-z0-9]", "4-63 letters, digits, hyphens"),
    "appInsights": (r"[^%&\\?/]{1,255}", "1-255 characters, no %&\\?/"),
    "identity": (r"[A-Za-z0-9][A-Za-z0-9_-]{2,127}", "3-128 letters, digits, hyphens, underscores"),
    "vnet": (r"[A-Za-z0-9][A-Za-z0-9_.-]{0,62}[A-Za-z0-9_]", "2-64 letters, digits, _.-"),
    # Microsoft.Communication: emailServices ^[a-zA-Z0-9-]+$, communicationServices ^[-\w]+$, both
    # 1-63 (Bicep types); the communication name is also the global host name <name>.<geo>.communication.azure.com.
    "emailService": (r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?", "1-63 letters, digits, hyphens, not at either end"),
    "communication": (r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?", "1-63 lowercase letters, digits, hyphens (a host name label)"),
}


def evaluate_name(expr: str, variables: dict[str, str]) -> str | None:
    """Evaluates the small subset of Bicep used for names: '...${var}...' strings and
    take(<string>, n). Returns None for anything else."""
    expr = expr.strip()
    m = re.fullmatch(r"take\((.*),\s*(\d+)\s*\)", expr, re.S)
    if m:
        inner = evaluate_name(m.group(1), variables)
        return None if inner is None else inner[: int(m.group(2))]
    m = re.fullmatch(r"'([^']*)'", expr)
    if m:
        out = m.group(1)
        for ref in re.findall(r"\$\{(\w+)\}", out):
            if ref not in variables:
                return None
            out = out.replace("${" + ref + "}", variables[ref])
        return out
    return variables.get(expr)


def evaluate_prefix(expr: str, raw: str) -> str | None:
    """Evaluates the prefix variable: toLower(...) and replace(x, 'a', 'b') around namePrefix."""
    expr = expr.strip()
    if expr == "namePrefix":
        return raw
    m = re.fullmatch(r"toLower\((.*)\)", expr, re.S)
    if m:
        inner = evaluate_prefix(m.group(1), raw)
        return None if inner is None else inner.lower()
    m = re.fullmatch(r"replace\((.*),\s*'([^']*)'\s*,\s*'([^']*)'\s*\)", expr, re.S)
    if m:
        inner = evaluate_prefix(m.group(1), raw)
        return None if inner is None else inner.replace(m.group(2), m.group(3))
    return None


# ------------------------------------------------------------------------------------------------
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


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--root", type=Path, default=Path(__file__).resolve().parent.parent, help="repository root")
    args = ap.parse_args(argv)
    repo = args.root.resolve()
    infra = repo / "infra"
    names_rs = repo / "src" / "settings" / "names.rs"
    main_path = infra / "main.bicep"
    params_path = infra / "main.bicepparam"
    example_path = repo / "local.settings.json.example"

    checks = Checks()
    for required in (main_path, params_path, names_rs, example_path):
        if not required.is_file():
            print(f"FAIL  inputs\n      - missing {required}")
            print("infra-check: 0 passed, 1 failed")
            return 1

    specs = read_setting_table(names_rs)
    main_bf = read_bicep(main_path)
    module_files: dict[str, BicepFile] = {}
    for symbol, (rel, _body) in main_bf.modules.items():
        p = (infra / rel).resolve()
        if p.is_file():
            module_files[symbol] = read_bicep(p)
    all_files = [main_bf] + list(module_files.values())
    for extra in sorted((infra / "modules").glob("*.bicep")):
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

    def passed_params(bf: BicepFile | None) -> dict[str, str]:
        sym = module_symbol(bf)
        return entries(get(main_bf.modules[sym][1], "params") or "") if sym else {}

    def own(bf: BicepFile | None, rtype: str) -> Resource | None:
        return next((r for r in (bf.resources_of(rtype) if bf else []) if not r.existing), None)

    app_bf = module_by_resource("Microsoft.Web/sites")
    cosmos_bf = module_by_resource("Microsoft.DocumentDB/databaseAccounts")
    kv_bf = module_by_resource("Microsoft.KeyVault/vaults")
    storage_bf = module_by_resource("Microsoft.Storage/storageAccounts")
    monitoring_bf = module_by_resource("Microsoft.Insights/components")
    network_bf = module_by_resource("Microsoft.Network/virtualNetworks")
    roles_bf = next((f for f in module_files.values() if f.resources_of("Microsoft.Authorization/roleAssignments")), None)
    identity = own(main_bf, "Microsoft.ManagedIdentity/userAssignedIdentities")

    # -- the Function App's app settings: union of the var objects named in the appsettings resource
    app_settings: dict[str, str] = {}
    built_names: list[str] = []  # names the template builds at deployment (BUILT_NAME), e.g. per provider
    settings_expr = ""

    def reached_text(expr: str, seen: set[str]) -> str:
        """The expression and the values of every variable it reaches, transitively."""
        out = [expr]
        for ident in re.findall(r"\b([A-Za-z_]\w*)\b", expr):
            value = app_bf.vars.get(ident)
            if value is not None and ident not in seen:
                seen.add(ident)
                out.append(reached_text(value, seen))
        return "\n".join(out)

    def collect_settings(expr: str, seen: set[str]) -> None:
        """Adds the keys of every object variable the expression reaches (through other variables).
        A variable that is no object literal but reaches setting names built from a parameter
        (the sign-in providers' sets) adds those names to built_names, and none of the objects it
        uses along the way (they are its inputs, not settings)."""
        for ident in re.findall(r"\b([A-Za-z_]\w*)\b", expr):
            value = app_bf.vars.get(ident)
            if value is None or ident in seen:
                continue
            seen.add(ident)
            if value.startswith("{"):
                app_settings.update(entries(block_after(value) or ""))
            elif names := BUILT_NAME.findall(reached_text(value, {ident})):
                built_names.extend(n for n in names if n not in built_names)
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
    app_params = passed_params(app_bf)

    def check_modules(problems: list[str]) -> None:
        if not main_bf.modules:
            problems.append("main.bicep declares no module")
        for symbol, (rel, body) in main_bf.modules.items():
            if not (infra / rel).is_file():
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
            for sym, out in re.findall(r"\b(\w+)!?\.outputs\.(\w+)", f.text):
                target = module_files.get(sym)
                if target is not None and out not in target.outputs:
                    problems.append(f"{f.path.name}: {sym}.outputs.{out} is not an output of {target.path.name}")

    def check_bicepparam(problems: list[str]) -> None:
        using, values = read_bicepparam(params_path)
        if using is None or (infra / using).resolve() != main_path.resolve():
            problems.append(f"main.bicepparam must start with using 'main.bicep' (found {using!r})")
        for name, value in values.items():
            prm = main_bf.params.get(name)
            if prm is not None and any(d.startswith("@secure") for d in prm.decorators) and not re.match(r"^(readEnvironmentVariable|getSecret|az\.getSecret)\(", value):
                problems.append(f"secure parameter {name} is given a literal in main.bicepparam")
            if "'*'" in value and name == "corsAllowedOrigins":
                problems.append("main.bicepparam allows every origin (*) in corsAllowedOrigins")

    def check_param_decorators(problems: list[str]) -> None:
        for f in all_files:
            for name, prm in f.params.items():
                if not any(d.startswith("@description(") for d in prm.decorators):
                    problems.append(f"{f.path.name}: param {name} has no @description")
        for f in all_files:
            for name, prm in f.params.items():
                if re.search(r"key|secret|password", name, re.I) and not re.search(r"(Name|Uri|Id)$", name) and prm.type == "string" and not any(d.startswith("@secure") for d in prm.decorators):
                    problems.append(f"{f.path.name}: param {name} looks secret but is not @secure()")
        # No secret value passes through the deployment: main.bicep takes none, Key Vault gets none.
        for name, prm in main_bf.params.items():
            if any(d.startswith("@secure") for d in prm.decorators):
                problems.append(f"main.bicep: @secure() param {name}: secrets are written by the deploy step, not passed to the template")
        for f in all_files:
            for r in f.resources_of("Microsoft.KeyVault/vaults/secrets"):
                problems.append(f"{f.path.name}: resource {r.symbol} writes a secret value into Key Vault from the template")
            for out, value in f.outputs.items():
                secure = [n for n, p in f.params.items() if any(d.startswith("@secure") for d in p.decorators)]
                for s in secure:
                    if re.search(rf"\b{s}\b", value):
                        problems.append(f"{f.path.name}: output {out} exposes the secure parameter {s}")
                if re.search(r"listKeys\(|listConnectionStrings\(|\.primaryKey|\.secondaryKey|InstrumentationKey", value):
                    problems.append(f"{f.path.name}: output {out} exposes a key")

    def check_api_versions(problems: list[str]) -> None:
        seen: dict[str, set[str]] = {}
        for f in all_files:
            for r in f.resources:
                stable = re.fullmatch(r"\d{4}-\d{2}-\d{2}", r.version)
                if not stable and not (r.type.lower() in PREVIEW_API_ALLOWED and re.fullmatch(r"\d{4}-\d{2}-\d{2}-preview", r.version)):
                    problems.append(f"{f.path.name}: {r.type}@{r.version} is not a stable API version")
                seen.setdefault(r.type.lower(), set()).add(r.version)
        for rtype, versions in seen.items():
            if len(versions) > 1:
                problems.append(f"{rtype} is used with several API versions: {sorted(versions)}")

    def check_naming(problems: list[str]) -> None:
        if "namePrefix" not in main_bf.params:
            problems.append("main.bicep has no namePrefix parameter")
            return
        if not re.search(r"uniqueString\(\s*resourceGroup\(\)\.id\s*\)", main_bf.text):
            problems.append("main.bicep does not derive names from uniqueString(resourceGroup().id)")
        names_var = main_bf.vars.get("names")
        if names_var is None:
            problems.append("main.bicep has no `var names = { ... }`")
            return
        name_exprs = entries(block_after(names_var) or "")
        maxlen = next((int(re.search(r"\d+", d).group()) for d in main_bf.params["namePrefix"].decorators if d.startswith("@maxLength")), None)
        minlen = next((int(re.search(r"\d+", d).group()) for d in main_bf.params["namePrefix"].decorators if d.startswith("@minLength")), None)
        if maxlen is None or minlen is None:
            problems.append("namePrefix has no @minLength/@maxLength")
            return
        token_len = 13  # uniqueString() is always 13 lowercase letters and digits
        # Worst cases a user may type: longest, shortest, with hyphens, capitals, leading digit.
        samples = ["a" * maxlen, "a" * minlen, "jwt-rt", "Jwt-R.t_", "ab--cd", "a-" * (maxlen // 2)]
        for raw in samples:
            raw = raw[:maxlen]
            prefix = evaluate_prefix(main_bf.vars.get("prefix", "namePrefix"), raw)
            if prefix is None:
                problems.append(f"cannot evaluate var prefix = {main_bf.vars.get('prefix')!r}")
                return
            variables = {"prefix": prefix, "token": "t" * (token_len - 1) + "0"}
            for key, (rule, words) in NAME_RULES.items():
                if key not in name_exprs:
                    problems.append(f"names.{key} is missing")
                    continue
                value = evaluate_name(name_exprs[key], variables)
                if value is None:
                    problems.append(f"names.{key} = {name_exprs[key]!r} cannot be evaluated")
                elif not re.fullmatch(rule, value):
                    problems.append(f"namePrefix {raw!r} gives names.{key} = {value!r}: not {words}")
        for key in name_exprs:
            if key not in NAME_RULES:
                problems.append(f"names.{key} has no naming rule in check.py")

    def check_setting_table(problems: list[str]) -> None:
        if not app_settings:
            problems.append("no appsettings resource (Microsoft.Web/sites/config 'appsettings') found in the Function App module")
            return
        for spec in specs:
            if spec.deploy == "Template" and spec_for(spec.name, [SettingSpec(k, "", False) for k in app_settings]) is None:
                problems.append(f"{spec.name} is Deploy::Template in names.rs but the template does not set it")
        for key in app_settings:
            spec = spec_for(key, specs)
            if key.startswith("JwtRefreshToken__") and spec is None:
                problems.append(f"the template sets {key}, which src/settings/names.rs does not list")
            if spec is not None and spec.deploy in {"Local", "Platform"}:
                problems.append(f"the template sets {key}, which names.rs marks Deploy::{spec.deploy}")
        for name in built_names:
            spec = spec_for(built_sample(name), specs)
            if spec is None:
                problems.append(f"the template builds {name}, which src/settings/names.rs does not list (as a family `<NAME>__<name>__<field>` or numbered `<NAME>__N`)")
            elif spec.deploy in {"Local", "Platform"} or spec.secret:
                problems.append(f"the template builds {name}, which names.rs marks {'secret' if spec.secret else 'Deploy::' + spec.deploy}")
        for key in KEYED_SETTINGS:
            if key in app_settings:
                problems.append(f"{key} must not be set (it needs a storage key)")
        for key in HOST_SETTINGS:
            if key not in app_settings:
                problems.append(f"host setting {key} is not set")
        if unquote(app_settings.get("AzureWebJobsStorage__credential")) != "managedidentity":
            problems.append("AzureWebJobsStorage__credential is not 'managedidentity'")

    def check_example_settings(problems: list[str]) -> None:
        values = json.loads(example_path.read_text(encoding="utf-8")).get("Values", {})
        for key in values:
            if key.startswith("JwtRefreshToken__") and spec_for(key, specs) is None:
                problems.append(f"local.settings.json.example has {key}, which src/settings/names.rs does not list")
        for spec in specs:
            if spec.deploy == "Template" and spec.name not in values:
                problems.append(f"local.settings.json.example lacks {spec.name} (Deploy::Template)")
        if values.get("FUNCTIONS_WORKER_RUNTIME") != "custom":
            problems.append("local.settings.json.example: FUNCTIONS_WORKER_RUNTIME is not custom")

    def check_key_vault_references(problems: list[str]) -> None:
        if kv_bf is None:
            problems.append("no Key Vault module")
            return
        kv_sym = module_symbol(kv_bf)
        vault = own(kv_bf, "Microsoft.KeyVault/vaults")
        secrets = [s for s in specs if s.secret and spec_for(s.name, [SettingSpec(k, "", False) for k in app_settings])]
        if not secrets:
            problems.append("the template sets none of the secret settings of names.rs")
        for spec in secrets:
            for key, value in app_settings.items():
                if spec_for(key, [spec]) is None:
                    continue
                m = re.fullmatch(r"'@Microsoft\.KeyVault\(SecretUri=\$\{(\w+)\}secrets/\$\{(\w+)\}\)'", value)
                if not m:
                    problems.append(f"{key} (secret in names.rs) is {value!r}, not '@Microsoft.KeyVault(SecretUri=${{vaultUri}}secrets/${{name}})'")
                    continue
                uri_src = app_params.get(m.group(1), "")
                um = re.fullmatch(r"(\w+)\.outputs\.(\w+)", uri_src)
                if not um or um.group(1) != kv_sym:
                    problems.append(f"{key}: vault URI {m.group(1)} is not fed from the Key Vault module (got {uri_src!r})")
                elif vault is None or kv_bf.outputs.get(um.group(2), "").strip() != f"{vault.symbol}.properties.vaultUri":
                    problems.append(f"{key}: Key Vault output {um.group(2)} is not the vault's properties.vaultUri")
                name_src = app_params.get(m.group(2), "")
                nm = re.fullmatch(r"(\w+)\.(\w+)", name_src)
                literal = entries(block_after(main_bf.vars.get(nm.group(1), "")) or "").get(nm.group(2)) if nm else None
                if not literal or not re.fullmatch(r"'[a-z0-9-]{1,127}'", literal):
                    problems.append(f"{key}: secret name {m.group(2)} = {name_src!r} is not a literal Key Vault secret name from a main.bicep variable")
        site = own(app_bf, "Microsoft.Web/sites")
        if site is None or (get(site.body, "properties.keyVaultReferenceIdentity") or "").strip() != "identityResourceId":
            problems.append("site properties.keyVaultReferenceIdentity is not the user-assigned identity (identityResourceId)")

    def check_key_vault(problems: list[str]) -> None:
        vault = own(kv_bf, "Microsoft.KeyVault/vaults")
        if vault is None:
            problems.append("no Key Vault resource")
            return
        for prop in ("enableRbacAuthorization", "enableSoftDelete", "enablePurgeProtection"):
            if get(vault.body, f"properties.{prop}") != "true":
                problems.append(f"Key Vault properties.{prop} is not true")

    def diagnostics(bf: BicepFile | None, target: str, categories: list[str], problems: list[str]) -> None:
        found = [r for r in (bf.resources_of("Microsoft.Insights/diagnosticSettings") if bf else []) if (get(r.body, "scope") or "").strip() == target]
        if not found:
            problems.append(f"{bf.path.name if bf else '?'}: no diagnostic setting on {target}")
            return
        for r in found:
            if not (get(r.body, "properties.workspaceId") or "").strip():
                problems.append(f"{bf.path.name}: diagnostic setting {r.symbol} sends nowhere (no workspaceId)")
            logs = get(r.body, "properties.logs") or ""
            for cat in categories:
                if not re.search(rf"category:\s*'{cat}'\s*\n\s*enabled:\s*true", logs):
                    problems.append(f"{bf.path.name}: diagnostic setting {r.symbol} does not enable {cat}")

    def check_diagnostics(problems: list[str]) -> None:
        vault = own(kv_bf, "Microsoft.KeyVault/vaults")
        account = own(cosmos_bf, "Microsoft.DocumentDB/databaseAccounts")
        diagnostics(kv_bf, vault.symbol if vault else "?", ["AuditEvent"], problems)
        diagnostics(cosmos_bf, account.symbol if account else "?", ["DataPlaneRequests", "ControlPlaneRequests"], problems)
        for bf in (kv_bf, cosmos_bf, storage_bf):
            src = passed_params(bf).get("logAnalyticsWorkspaceId", "")
            if not re.fullmatch(rf"{module_symbol(monitoring_bf)}\.outputs\.\w+", src):
                problems.append(f"{bf.path.name if bf else '?'}: logAnalyticsWorkspaceId is not the monitoring module's workspace")

    def check_cosmos_account(problems: list[str]) -> None:
        account = own(cosmos_bf, "Microsoft.DocumentDB/databaseAccounts")
        if account is None:
            problems.append("no Cosmos DB account resource")
            return
        expected = {
            "properties.disableLocalAuth": "true",
            "properties.disableKeyBasedMetadataWriteAccess": "true",
            "properties.minimalTlsVersion": "'Tls12'",
            "properties.consistencyPolicy.defaultConsistencyLevel": "'Session'",
        }
        for path, want in expected.items():
            got = get(account.body, path)
            if got != want:
                problems.append(f"Cosmos account {path} is {got!r}, expected {want}")
        if "EnableServerless" not in (get(account.body, "properties.capabilities") or ""):
            problems.append("Cosmos account has no EnableServerless capability option")
        value = app_settings.get("JwtRefreshToken__Cosmos__AccountEndpoint", "").strip()
        source = app_params.get(value, "")
        m = re.fullmatch(r"(\w+)\.outputs\.(\w+)", source)
        if not m or m.group(1) != module_symbol(cosmos_bf) or not re.fullmatch(r"\w+\.properties\.documentEndpoint", cosmos_bf.outputs.get(m.group(2), "")):
            problems.append(f"JwtRefreshToken__Cosmos__AccountEndpoint comes from {value!r} = {source!r}, not from the account's documentEndpoint")

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

    def check_identity(problems: list[str]) -> None:
        if identity is None:
            problems.append("main.bicep creates no user-assigned identity for the app")
            return
        sym = identity.symbol
        if app_params.get("identityResourceId", "").strip() != f"{sym}.id":
            problems.append(f"the Function App module does not get identityResourceId = {sym}.id")
        if app_params.get("identityClientId", "").strip() != f"{sym}.properties.clientId":
            problems.append(f"the Function App module does not get identityClientId = {sym}.properties.clientId")
        site = own(app_bf, "Microsoft.Web/sites")
        ident = get(site.body, "identity") if site else None
        if not ident or unquote(get(ident, "type")) != "UserAssigned" or "identityResourceId" not in (get(ident, "userAssignedIdentities") or ""):
            problems.append("the site's identity is not type UserAssigned with identityResourceId")
        for setting in ("AZURE_CLIENT_ID", "AzureWebJobsStorage__clientId"):
            if (app_settings.get(setting) or "").strip() != "identityClientId":
                problems.append(f"{setting} is not the identity's client id")
        roles_params = passed_params(roles_bf)
        if roles_params.get("appPrincipalId", "").strip() != f"{sym}.properties.principalId":
            problems.append(f"roles module: appPrincipalId is not {sym}.properties.principalId (the app's identity)")

    def check_cosmos_rbac(problems: list[str]) -> None:
        assignments = [(f, r) for f in all_files for r in f.resources_of("Microsoft.DocumentDB/databaseAccounts/sqlRoleAssignments")]
        if not assignments:
            problems.append("no Microsoft.DocumentDB/databaseAccounts/sqlRoleAssignments resource")
            return
        granted_to_app = False
        for f, r in assignments:
            role = (get(r.body, "properties.roleDefinitionId") or "").strip()
            scope = (get(r.body, "properties.scope") or "").strip()
            role_text = f.vars.get(role, role)
            scope_text = f.vars.get(scope, scope)
            role_text = " ".join([role_text] + [f.vars.get(v, "") for v in re.findall(r"\$\{(\w+)\}", role_text)])
            if COSMOS_DATA_CONTRIBUTOR not in role_text:
                problems.append(f"sqlRoleAssignment {r.symbol}: role is not Cosmos DB Built-in Data Contributor ({COSMOS_DATA_CONTRIBUTOR})")
            if "/sqlRoleDefinitions/" not in role_text:
                problems.append(f"sqlRoleAssignment {r.symbol}: roleDefinitionId is not <account id>/sqlRoleDefinitions/<id>")
            if "/dbs/" not in scope_text:
                problems.append(f"sqlRoleAssignment {r.symbol}: scope is not a database (<account id>/dbs/<name>)")
            if (get(r.body, "properties.principalId") or "").strip() == "appPrincipalId" and f is roles_bf:
                granted_to_app = True
        if not granted_to_app:
            problems.append("no Cosmos DB data-plane role assignment has principalId appPrincipalId (the app's identity)")

    def check_azure_rbac(problems: list[str]) -> None:
        if roles_bf is None:
            problems.append("no module with Microsoft.Authorization/roleAssignments")
            return
        existing = {r.symbol: r.type for r in roles_bf.resources if r.existing}
        role_vars = {v.strip("'"): k for k, v in roles_bf.vars.items() if re.fullmatch(r"'[0-9a-f-]{36}'", v)}
        for role, rid in ROLE_IDS.items():
            var = role_vars.get(rid)
            if var is None:
                problems.append(f"role {role} ({rid}) is not defined in {roles_bf.path.name}")
                continue
            hits = []
            for r in roles_bf.resources_of("Microsoft.Authorization/roleAssignments"):
                rd = get(r.body, "properties.roleDefinitionId") or ""
                list_var = next((k for k, v in roles_bf.vars.items() if v.startswith("[") and re.search(rf"\b{var}\b", v)), None)
                loops_over = list_var and re.search(rf"for\s+\w+\s+in\s+{list_var}\b", r.body + roles_bf.text[roles_bf.text.find(f"resource {r.symbol}"):][:300])
                if re.search(rf"\b{var}\b", rd) or loops_over:
                    hits.append(r)
            if not hits:
                problems.append(f"role {role} is never assigned")
            for r in hits:
                scope = (get(r.body, "scope") or "").strip()
                if existing.get(scope, "").lower() != ROLE_SCOPES[role].lower():
                    problems.append(f"role {role}: assignment {r.symbol} is scoped to {scope!r}, not the {ROLE_SCOPES[role]}")
                if (get(r.body, "properties.principalId") or "").strip() != "appPrincipalId":
                    problems.append(f"role {role}: assignment {r.symbol} is not for appPrincipalId")

    def check_order(problems: list[str]) -> None:
        sym_app, sym_roles = module_symbol(app_bf), module_symbol(roles_bf)
        if not sym_app or not sym_roles:
            problems.append("no Function App or roles module")
            return
        body = main_bf.modules[sym_app][1]
        depends = get(body, "dependsOn") or ""
        if not re.search(rf"\b{sym_roles}\b", depends) and not re.search(rf"\b{sym_roles}\.outputs\.", get(body, "params") or ""):
            problems.append(f"module {sym_app} neither dependsOn {sym_roles} nor reads its outputs: app settings could be applied before the role assignments")
        site = own(app_bf, "Microsoft.Web/sites")
        if site and get(site.body, "properties.siteConfig.appSettings"):
            problems.append("app settings inline in siteConfig: they must be the separate config/appsettings resource")
        if not any(unquote(get(r.body, "name")) == "appsettings" and (get(r.body, "parent") or "").strip() == (site.symbol if site else "") for r in (app_bf.resources_of("Microsoft.Web/sites/config") if app_bf else [])):
            problems.append("no config/appsettings child resource of the site")

    def check_monitoring(problems: list[str]) -> None:
        component = own(monitoring_bf, "Microsoft.Insights/components")
        if component is None:
            problems.append("no Application Insights component")
            return
        if get(component.body, "properties.DisableLocalAuth") != "true":
            problems.append("Application Insights properties.DisableLocalAuth is not true")
        if not get(component.body, "properties.WorkspaceResourceId"):
            problems.append("Application Insights is not workspace-based")
        auth = app_settings.get("APPLICATIONINSIGHTS_AUTHENTICATION_STRING", "")
        if not re.fullmatch(r"'ClientId=\$\{identityClientId\};Authorization=AAD'", auth.strip()):
            problems.append(f"APPLICATIONINSIGHTS_AUTHENTICATION_STRING is {auth!r}, not 'ClientId=${{identityClientId}};Authorization=AAD'")

    def check_function_app(problems: list[str]) -> None:
        site = own(app_bf, "Microsoft.Web/sites")
        if site is None:
            problems.append("no Function App resource")
            return
        if "linux" not in (get(site.body, "kind") or ""):
            problems.append("Function App kind is not Linux")
        if get(site.body, "properties.httpsOnly") != "true":
            problems.append("Function App httpsOnly is not true")
        flex = [v for v in app_bf.vars.values() if v.startswith("{") and get(block_after(v), "runtime.name")]
        if not any(unquote(get(block_after(v), "runtime.name")) == "custom" for v in flex):
            problems.append("Flex Consumption functionAppConfig.runtime.name is not 'custom'")
        sku_vars = [v for v in app_bf.vars.values() if v.startswith("{") and unquote(get(block_after(v), "name")) == "FC1"]
        if not sku_vars or unquote(get(block_after(sku_vars[0]), "tier")) != "FlexConsumption":
            problems.append("no FC1 / FlexConsumption plan SKU")
        if unquote(app_settings.get("FUNCTIONS_WORKER_RUNTIME")) != "custom":
            problems.append("FUNCTIONS_WORKER_RUNTIME is not 'custom' (Dedicated plan settings)")
        holder = next((n for n, v in app_bf.vars.items() if v.startswith("{") and "FUNCTIONS_WORKER_RUNTIME" in entries(block_after(v) or "")), None)
        if holder and not re.search(rf"\?\s*\{{\s*\}}\s*:\s*{holder}\b", settings_expr):
            problems.append(f"{holder} (FUNCTIONS_WORKER_RUNTIME) must be applied only off Flex Consumption (`isFlex ? {{}} : {holder}`), which rejects it")
        site_configs = [v for v in app_bf.vars.values() if v.startswith("{") and "minTlsVersion" in entries(block_after(v) or "")]
        if not site_configs or any(get(block_after(v), "minTlsVersion") != "'1.2'" for v in site_configs):
            problems.append("siteConfig minTlsVersion is not '1.2' on every plan")
        if not any(get(block_after(v), "ftpsState") == "'Disabled'" for v in site_configs):
            problems.append("no siteConfig sets ftpsState 'Disabled' (Dedicated plan)")
        policies = {unquote(get(r.body, "name")): r for r in app_bf.resources_of("Microsoft.Web/sites/basicPublishingCredentialsPolicies")}
        for kind in ("scm", "ftp"):
            r = policies.get(kind)
            if r is None or get(r.body, "properties.allow") != "false" or (get(r.body, "parent") or "").strip() != site.symbol:
                problems.append(f"basicPublishingCredentialsPolicies '{kind}' with allow: false is missing on the site")
        deploy_auth = [v for v in app_bf.vars.values() if v.startswith("{") and get(block_after(v), "deployment.storage.authentication.type")]
        if not deploy_auth or unquote(get(block_after(deploy_auth[0]), "deployment.storage.authentication.type")) != "UserAssignedIdentity":
            problems.append("Flex deployment storage does not authenticate with the user-assigned identity")

    def check_cors_and_scale(problems: list[str]) -> None:
        prm = main_bf.params.get("corsAllowedOrigins")
        if prm is None or prm.type != "array" or (prm.default or "").strip() != "[]":
            problems.append("main.bicep param corsAllowedOrigins (array, default []) is missing")
        if app_params.get("corsAllowedOrigins", "").strip() != "corsAllowedOrigins":
            problems.append("corsAllowedOrigins is not passed to the Function App module")
        cors_vars = [v for v in app_bf.vars.values() if v.startswith("{") and "allowedOrigins" in entries(block_after(v) or "")]
        if not cors_vars or get(block_after(cors_vars[0]), "supportCredentials") != "true":
            problems.append("no cors object with allowedOrigins and supportCredentials: true")
        else:
            origins = (get(block_after(cors_vars[0]), "allowedOrigins") or "").strip()
            guard = app_bf.vars.get(origins, "")
            if not re.search(r"contains\(\s*corsAllowedOrigins\s*,\s*'\*'\s*\)\s*\?", guard):
                problems.append(f"allowedOrigins ({origins}) does not refuse '*' (contains(corsAllowedOrigins, '*') ? <failure> : corsAllowedOrigins)")
        site_configs = [v for v in app_bf.vars.values() if v.startswith("{") and "minTlsVersion" in entries(block_after(v) or "")]
        for v in site_configs:
            if "cors" not in entries(block_after(v) or ""):
                problems.append("a siteConfig variable has no cors")
        prm = main_bf.params.get("alwaysReadyInstanceCount")
        if prm is None or (prm.default or "").strip() != "0":
            problems.append("main.bicep param alwaysReadyInstanceCount (default 0) is missing")
        scale = [v for v in app_bf.vars.values() if v.startswith("{") and get(block_after(v), "scaleAndConcurrency.alwaysReady")]
        if not scale:
            problems.append("scaleAndConcurrency.alwaysReady is not set")
        else:
            ar = get(block_after(scale[0]), "scaleAndConcurrency.alwaysReady").strip()
            text = " ".join(app_bf.vars.get(w, "") for w in re.findall(r"\w+", app_bf.vars.get(ar, ar))) + app_bf.vars.get(ar, "")
            if "'http'" not in text or "alwaysReadyInstanceCount" not in text:
                problems.append("alwaysReady does not name the 'http' group with alwaysReadyInstanceCount")

    def check_network(problems: list[str]) -> None:
        prm = main_bf.params.get("networkIsolation")
        if prm is None or prm.type != "bool" or (prm.default or "").strip() != "false":
            problems.append("main.bicep param networkIsolation (bool, default false) is missing")
        sym = module_symbol(network_bf)
        if sym is None:
            problems.append("no network module (virtual network)")
            return
        if not re.match(r"if\s*\(\s*networkIsolation\s*\)", main_bf.text[main_bf.text.find(f"module {sym} "):].split("=", 1)[1].strip()):
            problems.append(f"module {sym} is not deployed `if (networkIsolation)`")
        if "Microsoft.App/environments" not in network_bf.text:
            problems.append("the app subnet is not delegated to Microsoft.App/environments (Flex Consumption)")
        group_ids = set(re.findall(r"groupId:\s*'(\w+)'", network_bf.text))
        for g in ("blob", "queue", "table", "Sql"):
            if g not in group_ids:
                problems.append(f"no private endpoint for {g}")
        if not network_bf.resources_of("Microsoft.Network/privateDnsZones") or not network_bf.resources_of("Microsoft.Network/privateEndpoints/privateDnsZoneGroups"):
            problems.append("private endpoints without private DNS zones / zone groups")
        if not re.search(r"networkIsolation\s*\?\s*\w+!?\.outputs\.\w+", app_params.get("appSubnetId", "")):
            problems.append("the Function App does not get the app subnet when networkIsolation is on")
        for bf, rtype in ((storage_bf, "Microsoft.Storage/storageAccounts"), (cosmos_bf, "Microsoft.DocumentDB/databaseAccounts")):
            r = own(bf, rtype)
            pna = (get(r.body, "properties.publicNetworkAccess") if r else "") or ""
            if not re.fullmatch(r"networkIsolation\s*\?\s*'Disabled'\s*:\s*'Enabled'", pna.strip()):
                problems.append(f"{rtype}: publicNetworkAccess is {pna!r}, not networkIsolation ? 'Disabled' : 'Enabled'")
            if passed_params(bf).get("networkIsolation", "").strip() != "networkIsolation":
                problems.append(f"{bf.path.name if bf else rtype}: networkIsolation is not passed")

    def check_storage(problems: list[str]) -> None:
        account = own(storage_bf, "Microsoft.Storage/storageAccounts")
        if account is None:
            problems.append("no storage account resource")
            return
        if get(account.body, "properties.allowSharedKeyAccess") != "false":
            problems.append("storage allowSharedKeyAccess is not false")
        if get(account.body, "properties.allowBlobPublicAccess") != "false":
            problems.append("storage allowBlobPublicAccess is not false")

    def check_email(problems: list[str]) -> None:
        prm = main_bf.params.get("sendEmail")
        if prm is None or prm.type != "bool" or (prm.default or "").strip() != "false":
            problems.append("main.bicep param sendEmail (bool, default false) is missing: a first deployment must need no e-mail domain")
        email_bf = module_by_resource("Microsoft.Communication/communicationServices")
        sym = module_symbol(email_bf)
        if email_bf is None or sym is None:
            problems.append("no module with a Microsoft.Communication/communicationServices resource")
            return
        head = main_bf.text[main_bf.text.find(f"module {sym} "):].split("=", 1)[1].strip()
        if not re.match(r"if\s*\(\s*sendEmail\s*\)", head):
            problems.append(f"module {sym} is not deployed `if (sendEmail)`")
        service = own(email_bf, "Microsoft.Communication/emailServices")
        domain = own(email_bf, "Microsoft.Communication/emailServices/domains")
        acs = own(email_bf, "Microsoft.Communication/communicationServices")
        if service is None or domain is None:
            problems.append(f"{email_bf.path.name}: no Microsoft.Communication/emailServices with a domains child")
            return
        for r in (service, domain, acs):
            if unquote(get(r.body, "location")) != "global":
                problems.append(f"{email_bf.path.name}: {r.type} {r.symbol} location is not 'global'")
        if (get(domain.body, "parent") or "").strip() != service.symbol or unquote(get(domain.body, "name")) != "AzureManagedDomain":
            problems.append(f"{email_bf.path.name}: the domain is not the email service's child 'AzureManagedDomain'")
        if unquote(get(domain.body, "properties.domainManagement")) != "AzureManaged":
            problems.append(f"{email_bf.path.name}: domainManagement is not 'AzureManaged' (a first deployment needs no DNS)")
        if unquote(get(domain.body, "properties.userEngagementTracking")) != "Disabled":
            problems.append(f"{email_bf.path.name}: userEngagementTracking is not 'Disabled' (mails carry one-time codes)")
        if (get(acs.body, "properties.dataLocation") or "").strip() != (get(service.body, "properties.dataLocation") or "?").strip():
            problems.append(f"{email_bf.path.name}: the Communication Services and email service dataLocation differ (a domain links only within its geography)")
        if not re.search(rf"\b{domain.symbol}\.id\b", get(acs.body, "properties.linkedDomains") or ""):
            problems.append(f"{email_bf.path.name}: linkedDomains does not hold {domain.symbol}.id")
        role_vars = {k for k, v in email_bf.vars.items() if v.strip("'") == COMMUNICATION_EMAIL_OWNER}
        granted = False
        for r in email_bf.resources_of("Microsoft.Authorization/roleAssignments"):
            rd = get(r.body, "properties.roleDefinitionId") or ""
            if not (COMMUNICATION_EMAIL_OWNER in rd or any(re.search(rf"\b{v}\b", rd) for v in role_vars)):
                problems.append(f"{email_bf.path.name}: role assignment {r.symbol} is not Communication and Email Service Owner ({COMMUNICATION_EMAIL_OWNER})")
                continue
            if (get(r.body, "scope") or "").strip() != acs.symbol:
                problems.append(f"{email_bf.path.name}: role assignment {r.symbol} is not scoped to the Communication Services resource {acs.symbol}")
            elif (get(r.body, "properties.principalId") or "").strip() == "appPrincipalId" and unquote(get(r.body, "properties.principalType")) == "ServicePrincipal":
                granted = True
        if not granted:
            problems.append("the app's identity (appPrincipalId, ServicePrincipal) gets no Communication and Email Service Owner role on the Communication Services resource")
        if identity and passed_params(email_bf).get("appPrincipalId", "").strip() != f"{identity.symbol}.properties.principalId":
            problems.append(f"module {sym}: appPrincipalId is not {identity.symbol}.properties.principalId (the app's identity)")
        # App settings: one object with Transport 'acs', one with 'none', chosen by sendEmail.
        holders = {n: entries(block_after(v) or "") for n, v in app_bf.vars.items() if v.startswith("{") and "JwtRefreshToken__Email__Transport" in entries(block_after(v) or "")}
        on = next((n for n, e in holders.items() if unquote(e["JwtRefreshToken__Email__Transport"]) == "acs"), None)
        off = next((n for n, e in holders.items() if unquote(e["JwtRefreshToken__Email__Transport"]) == "none"), None)
        if on is None or off is None:
            problems.append("no pair of app-settings objects with JwtRefreshToken__Email__Transport 'acs' and 'none'")
            return
        if not re.search(rf"\bsendEmail\s*\?\s*{on}\s*:\s*{off}\b", reached_text(settings_expr, set())):
            problems.append(f"the app settings do not take `sendEmail ? {on} : {off}`")
        if app_params.get("sendEmail", "").strip() != "sendEmail":
            problems.append("sendEmail is not passed to the Function App module")
        wanted = {
            "JwtRefreshToken__Email__Acs__Endpoint": r"'https://\$\{\w+\.properties\.hostName\}'",
            "JwtRefreshToken__Email__From": r".*\bmailFromSenderDomain\b.*",
        }
        for setting, output_rule in wanted.items():
            value = holders[on].get(setting, "").strip()
            m = re.fullmatch(rf"sendEmail\s*\?\s*{sym}!?\.outputs\.(\w+)\s*:\s*''", app_params.get(value, "").strip())
            if not m or not re.fullmatch(output_rule, email_bf.outputs.get(m.group(1), ""), re.S):
                problems.append(f"{setting} is not fed from module {sym} (sendEmail ? {sym}!.outputs.<x> : '' with <x> matching {output_rule})")

    def check_outputs(problems: list[str]) -> None:
        for name in REQUIRED_OUTPUTS:
            if name not in main_bf.outputs:
                problems.append(f"main.bicep has no output {name}")
        token_url = main_bf.outputs.get("tokenUrl", "")
        if not re.fullmatch(r"'https://\$\{\w+\.outputs\.defaultHostName\}/api/token'", token_url.strip()):
            problems.append(f"output tokenUrl is {token_url!r}, not 'https://${{<app>.outputs.defaultHostName}}/api/token'")

    checks.run("every module path exists, module params and outputs line up", check_modules)
    checks.run("main.bicepparam: using main.bicep, no secret literal, no CORS wildcard", check_bicepparam)
    checks.run("every param has @description; no secret passes through the deployment or its outputs", check_param_decorators)
    checks.run("stable API versions, one per resource type", check_api_versions)
    checks.run("names from namePrefix + uniqueString fit each resource's naming rules", check_naming)
    checks.run("names.rs: every Template setting is set, only listed JwtRefreshToken__ settings (built names too), no Local/Platform ones", check_setting_table)
    checks.run("local.settings.json.example matches names.rs", check_example_settings)
    checks.run("every secret setting of names.rs the template sets is a Key Vault reference", check_key_vault_references)
    checks.run("Key Vault: RBAC authorization, soft delete, purge protection", check_key_vault)
    checks.run("diagnostic settings: Key Vault AuditEvent, Cosmos DataPlaneRequests to Log Analytics", check_diagnostics)
    checks.run("Cosmos account: disableLocalAuth, Tls12, Session, serverless option, documentEndpoint", check_cosmos_account)
    checks.run("containers tokens (/userId) and users (/id): defaultTtl -1, minimal indexing", check_containers)
    checks.run("one user-assigned identity for the site, its settings and its roles", check_identity)
    checks.run(f"Cosmos Built-in Data Contributor ({COSMOS_DATA_CONTRIBUTOR}) on the database for the app's identity", check_cosmos_rbac)
    checks.run("storage, queue, table, Key Vault and Monitoring Metrics Publisher roles, each on its resource", check_azure_rbac)
    checks.run("app settings applied after the role assignments", check_order)
    checks.run("Application Insights: local auth off, Entra ID ingestion with the app's identity", check_monitoring)
    checks.run("Function App: Linux custom runtime on FC1, HTTPS only, TLS 1.2, no basic publishing credentials", check_function_app)
    checks.run("CORS (explicit origins, credentials, * refused) and always-ready instances", check_cors_and_scale)
    checks.run("networkIsolation: VNet integration, private endpoints with DNS, public access off", check_network)
    checks.run("storage: no shared keys, no public blobs", check_storage)
    checks.run("sendEmail: ACS Email (managed domain, no tracking, linked) and its send role only when on; app settings acs/none", check_email)
    checks.run("main.bicep outputs", check_outputs)
    return checks.report()


if __name__ == "__main__":
    sys.exit(main())
