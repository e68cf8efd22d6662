// Storage account for the Functions host (AzureWebJobsStorage) and, on Flex Consumption, the
// deployment package container. Shared-key access is off: the app reaches it with its managed
// identity only (AzureWebJobsStorage__accountName/__credential/__clientId + data-plane roles,
// see roles.bicep). With network isolation the public endpoint is closed and blob, queue and
// table are reached through private endpoints (network.bicep).

@description('Azure region of the resources.')
param location string

@description('Tags applied to every resource.')
param tags object

@description('Storage account name: 3-24 lowercase letters and digits, globally unique.')
@minLength(3)
@maxLength(24)
param name string

@description('Blob container that holds the deployment package (Flex Consumption).')
param deploymentContainerName string

@description('true: public network access off, traffic only through private endpoints.')
param networkIsolation bool = false

@description('Resource id of the Log Analytics workspace that receives the blob read/write/delete logs.')
param logAnalyticsWorkspaceId string

resource storage 'Microsoft.Storage/storageAccounts@2024-01-01' = {
  name: name
  location: location
  tags: tags
  kind: 'StorageV2'
  sku: {
    name: 'Standard_LRS'
  }
  // checkov:skip=CKV_AZURE_206: locally redundant on purpose: the account holds only host bookkeeping (leases, timers) and the deployment package, both recreated by a deployment; sessions and users live in Cosmos DB
  // checkov:skip=CKV_AZURE_59: public network access is a parameter (networkIsolation); without isolation the endpoint is reachable but accepts Entra ID tokens only (allowSharedKeyAccess false) and no anonymous blob access
  // checkov:skip=CKV_AZURE_35: same parameter: default action Deny with networkIsolation; Allow without it, where Entra ID authorization is the control
  // checkov:skip=CKV_AZURE_33: queue service logging goes through diagnostic settings (Azure Monitor), not the classic Storage Analytics logging this check looks for
  properties: {
    accessTier: 'Hot'
    minimumTlsVersion: 'TLS1_2'
    supportsHttpsTrafficOnly: true
    allowBlobPublicAccess: false
    // No account keys, no SAS signed with them: Entra ID (managed identity) only.
    allowSharedKeyAccess: false
    defaultToOAuthAuthentication: true
    allowCrossTenantReplication: false
    publicNetworkAccess: networkIsolation ? 'Disabled' : 'Enabled'
    networkAcls: {
      bypass: 'AzureServices'
      defaultAction: networkIsolation ? 'Deny' : 'Allow'
    }
  }
}

resource blobServices 'Microsoft.Storage/storageAccounts/blobServices@2024-01-01' = {
  parent: storage
  name: 'default'
}

resource deploymentContainer 'Microsoft.Storage/storageAccounts/blobServices/containers@2024-01-01' = {
  parent: blobServices
  name: deploymentContainerName
  properties: {
    publicAccess: 'None'
  }
}

// Package uploads and reads (table StorageBlobLogs).
resource blobDiagnostics 'Microsoft.Insights/diagnosticSettings@2021-05-01-preview' = {
  name: 'blob-to-log-analytics'
  scope: blobServices
  properties: {
    workspaceId: logAnalyticsWorkspaceId
    logs: [
      {
        category: 'StorageRead'
        enabled: true
      }
      {
        category: 'StorageWrite'
        enabled: true
      }
      {
        category: 'StorageDelete'
        enabled: true
      }
    ]
  }
}

output name string = storage.name
output id string = storage.id
// e.g. https://<account>.blob.core.windows.net/app-package
output deploymentContainerUrl string = '${storage.properties.primaryEndpoints.blob}${deploymentContainer.name}'
