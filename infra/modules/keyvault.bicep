// Key Vault (RBAC authorization, soft delete, purge protection) holding the two service secrets.
// The Function App reads them through Key Vault references; roles.bicep grants it
// "Key Vault Secrets User".

@description('Azure region of the resources.')
param location string

@description('Tags applied to every resource.')
param tags object

@description('Key Vault name: 3-24 letters, digits and hyphens, globally unique.')
@minLength(3)
@maxLength(24)
param name string

@description('Days a deleted vault or secret stays recoverable (7-90). Cannot be changed after creation.')
@minValue(7)
@maxValue(90)
param softDeleteRetentionInDays int = 90

@secure()
@description('Value of the secret jwt-algorithm-key (JwtRefreshToken__Descriptor__AlgorithmKey).')
param algorithmKey string

@secure()
@description('Value of the secret jwt-rotation-secret (JwtRefreshToken__Rotation__Secret).')
param rotationSecret string

resource vault 'Microsoft.KeyVault/vaults@2024-11-01' = {
  name: name
  location: location
  tags: tags
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

resource algorithmKeySecret 'Microsoft.KeyVault/vaults/secrets@2024-11-01' = {
  parent: vault
  name: 'jwt-algorithm-key'
  properties: {
    value: algorithmKey
    contentType: 'text/plain'
  }
}

resource rotationSecretSecret 'Microsoft.KeyVault/vaults/secrets@2024-11-01' = {
  parent: vault
  name: 'jwt-rotation-secret'
  properties: {
    value: rotationSecret
    contentType: 'text/plain'
  }
}

output name string = vault.name
output id string = vault.id
// Versionless URIs: the app follows the newest version of each secret (App Service re-reads
// Key Vault references within 24 hours, or at once on restart / app-setting change). They are
// URIs, not secret values, hence the linter pragmas.
#disable-next-line outputs-should-not-contain-secrets
output algorithmKeySecretUri string = algorithmKeySecret.properties.secretUri
#disable-next-line outputs-should-not-contain-secrets
output rotationSecretUri string = rotationSecretSecret.properties.secretUri
