#!/usr/bin/env python3
"""Dry runs of scripts/deploy.sh and scripts/teardown.sh against a fake Azure (no network).

scripts/fake_azure.py stands in for `az`, `curl` and `handler` (linked under those names into a
directory first on PATH); it records every call (argv, stdin or not) and keeps Azure's state
between calls and runs. Each test runs the real script and asserts on the recorded calls:

- the order: bicep build -> runtime check -> what-if -> create -> secrets -> references -> publish;
- no generated secret and no admin password appears in any argv, nor in the script's output;
  secrets reach az as a mode-600 file, removed when the script ends;
- a missing required variable fails before any az call, naming the variable;
- a region without the custom Flex runtime stops before the resource group and the deployment;
- Forbidden on the first secret set is retried, then succeeds; Forbidden for good stops, bounded;
- a second run changes nothing it need not (no new secret, role, user, or resource group);
- --what-if-only changes nothing; teardown deletes the group and explains the purge-protected vault.

Usage: python3 scripts/test_deploy.py   (standard library only; bash and the scripts' own tools)
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import unittest
import uuid
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
DEPLOY = REPO / "scripts" / "deploy.sh"
TEARDOWN = REPO / "scripts" / "teardown.sh"
FAKE = REPO / "scripts" / "fake_azure.py"
OPERATOR = "1b2c3d4e-0000-4000-8000-00000000abcd"


class FakeAzure:
    """A temporary directory with the fake tools on PATH and their state."""

    def __init__(self, tmp: Path) -> None:
        self.dir = tmp / "fake"
        self.bin = tmp / "bin"
        self.dist = tmp / "dist"
        self.dir.mkdir()
        self.bin.mkdir()
        for name in ("az", "curl", "handler"):
            (self.bin / name).symlink_to(FAKE)
        (self.dist / "functionapp").mkdir(parents=True)
        (self.dist / "functionapp.zip").write_bytes(b"PK\x05\x06" + b"\0" * 18)
        # A password with every character that would break hand-built JSON or a shell word.
        self.password = f"pw-{uuid.uuid4().hex}-\"quote'\\back$HOME`x` ü"
        self.password_file = tmp / "admin-password"
        self.password_file.write_text(self.password + "\n", encoding="utf-8")
        self.password_file.chmod(0o600)

    def env(self, **extra: str) -> dict[str, str]:
        env = {
            "PATH": f"{self.bin}:{os.environ.get('PATH', '/usr/bin:/bin')}",
            "HOME": os.environ.get("HOME", "/tmp"),
            "TMPDIR": str(self.dir.parent),
            "FAKE_DIR": str(self.dir),
            "AZURE_RESOURCE_GROUP": "jwt-test-rg",
            "AZURE_LOCATION": "swedencentral",
            "OPERATOR_PRINCIPAL_ID": OPERATOR,
            "ADMIN_PASSWORD_FILE": str(self.password_file),
            "HANDLER": str(self.bin / "handler"),
            "DIST": str(self.dist),
            "DEPLOY_RETRY_SECONDS": "0",
        }
        env.update(extra)
        return {k: v for k, v in env.items() if v is not None}

    def run(self, script: Path, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
        return subprocess.run(["bash", str(script), *args], env=env or self.env(), stdin=subprocess.DEVNULL,
                              capture_output=True, text=True, timeout=120)

    def calls(self, prog: str | None = None) -> list[dict]:
        path = self.dir / "calls.jsonl"
        if not path.exists():
            return []
        rows = [json.loads(line) for line in path.read_text().splitlines()]
        return [r for r in rows if prog is None or r["prog"] == prog]

    def reset_log(self) -> None:
        (self.dir / "calls.jsonl").unlink(missing_ok=True)

    def state(self) -> dict:
        return json.loads((self.dir / "state.json").read_text())

    def secrets(self) -> list[str]:
        path = self.dir / "secrets.txt"
        return path.read_text().split() if path.exists() else []


def command(call: dict) -> str:
    """The az command words of a call, e.g. 'deployment group create'."""
    words = []
    for a in call["argv"]:
        if a.startswith("-"):
            break
        words.append(a)
    return " ".join(words)


class DeployTest(unittest.TestCase):
    def setUp(self) -> None:
        self._tmp = tempfile.TemporaryDirectory()
        self.tmp = Path(self._tmp.name)
        self.fake = FakeAzure(self.tmp)

    def tearDown(self) -> None:
        self._tmp.cleanup()

    def deploy(self, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
        return self.fake.run(DEPLOY, "--skip-package", *args, env=self.fake.env(**env))

    def assert_ok(self, result: subprocess.CompletedProcess[str]) -> None:
        self.assertEqual(result.returncode, 0, f"exit {result.returncode}\nstdout:\n{result.stdout}\nstderr:\n{result.stderr}")

    def az_commands(self) -> list[str]:
        return [command(c) for c in self.fake.calls("az")]

    # ------------------------------------------------------------------ the full run

    def test_full_run_calls_az_in_order_and_ends_with_urls_and_issuer(self) -> None:
        result = self.deploy()
        self.assert_ok(result)
        cmds = self.az_commands()
        order = ["bicep build", "functionapp list-flexconsumption-runtimes", "group create", "deployment group what-if",
                 "deployment group create", "deployment group show", "keyvault secret list", "keyvault secret set",
                 "rest", "functionapp deployment source config-zip", "cosmosdb sql role assignment create"]
        positions = [cmds.index(c) for c in order]
        self.assertEqual(positions, sorted(positions), f"az calls out of order: {cmds}")
        self.assertLess(cmds.index("deployment group what-if"), cmds.index("deployment group create"))
        self.assertEqual(cmds.count("keyvault secret set"), 2)
        state = self.fake.state()
        self.assertEqual(state["published"], 1)
        self.assertIn("admin", state["users"])
        self.assertIn("App URL      https://jwtrt-func-fake0000000001.azurewebsites.net", result.stdout)
        self.assertIn("Issuer       https://jwtrt-func-fake0000000001.azurewebsites.net/api", result.stdout)
        curls = [c["argv"] for c in self.fake.calls("curl")]
        self.assertTrue(any(u.endswith("/api/jwks") for a in curls for u in a), curls)
        self.assertTrue(any(u.endswith("/api/token") for a in curls for u in a), curls)

    def test_no_secret_or_password_in_any_argv_or_output(self) -> None:
        result = self.deploy()
        self.assert_ok(result)
        secrets = self.fake.secrets()
        self.assertEqual(len(secrets), 2, "expected a signing key and a rotation secret")
        # The distinctive parts of the password too, in case only a piece of it leaked.
        needles = secrets + [self.fake.password, self.fake.password.split("-")[1]]
        for call in self.fake.calls():
            joined = "\0".join(call["argv"])
            for needle in needles:
                self.assertNotIn(needle, joined, f"a secret is on the command line of {call['prog']}: {call['argv']}")
            self.assertNotIn("--value", call["argv"], "secrets go to az with --file, never --value")
        for needle in needles:
            self.assertNotIn(needle, result.stdout + result.stderr, "a secret was printed")

    def test_secrets_go_through_a_private_file_that_is_removed_and_arrive_intact(self) -> None:
        self.assert_ok(self.deploy())
        sets = [c for c in self.fake.calls("az") if command(c) == "keyvault secret set"]
        for call in sets:
            self.assertEqual(call["file_mode"], 0o600, f"secret file mode {oct(call['file_mode'])}")
            self.assertFalse(Path(call["file"]).exists(), f"{call['file']} was left behind")
        stored = self.fake.state()["secrets"]
        signing, rotation = self.fake.secrets()
        self.assertEqual(stored["jwt-algorithm-key"], f"-----BEGIN PRIVATE KEY-----\n{signing}\n-----END PRIVATE KEY-----")
        self.assertEqual(stored["jwt-rotation-secret"], rotation, "the rotation secret must be HS256 material, no newline")
        keys = [c["argv"] for c in self.fake.calls("handler") if c["argv"][:2] == ["keys", "generate"]]
        self.assertEqual(keys, [["keys", "generate", "--algorithm", "ES256"], ["keys", "generate", "--algorithm", "HS256"]])
        self.assertEqual([p for p in self.tmp.glob("jwt-deploy.*")], [], "the private work directory was not removed")

    def test_admin_password_reaches_the_handler_and_the_login_on_stdin(self) -> None:
        self.assert_ok(self.deploy())
        self.assertEqual(self.fake.state()["users"]["admin"], self.fake.password)
        add = [c for c in self.fake.calls("handler") if c["argv"][:2] == ["user", "add"]]
        self.assertEqual(len(add), 1)
        self.assertTrue(add[0]["stdin"])
        login = [c for c in self.fake.calls("curl") if any(a.endswith("/api/token") for a in c["argv"])]
        self.assertTrue(login and all(c["stdin"] for c in login), "the login body must come on stdin")

    # ------------------------------------------------------------------ fail fast

    def test_a_missing_required_variable_fails_before_any_az_call_and_names_it(self) -> None:
        for name in ("AZURE_RESOURCE_GROUP", "AZURE_LOCATION", "OPERATOR_PRINCIPAL_ID"):
            for value in (None, ""):
                with self.subTest(name=name, value=value):
                    self.fake.reset_log()
                    env = self.fake.env()
                    if value is None:
                        del env[name]
                    else:
                        env[name] = value
                    result = self.fake.run(DEPLOY, "--skip-package", env=env)
                    self.assertNotEqual(result.returncode, 0)
                    self.assertIn(name, result.stderr)
                    self.assertEqual(self.fake.calls("az"), [], "az was called before the variables were checked")

    def test_an_operator_id_that_is_not_a_guid_fails_before_any_az_call(self) -> None:
        result = self.deploy(OPERATOR_PRINCIPAL_ID="alice@example.com")
        self.assertNotEqual(result.returncode, 0)
        self.assertIn("OPERATOR_PRINCIPAL_ID is not an object id", result.stderr)
        self.assertEqual(self.fake.calls("az"), [])

    def test_no_password_and_no_terminal_fails_before_any_az_call(self) -> None:
        env = self.fake.env()
        del env["ADMIN_PASSWORD_FILE"]
        result = self.fake.run(DEPLOY, "--skip-package", env=env)
        self.assertNotEqual(result.returncode, 0)
        self.assertIn("ADMIN_PASSWORD_FILE", result.stderr)
        self.assertEqual(self.fake.calls("az"), [])

    def test_a_region_without_the_custom_runtime_stops_before_anything_is_created(self) -> None:
        for mode in ("none", "error"):
            with self.subTest(runtimes=mode):
                self.fake.reset_log()
                result = self.deploy(FAKE_RUNTIMES=mode)
                self.assertNotEqual(result.returncode, 0)
                self.assertIn("swedencentral", result.stderr)
                cmds = self.az_commands()
                self.assertIn("functionapp list-flexconsumption-runtimes", cmds)
                for forbidden in ("group create", "deployment group what-if", "deployment group create"):
                    self.assertNotIn(forbidden, cmds)
        self.assertIn("does not offer the custom runtime", self.deploy(FAKE_RUNTIMES="none").stderr)

    # ------------------------------------------------------------------ propagation

    def test_forbidden_on_the_first_secret_set_is_retried_then_succeeds(self) -> None:
        result = self.deploy(FAKE_FORBIDDEN_SETS="1")
        self.assert_ok(result)
        sets = [c for c in self.fake.calls("az") if command(c) == "keyvault secret set"]
        self.assertEqual([c["rc"] for c in sets], [1, 0, 0])
        self.assertEqual(sets[0]["argv"], sets[1]["argv"], "the retry must set the same secret")
        self.assertIn("Forbidden (role assignment not propagated yet), attempt 1 of", result.stdout)
        self.assertEqual(len(self.fake.secrets()), 2, "a retry must not generate a second key")

    def test_forbidden_for_good_stops_after_the_bounded_retries_with_a_clear_message(self) -> None:
        result = self.deploy(FAKE_FORBIDDEN_SETS="100", DEPLOY_RETRIES="3")
        self.assertNotEqual(result.returncode, 0)
        self.assertIn("still answers Forbidden after 3 attempts", result.stderr)
        self.assertIn(OPERATOR, result.stderr)
        cmds = self.az_commands()
        self.assertEqual(cmds.count("keyvault secret set"), 3)
        self.assertNotIn("functionapp deployment source config-zip", cmds, "published without its secrets")

    # ------------------------------------------------------------------ idempotent

    def test_a_second_run_keeps_secrets_user_and_roles(self) -> None:
        self.assert_ok(self.deploy())
        first = self.fake.state()
        self.fake.reset_log()
        result = self.deploy()
        self.assert_ok(result)
        second = self.fake.state()
        cmds = self.az_commands()
        self.assertEqual(second["secrets"], first["secrets"], "a re-run replaced a secret")
        self.assertEqual(second["users"], first["users"])
        self.assertEqual(len(second["cosmos_roles"]), 1)
        for absent in ("group create", "keyvault secret set", "cosmosdb sql role assignment create"):
            self.assertNotIn(absent, cmds, f"a re-run repeated {absent}")
        self.assertEqual([c for c in self.fake.calls("handler") if c["argv"][:2] in (["user", "add"], ["keys", "generate"])], [])
        self.assertIn("deployment group create", cmds, "the template is re-applied (incremental)")
        self.assertIn("secret jwt-rotation-secret exists: kept", result.stdout)
        self.assertIn("user admin exists: kept", result.stdout)

    def test_a_resource_group_in_another_region_is_refused(self) -> None:
        self.assert_ok(self.deploy())
        self.fake.reset_log()
        result = self.deploy(AZURE_LOCATION="westeurope")
        self.assertNotEqual(result.returncode, 0)
        self.assertIn("exists in 'swedencentral'", result.stderr)
        self.assertNotIn("deployment group create", self.az_commands())

    # ------------------------------------------------------------------ dry mode

    def test_what_if_only_creates_and_changes_nothing(self) -> None:
        env = self.fake.env()
        del env["ADMIN_PASSWORD_FILE"]  # not needed for a dry run
        result = self.fake.run(DEPLOY, "--what-if-only", env=env)
        self.assert_ok(result)
        self.assertIn("does not exist; what-if needs one", result.stdout)
        self.assertNotIn("group create", self.az_commands())
        # With the resource group in place, what-if runs and nothing after it.
        self.assert_ok(self.deploy())
        self.fake.reset_log()
        result = self.fake.run(DEPLOY, "--what-if-only", env=env)
        self.assert_ok(result)
        cmds = self.az_commands()
        self.assertEqual(cmds[-1], "deployment group what-if", cmds)
        self.assertIn("Resource changes: 22 to create.", result.stdout)

    # ------------------------------------------------------------------ teardown

    def test_teardown_deletes_the_group_purges_what_it_can_and_explains_the_rest(self) -> None:
        self.assert_ok(self.deploy())
        self.fake.reset_log()
        result = self.fake.run(TEARDOWN, "--yes", env=self.fake.env())
        self.assert_ok(result)
        cmds = self.az_commands()
        self.assertIn("group delete", cmds)
        purges = [c["argv"] for c in self.fake.calls("az") if command(c) == "keyvault purge"]
        self.assertEqual(purges, [["keyvault", "purge", "--name", "kvother", "--location", "swedencentral"]],
                         "only the vault without purge protection can be purged")
        self.assertIn("kvjwtrtfake0000000001 is soft-deleted with purge protection", result.stdout)
        self.assertIn("2027-03-02", result.stdout)
        self.assertIn("az keyvault recover -n kvjwtrtfake0000000001", result.stdout)
        # Again: nothing left to delete, and it says so.
        again = self.fake.run(TEARDOWN, "--yes", env=self.fake.env())
        self.assert_ok(again)
        self.assertIn("does not exist", again.stdout)

    def test_teardown_without_confirmation_or_group_refuses(self) -> None:
        self.assert_ok(self.deploy())
        self.fake.reset_log()
        result = self.fake.run(TEARDOWN, env=self.fake.env())
        self.assertNotEqual(result.returncode, 0)
        self.assertIn("--yes", result.stderr)
        self.assertNotIn("group delete", self.az_commands())
        env = self.fake.env()
        del env["AZURE_RESOURCE_GROUP"]
        result = self.fake.run(TEARDOWN, "--yes", env=env)
        self.assertNotEqual(result.returncode, 0)
        self.assertIn("AZURE_RESOURCE_GROUP", result.stderr)


if __name__ == "__main__":
    result = unittest.main(exit=False, verbosity=2).result
    failed = len(result.failures) + len(result.errors)
    print(f"deploy-test: {result.testsRun - failed - len(result.skipped)} passed, {failed} failed")
    sys.exit(1 if failed else 0)
