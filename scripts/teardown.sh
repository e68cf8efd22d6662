#!/usr/bin/env bash
# Removes what scripts/deploy.sh created: the resource group (every resource and role assignment
# in it), then the soft-deleted Key Vault.
#
#   AZURE_RESOURCE_GROUP=jwt-refresh-token-prod scripts/teardown.sh [--yes]
#
# Deleting a vault only soft-deletes it. A vault without purge protection is purged here, which
# frees its name at once. The template's vault has purge protection on (it cannot be turned off):
# Azure refuses to purge it, so the vault stays soft-deleted, and its globally unique name stays
# taken, for its retention period (softDeleteRetentionInDays, 90 days by default; Microsoft:
# "Azure Key Vault soft-delete overview"). The same resource group name gives the same vault name
# (uniqueString(resourceGroup().id)), so deploying there again within that time fails on the name:
# recover the vault instead (az keyvault recover -n <name>, then run scripts/deploy.sh), or deploy
# to another resource group or with another namePrefix.
#
# Safe to run again: a missing resource group is skipped and the soft-deleted vaults are listed.
set -euo pipefail

YES=false
for arg in "$@"; do
    case "$arg" in
        --yes | -y) YES=true ;;
        *)
            echo "usage: AZURE_RESOURCE_GROUP=<rg> scripts/teardown.sh [--yes]" >&2
            exit 2
            ;;
    esac
done

say() { printf 'teardown: %s\n' "$*"; }
fail() {
    printf 'teardown: error: %s\n' "$*" >&2
    exit 1
}

[[ -n "${AZURE_RESOURCE_GROUP:-}" ]] || fail "required variable not set: AZURE_RESOURCE_GROUP (the resource group scripts/deploy.sh used)"
RG=$AZURE_RESOURCE_GROUP
command -v az >/dev/null 2>&1 || fail "az is not installed"
command -v python3 >/dev/null 2>&1 || fail "python3 is not installed"

umask 077
WORK=$(mktemp -d "${TMPDIR:-/tmp}/jwt-teardown.XXXXXX")
trap 'rm -rf "$WORK"' EXIT

if [[ "$(az group exists --name "$RG")" == true ]]; then
    az keyvault list --resource-group "$RG" -o json >"$WORK/vaults.json"
    if ! $YES; then
        [[ -t 0 ]] || fail "not a terminal: pass --yes to delete resource group $RG without a question"
        read -rp "Delete resource group $RG and everything in it (sessions, accounts, secrets)? Type its name: " answer
        [[ "$answer" == "$RG" ]] || fail "not confirmed; nothing was deleted"
    fi
    say "deleting resource group $RG (several minutes)"
    az group delete --name "$RG" --yes
    say "resource group $RG deleted"
else
    say "resource group $RG does not exist (already deleted?)"
    echo '[]' >"$WORK/vaults.json"
fi

# Soft-deleted vaults that belonged to this resource group (the ones just deleted included).
az keyvault list-deleted --resource-type vault -o json >"$WORK/deleted.json"
python3 - "$WORK/deleted.json" "$RG" >"$WORK/mine.tsv" <<'PY'
import json, sys
rg = "/resourcegroups/" + sys.argv[2].lower() + "/"
for v in json.load(open(sys.argv[1], encoding="utf-8")):
    p = v.get("properties", {})
    if rg in (p.get("vaultId") or "").lower():
        print("\t".join([v["name"], p.get("location", ""), str(bool(p.get("purgeProtectionEnabled"))).lower(), p.get("scheduledPurgeDate", "")]))
PY

if [[ ! -s "$WORK/mine.tsv" ]]; then
    say "no soft-deleted Key Vault of $RG"
    exit 0
fi
while IFS=$'\t' read -r name location protected purge_date; do
    if [[ "$protected" == true ]]; then
        say "Key Vault $name is soft-deleted with purge protection: Azure keeps it, and its name, until $purge_date."
        say "  to use it again: az keyvault recover -n $name   (then scripts/deploy.sh; the secrets come back with it)"
    else
        say "purging Key Vault $name"
        az keyvault purge --name "$name" --location "$location"
        say "Key Vault $name purged; its name is free"
    fi
done <"$WORK/mine.tsv"
