#!/usr/bin/env python3
"""Strict syntax gate for infra/ without the Bicep compiler.

- Every .bicep file is parsed with the tree-sitter Bicep grammar (PyPI tree-sitter-bicep, pinned
  in infra/requirements.txt); any ERROR or MISSING node fails the gate, with its line and column.
- Every .bicepparam file: its `using` target must exist; every `param` it sets must be declared
  in that template; every template param without a default must be set. Its values are parsed with
  the same grammar (each `param x = value` read as `var x = value`), so a broken value fails too.

Usage: python3 infra/syntax_gate.py [--root DIR]   (DIR: a repository copy; default: this repository)
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

import tree_sitter_bicep
from tree_sitter import Language, Node, Parser

PARSER = Parser(Language(tree_sitter_bicep.language()))


def syntax_problems(source: bytes) -> list[str]:
    tree = PARSER.parse(source)
    problems: list[str] = []
    stack: list[Node] = [tree.root_node]
    while stack:
        node = stack.pop()
        if node.is_missing:
            problems.append(f"line {node.start_point[0] + 1}, column {node.start_point[1] + 1}: missing {node.type!r}")
        elif node.is_error:
            text = source[node.start_byte : node.end_byte].decode("utf-8", "replace").strip().splitlines()
            snippet = text[0][:60] if text else ""
            problems.append(f"line {node.start_point[0] + 1}, column {node.start_point[1] + 1}: syntax error near {snippet!r}")
        stack.extend(reversed(node.children))
    if tree.root_node.has_error and not problems:
        problems.append("the parser reports an error it could not locate")
    return problems


def template_params(source: bytes) -> dict[str, bool]:
    """name -> has a default, from the parse tree's parameter declarations."""
    tree = PARSER.parse(source)
    params: dict[str, bool] = {}
    for node in tree.root_node.children:
        if node.type != "parameter_declaration":
            continue
        ident = next((c for c in node.children if c.type == "identifier"), None)
        if ident is None:
            continue
        name = source[ident.start_byte : ident.end_byte].decode()
        params[name] = any(c.type == "=" for c in node.children)
    return params


PARAM_LINE = re.compile(r"^param\s+([A-Za-z_]\w*)\s*=", re.M)
USING = re.compile(r"^using\s+'([^']+)'\s*$", re.M)


def bicepparam_problems(path: Path) -> list[str]:
    text = path.read_text(encoding="utf-8")
    problems: list[str] = []
    usings = USING.findall(text)
    if len(usings) != 1:
        return [f"expected exactly one `using '<template>.bicep'` line, found {len(usings)}"]
    template = (path.parent / usings[0]).resolve()
    if not template.is_file():
        return [f"using {usings[0]!r}: {template} does not exist"]
    declared = template_params(template.read_bytes())
    set_here = PARAM_LINE.findall(text)
    for name in sorted({n for n in set_here if set_here.count(n) > 1}):
        problems.append(f"param {name} is set more than once")
    for name in set_here:
        if name not in declared:
            problems.append(f"param {name} is not declared in {template.name}")
    for name, has_default in declared.items():
        if not has_default and name not in set_here:
            problems.append(f"{template.name} requires param {name} (no default), which this file does not set")
    # The values, as Bicep expressions: `param x = v` has the shape of `var x = v`.
    as_bicep = USING.sub(lambda m: "//" + " " * (len(m.group(0)) - 2), text)
    as_bicep = re.sub(r"^param(\s+[A-Za-z_]\w*\s*=)", r"var  \1", as_bicep, flags=re.M)
    problems.extend(syntax_problems(as_bicep.encode("utf-8")))
    if not set_here and not declared:
        problems.append("no param at all")
    return problems


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--root", type=Path, default=Path(__file__).resolve().parent.parent)
    args = ap.parse_args(argv)
    infra = args.root.resolve() / "infra"
    bicep = sorted(infra.rglob("*.bicep"))
    params = sorted(infra.rglob("*.bicepparam"))
    if not bicep:
        print(f"syntax-gate: no .bicep file under {infra}")
        print("syntax-gate: 0 passed, 1 failed")
        return 1
    passed = failed = 0
    for path, check in [(p, lambda p: syntax_problems(p.read_bytes())) for p in bicep] + [(p, bicepparam_problems) for p in params]:
        problems = check(path)
        rel = path.relative_to(infra.parent)
        if problems:
            failed += 1
            print(f"FAIL  {rel}")
            for p in problems:
                print(f"      - {p}")
        else:
            passed += 1
            print(f"ok    {rel}")
    print(f"syntax-gate: {passed} passed, {failed} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
