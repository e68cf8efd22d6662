// Key Vault (RBAC authorization, soft delete, purge protection) for the two service secrets.
// The template creates no secret and takes no secret value: the deploy step writes them with
// `az keyvault secret set --file` (scripts/deploy.sh, docs/azure-deployment.md), so no secret ever passes through a
// deployment's parameters or history. The app reads them through Key Vault references with its
// user-assigned identity, which roles.bicep grants "Key Vault Secrets User".

@description('Azure region of the resources.')
param location string

@description('Tags applied to every resource.')
param tags object

@description('Key Vault name: 3-24 letters and digits (no hyphens here), starting with a letter, globally unique.')
@minLength(3)
@maxLength(24)
param name string

@description('Days a deleted vault or secret stays recoverable (7-90). Cannot be changed after creation.')
@minValue(7)
@maxValue(90)
param softDeleteRetentionInDays int = 90

@description('Resource id of the Log Analytics workspace that receives the AuditEvent logs.')
param logAnalyticsWorkspaceId string

resource vault 'Microsoft.KeyVault/vaults@2024-11-01' = {
  name: name
  location: location
  tags: tags
  // checkov:skip=CKV_AZURE_189: public endpoint kept on purpose (infra/README.md, "Key Vault and network isolation"): the deploy step writes the secrets from the operator's machine; access is Entra ID + RBAC only and every call is audited to Log Analytics
  // checkov:skip=CKV_AZURE_109: same reason: no IP allow-list, since the operator's and the platform's source addresses are not fixed; data access needs a role on the vault
  properties: {
    tenantId: subscription().tenantId
    sku: {
      family: 'A'
      name: 'standard'
    }
    // Data-plane access by Azure RBAC only; access policies are ignored.
    enableRbacAuthorization: true
    enableSoftDelete: true
    softDeleteRetentionInDays: softDeleteRetentionInDays
    // Irreversible: once on, the vault and its secrets cannot be purged before the retention ends.
    enablePurgeProtection: true
    publicNetworkAccess: 'Enabled'
    networkAcls: {
      bypass: 'AzureServices'
      defaultAction: 'Allow'
    }
  }
}

// Who read or wrote which secret, when and from where: table AzureDiagnostics
// (ResourceProvider == "MICROSOFT.KEYVAULT", Category == "AuditEvent").
resource vaultDiagnostics 'Microsoft.Insights/diagnosticSettings@2021-05-01-preview' = {
  name: 'audit-to-log-analytics'
  scope: vault
  properties: {
    workspaceId: logAnalyticsWorkspaceId
    logs: [
      {
        category: 'AuditEvent'
        enabled: true
      }
    ]
    metrics: [
      {
        category: 'AllMetrics'
        enabled: true
      }
    ]
  }
}

output name string = vault.name
output id string = vault.id
// e.g. https://<name>.vault.azure.net/ (with the trailing slash)
output vaultUri string = vault.properties.vaultUri
