#!/usr/bin/env python3
"""Checks the package scripts/package.sh wrote (run it first): what the Functions host gets.

- the handler needs no glibc symbol version above 2.28 (the oldest Functions Linux image);
- dist/functionapp.zip holds exactly host.json, handler and each top-level folder with a
  function.json (discovered, not listed here), and dist/functionapp/ the same files;
- handler is mode 0755 in the zip's external attributes (Unix), the rest is not executable;
- the handler taken out of the zip starts and answers the host's readiness probe GET / with 200;
- .funcignore leaves the same set when `func azure functionapp publish` runs at the repository root.

Usage: python3 scripts/test_package.py   (standard library + binutils' readelf)
"""

from __future__ import annotations

import http.client
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import unittest
import zipfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
DIST = REPO / "dist"
ZIP = DIST / "functionapp.zip"
APP = DIST / "functionapp"
MAX_GLIBC = (2, 28)


def function_folders(root: Path) -> list[str]:
    return sorted(p.parent.name for p in root.glob("*/function.json") if p.parent.name not in {"dist", "target"})


def expected_entries() -> set[str]:
    entries = {"host.json", "handler"}
    for name in function_folders(REPO):
        entries.update(str(p.relative_to(REPO)) for p in (REPO / name).rglob("*") if p.is_file())
    return entries


def glibc_versions_needed(binary: Path) -> list[tuple[int, ...]]:
    """GLIBC_x.y versions in the ELF's version-needed section (.gnu.version_r), via readelf -V."""
    out = subprocess.run(["readelf", "-V", "--wide", str(binary)], check=True, capture_output=True, text=True).stdout
    needed = out.split("Version needs section", 1)
    if len(needed) < 2:
        return []
    section = needed[1].split("\nVersion ", 1)[0]
    return sorted({tuple(int(x) for x in v.split(".")) for v in re.findall(r"Name: GLIBC_([0-9]+(?:\.[0-9]+)*)", section)})


class FuncIgnore:
    """The rules core tools apply to .funcignore (Azure/azure-functions-core-tools,
    src/Cli/func/Common/GitIgnoreParser.cs, a port of codemix/gitignore-parser): every pattern is
    anchored at the start of the path relative to the app root and must end at a word boundary;
    `*` matches within one path segment, `**` across segments; `!pattern` re-includes."""

    def __init__(self, text: str) -> None:
        positive, negative = [], []
        for line in (raw.strip() for raw in text.split("\n")):
            if not line or line.startswith("#"):
                continue
            target = positive
            if line.startswith("!"):
                target, line = negative, line[1:]
            target.append(line[1:] if line.startswith("/") else line)
        self.positive = self._compile(positive)
        self.negative = self._compile(negative)

    @staticmethod
    def _compile(patterns: list[str]) -> re.Pattern[str]:
        if not patterns:
            return re.compile(r"$^")
        def one(p: str) -> str:
            escaped = re.sub(r"[\-\[\]/{}()+?.\\^$|]", lambda m: "\\" + m.group(0), p)
            return escaped.replace("**", "(.+)").replace("*", "([^/]+)")
        return re.compile("^((" + ")|(".join(one(p) for p in sorted(patterns)) + r"))\b", re.ASCII)

    def accepts(self, path: str) -> bool:
        return bool(self.negative.search(path)) or not self.positive.search(path)


