#!/usr/bin/env python3
"""Runs checkov's Bicep rules over infra/ and fails on any parsing error, any failed check, and
any skip without a written reason (`// checkov:skip=CKV_...: reason` inside the resource).

Usage: python3 infra/checkov_gate.py [--root DIR]    (checkov from the same environment)
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path


def report_version(reports: list) -> str:
    return next((r.get("summary", {}).get("checkov_version", "") for r in reports if isinstance(r, dict)), "")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--root", type=Path, default=Path(__file__).resolve().parent.parent)
    args = ap.parse_args(argv)
    infra = args.root.resolve() / "infra"
    checkov = Path(sys.executable).with_name("checkov")
    cmd = [str(checkov), "-d", str(infra), "--framework", "bicep", "--skip-download", "-o", "json"]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    try:
        report = json.loads(proc.stdout)
    except json.JSONDecodeError:
        print(f"checkov produced no JSON (exit {proc.returncode}):\n{proc.stdout[-2000:]}\n{proc.stderr[-2000:]}")
        print("checkov: 0 passed, 1 failed")
        return 1
    reports = report if isinstance(report, list) else [report]
    passed, failed, skipped, parsing = [], [], [], []
    for r in reports:
        if not isinstance(r, dict) or "results" not in r:
            continue  # e.g. {"passed": 0, ...} summary when nothing was scanned
        res = r["results"]
        passed += res.get("passed_checks", [])
        failed += res.get("failed_checks", [])
        skipped += res.get("skipped_checks", [])
        parsing += res.get("parsing_errors", [])
        summary = r.get("summary", {})
        if summary.get("parsing_errors"):
            parsing += [f"{summary['parsing_errors']} file(s) (summary)"] if not res.get("parsing_errors") else []
    problems = []
    for f in parsing:
        problems.append(f"parsing error: {f}")
    for c in failed:
        problems.append(f"{c['check_id']} {c['check_name']}: {c['resource']} ({c['file_path']}:{c['file_line_range'][0]})")
    for c in skipped:
        reason = (c.get("check_result", {}).get("suppress_comment") or "").strip()
        if len(reason) < 10 or reason.lower().startswith("no comment"):
            problems.append(f"{c['check_id']} skipped without a written reason: {c['resource']} ({c['file_path']})")
    if not passed and not failed and not skipped:
        problems.append("checkov checked nothing: no Bicep resource found")
    for p in problems:
        print(f"FAIL  {p}")
    for c in skipped:
        print(f"skip  {c['check_id']} {c['resource']}: {c['check_result'].get('suppress_comment', '').strip()[:110]}")
    print(f"checkov {report_version(reports)}: parsing errors {len(parsing)}, failed checks {len(failed)}, skips without a reason {len(problems) - len(parsing) - len(failed)}")
    print(f"checkov: {len(passed)} passed, {len(problems)} failed, {len(skipped)} skipped")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
