"""After scripts/fuzz.sh: every operation of openapi.yaml must have answered 2xx at least once.

Usage: python scripts/fuzz_check.py openapi.yaml STATUS_RECORD   (the record fuzz_hooks.py wrote)
Prints one line per operation (statuses seen, with counts) and exits 1 if any operation never
answered 2xx (or was never called): then the fuzzer did not get past the door there. Answers to
another method than the operation's are recorded as `METHOD status` (an OPTIONS preflight's 204,
schemathesis' unsupported-method probes) and are shown, but are not the operation's 2xx.
"""

import json
import sys

import yaml

METHODS = ("get", "put", "post", "delete", "options", "head", "patch", "trace")


def main(spec_path: str, record_path: str) -> int:
    with open(spec_path, encoding="utf-8") as f:
        spec = yaml.safe_load(f)
    with open(record_path, encoding="utf-8") as f:
        record = json.load(f)
    statuses = record["statuses"]
    missing = []
    for path, item in spec["paths"].items():
        for method in METHODS:
            if method not in item:
                continue
            operation = item[method]["operationId"]
            seen = statuses.get(operation, {})
            ok = sum(n for s, n in seen.items() if s.startswith("2"))
            shown = ", ".join(f"{s}×{n}" for s, n in sorted(seen.items())) or "never called"
            print(f"fuzz: {method.upper()} {path} ({operation}): {shown}")
            # An operation whose success needs what the fuzzer cannot make (a provider's signed ID
            # token) says why; it must still have been called and answered only as documented.
            exempt = item[method].get("x-fuzz-no-2xx")
            if exempt and seen:
                print(f"fuzz:   no 2xx expected: {exempt}")
                continue
            if not ok:
                missing.append(f"{method.upper()} {path} ({operation})")
    print(f"fuzz: auth helper: {record.get('helper', {})}")
    if missing:
        print(f"fuzz: no 2xx answer from {len(missing)} operation(s): {'; '.join(missing)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:]))