def published_from_root(root: Path, rules: FuncIgnore) -> set[str]:
    """Files core tools would zip from root: it skips .git/.vscode folders and the files
    .funcignore, .gitignore, local.settings.json, project.lock.json by name, then applies the rules."""
    files = set()
    for dirpath, dirnames, filenames in os.walk(root):
        rel_dir = os.path.relpath(dirpath, root)
        rel_dir = "" if rel_dir == "." else rel_dir + "/"
        # A folder the rules deny as a prefix has every file under it denied (no `!` rules here).
        dirnames[:] = [d for d in dirnames if d not in {".git", ".vscode"} and rules.accepts(f"{rel_dir}{d}/x")]
        for f in filenames:
            if f.lower() in {".funcignore", ".gitignore", "local.settings.json", "project.lock.json"}:
                continue
            rel = rel_dir + f
            if rules.accepts(rel):
                files.add(rel)
    return files


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class PackageTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls) -> None:
        if not ZIP.is_file():
            raise unittest.SkipTest(f"{ZIP} is missing: run scripts/package.sh first")

    def test_handler_needs_no_glibc_newer_than_2_28(self) -> None:
        versions = glibc_versions_needed(APP / "handler")
        self.assertTrue(versions, "no GLIBC_ version needed at all: is this a glibc (gnu) binary?")
        highest = max(versions)
        print(f"\n      highest GLIBC_ symbol version needed: {'.'.join(map(str, highest))}", file=sys.stderr)
        self.assertLessEqual(highest, MAX_GLIBC, f"handler needs GLIBC_{'.'.join(map(str, highest))}")

    def test_zip_holds_exactly_host_json_handler_and_the_function_folders(self) -> None:
        expected = expected_entries()
        self.assertGreaterEqual(len(function_folders(REPO)), 1)
        with zipfile.ZipFile(ZIP) as z:
            names = z.namelist()
        self.assertEqual(len(names), len(set(names)), "duplicate entries")
        self.assertEqual(set(names), expected)
        on_disk = {str(p.relative_to(APP)) for p in APP.rglob("*") if p.is_file()}
        self.assertEqual(on_disk, expected, "dist/functionapp/ differs from the zip")

    def test_handler_is_executable_in_the_zip_and_nothing_else_is(self) -> None:
        with zipfile.ZipFile(ZIP) as z:
            for info in z.infolist():
                mode = info.external_attr >> 16
                self.assertEqual(info.create_system, 3, f"{info.filename}: not marked as made on Unix")
                if info.filename == "handler":
                    self.assertEqual(mode & 0o777, 0o755, f"handler mode {oct(mode)}")
                else:
                    self.assertEqual(mode & 0o111, 0, f"{info.filename} is executable ({oct(mode)})")
        self.assertTrue(os.access(APP / "handler", os.X_OK))

    def test_the_handler_from_the_zip_answers_the_readiness_probe(self) -> None:
        with tempfile.TemporaryDirectory() as tmp:
            root = Path(tmp) / "app"
            with zipfile.ZipFile(ZIP) as z:
                z.extractall(root)
                mode = z.getinfo("handler").external_attr >> 16
            handler = root / "handler"
            os.chmod(handler, mode & 0o777)  # what the platform does with the external attributes
            store = Path(tmp) / "store"
            store.mkdir()
            port = free_port()
            env = {
                "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
                "HOME": tmp,
                "FUNCTIONS_CUSTOMHANDLER_PORT": str(port),
                "JwtRefreshToken__Embedded__Path": str(store),
                "RUST_LOG": "warn",
            }
            proc = subprocess.Popen([str(handler), "--dev"], cwd=root, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
            try:
                deadline = time.monotonic() + 20
                status = None
                while time.monotonic() < deadline and proc.poll() is None:
                    try:
                        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
                        conn.request("GET", "/")
                        status = conn.getresponse().status
                        conn.close()
                        break
                    except OSError:
                        time.sleep(0.05)
                output = b""
                if proc.poll() is not None:
                    output = proc.stdout.read() if proc.stdout else b""
                self.assertEqual(status, 200, f"GET / -> {status}; exit {proc.poll()}; output: {output[-2000:]!r}")
            finally:
                if proc.stdout:
                    proc.stdout.close()
                proc.terminate()
                try:
                    proc.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()

    def test_funcignore_leaves_the_same_set_at_the_repository_root(self) -> None:
        rules = FuncIgnore((REPO / ".funcignore").read_text(encoding="utf-8"))
        uploaded = published_from_root(REPO, rules)
        # At the root, `func` publishes the handler that package.sh built once it is copied there.
        uploaded.add("handler")
        self.assertEqual(uploaded, expected_entries())


class GlibcReaderTest(unittest.TestCase):
    def test_the_reader_sees_the_newer_glibc_of_a_binary_built_on_this_machine(self) -> None:
        host = tuple(int(x) for x in os.confstr("CS_GNU_LIBC_VERSION").split()[1].split("."))
        if host <= MAX_GLIBC:
            self.skipTest(f"this machine's glibc {host} is not newer than 2.28")
        versions = glibc_versions_needed(Path(shutil.which("ls") or "/bin/ls"))
        self.assertGreater(max(versions), MAX_GLIBC, f"ls on glibc {host} needs only {versions}")


class FuncIgnoreRulesTest(unittest.TestCase):
    def test_rules_follow_core_tools(self) -> None:
        rules = FuncIgnore("target\n*.pem\n/src\n!keep.pem\n")
        self.assertFalse(rules.accepts("target/release/handler"))
        self.assertFalse(rules.accepts("key.pem"))
        self.assertTrue(rules.accepts("keep.pem"))
        self.assertFalse(rules.accepts("src/main.rs"))
        self.assertTrue(rules.accepts("token/function.json"))
        self.assertTrue(rules.accepts("targets.txt"))  # a prefix must end at a word boundary, as in core tools
        self.assertTrue(rules.accepts("targetx/a"))


if __name__ == "__main__":
    result = unittest.main(exit=False, verbosity=2).result
    failed = len(result.failures) + len(result.errors)
    print(f"package-test: {result.testsRun - failed - len(result.skipped)} passed, {failed} failed")
    sys.exit(1 if failed or result.skipped else 0)
