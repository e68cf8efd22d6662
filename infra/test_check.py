#!/usr/bin/env python3
"""Broken-template tests: each test copies infra/, src/settings/names.rs and
local.settings.json.example into a temporary repository, breaks one fact, and asserts that the
gate responsible for it fails (and that the unmodified copy passes every gate). A check that
stayed green on its broken fact would be decoration, not a check.

Usage: .venv/bin/python infra/test_check.py     (needs the packages of infra/requirements.txt)
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import tempfile
import unittest
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
PY = sys.executable


def run(script: str, root: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([PY, str(REPO / "infra" / script), "--root", str(root)], capture_output=True, text=True)


class BrokenTemplates(unittest.TestCase):
    def setUp(self) -> None:
        self._tmp = tempfile.TemporaryDirectory()
        self.root = Path(self._tmp.name)
        shutil.copytree(REPO / "infra", self.root / "infra", ignore=shutil.ignore_patterns("__pycache__"))
        (self.root / "src" / "settings").mkdir(parents=True)
        shutil.copy(REPO / "src" / "settings" / "names.rs", self.root / "src" / "settings" / "names.rs")
        shutil.copy(REPO / "local.settings.json.example", self.root / "local.settings.json.example")

    def tearDown(self) -> None:
        self._tmp.cleanup()

    # -- helpers

    def edit(self, rel: str, old: str, new: str, count: int = 1) -> None:
        path = self.root / rel
        text = path.read_text(encoding="utf-8")
        self.assertIn(old, text, f"{rel}: the text to break is not there any more: {old!r}")
        path.write_text(text.replace(old, new, count), encoding="utf-8")

    def remove_resource(self, rel: str, symbol: str) -> None:
        path = self.root / rel
        text = path.read_text(encoding="utf-8")
        m = re.search(rf"(?ms)^resource {symbol} .*?^\}}\n", text)
        self.assertIsNotNone(m, f"{rel}: resource {symbol} not found")
        path.write_text(text[: m.start()] + text[m.end() :], encoding="utf-8")

    def assert_fails(self, script: str, *needles: str) -> None:
        result = run(script, self.root)
        out = result.stdout + result.stderr
        self.assertNotEqual(result.returncode, 0, f"{script} passed on a broken template:\n{out}")
        for needle in needles:
            self.assertIn(needle, out, f"{script} failed, but not with {needle!r}:\n{out}")

    def assert_passes(self, script: str) -> None:
        result = run(script, self.root)
        self.assertEqual(result.returncode, 0, f"{script} failed:\n{result.stdout}{result.stderr}")

    # -- the unmodified copy

    def test_unmodified_copy_passes_every_gate(self) -> None:
        for script in ("syntax_gate.py", "check.py", "checkov_gate.py"):
            self.assert_passes(script)

    def test_a_new_optional_setting_in_names_rs_needs_no_template_change(self) -> None:
        self.edit(
            "src/settings/names.rs",
            "pub const ALL: &[Setting] = &[\n",
            'pub const CORS_ORIGINS: &str = "JwtRefreshToken__Cors__AllowedOrigins";\n'
            "pub const ALL: &[Setting] = &[\n    Setting::new(CORS_ORIGINS, Deploy::Optional),\n",
        )
        self.assert_passes("check.py")

    # -- syntax

    def test_missing_brace_fails_the_syntax_gate(self) -> None:
        self.edit("infra/modules/cosmos.bicep", "    consistencyPolicy: {\n      defaultConsistencyLevel: 'Session'\n    }\n", "    consistencyPolicy: {\n      defaultConsistencyLevel: 'Session'\n")
        self.assert_fails("syntax_gate.py", "FAIL  infra/modules/cosmos.bicep")

    def test_unterminated_string_fails_the_syntax_gate(self) -> None:
        self.edit("infra/main.bicep", "output tokenUrl string = 'https://", "output tokenUrl string = 'https://${")
        self.assert_fails("syntax_gate.py", "FAIL  infra/main.bicep")

    def test_bicepparam_with_an_undeclared_param_fails(self) -> None:
        self.edit("infra/main.bicepparam", "param namePrefix = 'jwtrt'\n", "param namePrefix = 'jwtrt'\nparam jwtAlgorithmKey = 'x'\n")
        self.assert_fails("syntax_gate.py", "param jwtAlgorithmKey is not declared in main.bicep")

    def test_bicepparam_without_a_required_param_fails(self) -> None:
        self.edit("infra/main.bicepparam", "param jwtAudience = 'api://example-app'\n", "")
        self.assert_fails("syntax_gate.py", "requires param jwtAudience")

    def test_bicepparam_with_a_broken_value_fails(self) -> None:
        self.edit("infra/main.bicepparam", "param tags = {\n", "param tags = {{\n")
        self.assert_fails("syntax_gate.py", "FAIL  infra/main.bicepparam")

    # -- local auth

    def test_cosmos_local_auth_on_fails_the_facts_check_and_checkov(self) -> None:
        self.edit("infra/modules/cosmos.bicep", "disableLocalAuth: true", "disableLocalAuth: false")
        self.assert_fails("check.py", "properties.disableLocalAuth is 'false'")
        self.assert_fails("checkov_gate.py", "CKV_AZURE_140")

    def test_app_insights_local_auth_on_fails(self) -> None:
        self.edit("infra/modules/monitoring.bicep", "DisableLocalAuth: true", "DisableLocalAuth: false")
        self.assert_fails("check.py", "DisableLocalAuth is not true")

    def test_storage_shared_keys_on_fails(self) -> None:
        self.edit("infra/modules/storage.bicep", "allowSharedKeyAccess: false", "allowSharedKeyAccess: true")
        self.assert_fails("check.py", "allowSharedKeyAccess is not false")

    def test_basic_publishing_credentials_on_fails(self) -> None:
        text = (self.root / "infra/modules/functionapp.bicep").read_text()
        start = text.index("resource scmBasicAuth")
        self.edit("infra/modules/functionapp.bicep", text[start : text.index("}\n}\n", start) + 4], text[start : text.index("}\n}\n", start) + 4].replace("allow: false", "allow: true"))
        self.assert_fails("check.py", "basicPublishingCredentialsPolicies 'scm'")

    # -- roles

    def test_cosmos_role_assignment_removed_fails(self) -> None:
        self.remove_resource("infra/modules/roles.bicep", "cosmosRoleAssignment")
        self.edit("infra/modules/roles.bicep", "output cosmosRoleAssignmentId string = cosmosRoleAssignment.id\n", "")
        self.assert_fails("check.py", "sqlRoleAssignments")

    def test_cosmos_role_for_another_principal_fails(self) -> None:
        self.edit("infra/modules/roles.bicep", "    principalId: appPrincipalId\n    scope: cosmosScope", "    principalId: operatorPrincipalId\n    scope: cosmosScope")
        self.assert_fails("check.py", "principalId appPrincipalId")

    def test_key_vault_role_removed_fails(self) -> None:
        self.remove_resource("infra/modules/roles.bicep", "keyVaultRoleAssignment")
        self.assert_fails("check.py", "role Key Vault Secrets User is never assigned")

    def test_monitoring_role_removed_fails(self) -> None:
        self.remove_resource("infra/modules/roles.bicep", "monitoringRoleAssignment")
        self.assert_fails("check.py", "role Monitoring Metrics Publisher is never assigned")

    def test_app_settings_no_longer_wait_for_the_roles_fails(self) -> None:
        self.edit("infra/main.bicep", "  dependsOn: [\n    roles\n  ]\n", "")
        self.assert_fails("check.py", "neither dependsOn roles")

    # -- settings

    def test_a_setting_the_handler_needs_dropped_fails(self) -> None:
        self.edit("infra/modules/functionapp.bicep", "  JwtRefreshToken__Cosmos__AccountEndpoint: cosmosEndpoint\n", "")
        self.assert_fails("check.py", "JwtRefreshToken__Cosmos__AccountEndpoint is Deploy::Template")

    def test_a_new_template_setting_in_names_rs_fails_until_the_template_sets_it(self) -> None:
        self.edit(
            "src/settings/names.rs",
            "pub const ALL: &[Setting] = &[\n",
            'pub const NEW_ONE: &str = "JwtRefreshToken__Descriptor__NewOne";\npub const ALL: &[Setting] = &[\n    Setting::new(NEW_ONE, Deploy::Template),\n',
        )
        self.assert_fails("check.py", "JwtRefreshToken__Descriptor__NewOne is Deploy::Template")

    def test_a_setting_not_in_names_rs_fails(self) -> None:
        self.edit("infra/modules/functionapp.bicep", "  JwtRefreshToken__Login__LockoutMs:", "  JwtRefreshToken__Login__LockoutMinutes: '15'\n  JwtRefreshToken__Login__LockoutMs:")
        self.assert_fails("check.py", "JwtRefreshToken__Login__LockoutMinutes, which src/settings/names.rs does not list")

    def test_a_local_setting_set_by_the_template_fails(self) -> None:
        self.edit("infra/modules/functionapp.bicep", "  JwtRefreshToken__Login__LockoutMs:", "  JwtRefreshToken__Embedded__Path: '/tmp'\n  JwtRefreshToken__Login__LockoutMs:")
        self.assert_fails("check.py", "marks Deploy::Local")

    def test_a_platform_setting_set_by_the_template_fails(self) -> None:
        self.edit("infra/modules/functionapp.bicep", "  AZURE_CLIENT_ID: identityClientId\n", "  AZURE_CLIENT_ID: identityClientId\n  FUNCTIONS_CUSTOMHANDLER_PORT: '8080'\n")
        self.assert_fails("check.py", "marks Deploy::Platform")

    def test_a_secret_as_plain_value_fails(self) -> None:
        self.edit(
            "infra/modules/functionapp.bicep",
            "JwtRefreshToken__Rotation__Secret: '@Microsoft.KeyVault(SecretUri=${keyVaultUri}secrets/${rotationSecretName})'",
            "JwtRefreshToken__Rotation__Secret: 'not-a-reference-0000000000000000000000'",
        )
        self.assert_fails("check.py", "JwtRefreshToken__Rotation__Secret (secret in names.rs)")

    def test_a_secret_value_written_by_the_template_fails(self) -> None:
        self.edit(
            "infra/modules/keyvault.bicep",
            "output name string = vault.name\n",
            "@secure()\n@description('x')\nparam rotationSecret string = ''\n\nresource s 'Microsoft.KeyVault/vaults/secrets@2024-11-01' = {\n  parent: vault\n  name: 'jwt-rotation-secret'\n  properties: {\n    value: rotationSecret\n  }\n}\n\noutput name string = vault.name\n",
        )
        self.assert_fails("check.py", "writes a secret value into Key Vault from the template")

    def test_example_settings_with_an_unknown_name_fail(self) -> None:
        self.edit("local.settings.json.example", '"JwtRefreshToken__Login__LockoutMs"', '"JwtRefreshToken__Login__LockoutMinutes": "15",\n    "JwtRefreshToken__Login__LockoutMs"')
        self.assert_fails("check.py", "local.settings.json.example has JwtRefreshToken__Login__LockoutMinutes")

    def test_example_settings_without_a_template_setting_fail(self) -> None:
        self.edit("local.settings.json.example", '    "JwtRefreshToken__Descriptor__Audience": "jwt-refresh-token-local",\n', "")
        self.assert_fails("check.py", "local.settings.json.example lacks JwtRefreshToken__Descriptor__Audience")

    def test_provider_settings_the_template_builds_are_listed_as_a_family(self) -> None:
        # The sign-in providers' names are built per entry of signInProviders; a concrete one in an
        # object is placed in the same family row of names.rs.
        self.edit("infra/modules/functionapp.bicep", "  JwtRefreshToken__Login__LockoutMs:", "  JwtRefreshToken__Federation__Providers__apple__Audiences__0: 'com.example.app'\n  JwtRefreshToken__Login__LockoutMs:")
        self.assert_passes("check.py")

    def test_a_built_provider_setting_with_an_unknown_field_fails(self) -> None:
        self.edit("infra/modules/functionapp.bicep", "__Audiences__${s.n}'", "__Audience__${s.n}'")
        self.assert_fails("check.py", "the template builds JwtRefreshToken__Federation__Providers__${providers[s.p].name}__Audience__${s.n}, which src/settings/names.rs does not list")

    def test_a_built_setting_outside_the_family_fails(self) -> None:
        self.edit("infra/modules/functionapp.bicep", "'JwtRefreshToken__Federation__Providers__${p.name}__Issuer'", "'JwtRefreshToken__Federation__Provider__${p.name}__Issuer'")
        self.assert_fails("check.py", "the template builds JwtRefreshToken__Federation__Provider__${p.name}__Issuer, which src/settings/names.rs does not list")

    # -- e-mail (sendEmail)

    def test_email_resources_deployed_without_send_email_fail(self) -> None:
        self.edit("infra/main.bicep", "module email 'modules/email.bicep' = if (sendEmail) {", "module email 'modules/email.bicep' = {")
        self.assert_fails("check.py", "module email is not deployed `if (sendEmail)`")

    def test_email_send_role_removed_fails(self) -> None:
        self.remove_resource("infra/modules/email.bicep", "sendRoleAssignment")
        self.assert_fails("check.py", "gets no Communication and Email Service Owner role")

    def test_email_engagement_tracking_on_fails(self) -> None:
        self.edit("infra/modules/email.bicep", "userEngagementTracking: 'Disabled'", "userEngagementTracking: 'Enabled'")
        self.assert_fails("check.py", "userEngagementTracking is not 'Disabled'")

    def test_email_transport_acs_without_send_email_fails(self) -> None:
        self.edit("infra/modules/functionapp.bicep", "var emailSettings = sendEmail ? emailAcsSettings : emailOffSettings", "var emailSettings = emailAcsSettings")
        self.assert_fails("check.py", "the app settings do not take `sendEmail ? emailAcsSettings : emailOffSettings`")

    def test_an_unsanitised_communication_name_fails(self) -> None:
        self.edit("infra/main.bicep", "communication: '${prefix}-acs-${token}'", "communication: '${namePrefix}-acs-${token}'")
        self.assert_fails("check.py", "names.communication")

    # -- options and naming

    def test_cors_wildcard_guard_removed_fails(self) -> None:
        self.edit("infra/modules/functionapp.bicep", "contains(corsAllowedOrigins, '*') ?", "contains(corsAllowedOrigins, 'none') ?")
        self.assert_fails("check.py", "does not refuse '*'")

    def test_cors_wildcard_in_the_parameters_fails(self) -> None:
        self.edit("infra/main.bicepparam", "param corsAllowedOrigins = []", "param corsAllowedOrigins = [\n  '*'\n]")
        self.assert_fails("check.py", "allows every origin")

    def test_public_network_access_always_on_fails(self) -> None:
        self.edit("infra/modules/cosmos.bicep", "publicNetworkAccess: networkIsolation ? 'Disabled' : 'Enabled'", "publicNetworkAccess: 'Enabled'")
        self.assert_fails("check.py", "Microsoft.DocumentDB/databaseAccounts: publicNetworkAccess")

    def test_a_key_vault_name_with_a_double_hyphen_fails(self) -> None:
        self.edit("infra/main.bicep", "keyVault: take('kv${prefix}${token}', 24)", "keyVault: take('kv-${namePrefix}-${token}', 24)")
        self.assert_fails("check.py", "names.keyVault")

    def test_an_unsanitised_prefix_fails(self) -> None:
        self.edit("infra/main.bicep", "var prefix = toLower(replace(replace(replace(replace(namePrefix, '-', ''), '_', ''), '.', ''), ' ', ''))", "var prefix = namePrefix")
        self.assert_fails("check.py", "names.storage")

    def test_flex_runtime_not_custom_fails(self) -> None:
        self.edit("infra/modules/functionapp.bicep", "    name: 'custom'\n    version: '1.0'", "    name: 'node'\n    version: '20'")
        self.assert_fails("check.py", "runtime.name is not 'custom'")

    def test_diagnostics_without_audit_events_fail(self) -> None:
        self.edit("infra/modules/keyvault.bicep", "category: 'AuditEvent'", "category: 'AzurePolicyEvaluationDetails'")
        self.assert_fails("check.py", "does not enable AuditEvent")

    def test_a_checkov_skip_without_a_reason_fails(self) -> None:
        text = (self.root / "infra/modules/keyvault.bicep").read_text()
        line = next(l for l in text.splitlines() if "checkov:skip=CKV_AZURE_189" in l)
        self.edit("infra/modules/keyvault.bicep", line, "  // checkov:skip=CKV_AZURE_189")
        self.assert_fails("checkov_gate.py", "CKV_AZURE_189 skipped without a written reason")

    def test_a_security_rule_broken_without_a_skip_fails_checkov(self) -> None:
        self.edit("infra/modules/storage.bicep", "minimumTlsVersion: 'TLS1_2'", "minimumTlsVersion: 'TLS1_0'")
        self.assert_fails("checkov_gate.py", "CKV_AZURE_44")


if __name__ == "__main__":
    result = unittest.main(exit=False, verbosity=2).result
    failed = len(result.failures) + len(result.errors)
    print(f"broken-template-tests: {result.testsRun - failed} passed, {failed} failed")
    sys.exit(1 if failed else 0)
