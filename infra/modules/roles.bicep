// Role assignments for the Function App's user-assigned identity, least privilege, each scoped to
// one resource: host storage (blob, queue, table data), Key Vault secrets (read), Application
// Insights (publish telemetry) and Cosmos DB data on the one database. main.bicep deploys the
// Function App only after this module, so the app's first start already holds every role.
// Optionally the operator who deploys gets "Key Vault Secrets Officer" on the vault, to write the
// two secrets in the deploy step.

@description('Principal (object) id of the app\'s user-assigned identity.')
param appPrincipalId string

@description('Object id of the operator (user or CI service principal) who writes the secrets; "" for none.')
param operatorPrincipalId string = ''

@description('User or ServicePrincipal: the kind of operatorPrincipalId.')
@allowed([
  'User'
  'ServicePrincipal'
])
param operatorPrincipalType string = 'User'

@description('Name of the storage account used as AzureWebJobsStorage (same resource group).')
param storageAccountName string

@description('Name of the Key Vault holding the service secrets (same resource group).')
param keyVaultName string

@description('Name of the Application Insights component (same resource group).')
param appInsightsName string

@description('Name of the Cosmos DB account (same resource group).')
param cosmosAccountName string

@description('Cosmos DB SQL database the app may read and write.')
param cosmosDatabaseName string

// Built-in Azure RBAC role definitions (ids are the same in every tenant).
var storageBlobDataOwner = 'b7e6dc6d-f1e8-4753-8033-0f276bb0955b'
var storageQueueDataContributor = '974c5e8b-45b9-4653-ba55-5f855dd0fb88'
var storageTableDataContributor = '0a9a7e1f-b9d0-4cc4-a60d-0319b160aaa3'
var keyVaultSecretsUser = '4633458b-17de-408a-b874-0445c86b69e6'
var keyVaultSecretsOfficer = 'b86a8fe4-44ce-4948-aee5-eccb2c155cd7'
var monitoringMetricsPublisher = '3913510d-42f4-4e42-8a64-420c390055eb'
var storageRoles = [
  storageBlobDataOwner
  storageQueueDataContributor
  storageTableDataContributor
]

// Cosmos DB data-plane built-in role "Cosmos DB Built-in Data Contributor".
var cosmosDataContributor = '00000000-0000-0000-0000-000000000002'

resource storage 'Microsoft.Storage/storageAccounts@2024-01-01' existing = {
  name: storageAccountName
}

resource vault 'Microsoft.KeyVault/vaults@2024-11-01' existing = {
  name: keyVaultName
}

resource appInsights 'Microsoft.Insights/components@2020-02-02' existing = {
  name: appInsightsName
}

resource cosmos 'Microsoft.DocumentDB/databaseAccounts@2024-11-15' existing = {
  name: cosmosAccountName
}

resource storageRoleAssignments 'Microsoft.Authorization/roleAssignments@2022-04-01' = [for role in storageRoles: {
  name: guid(storage.id, appPrincipalId, role)
  scope: storage
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', role)
    principalId: appPrincipalId
    principalType: 'ServicePrincipal'
  }
}]

resource keyVaultRoleAssignment 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(vault.id, appPrincipalId, keyVaultSecretsUser)
  scope: vault
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', keyVaultSecretsUser)
    principalId: appPrincipalId
    principalType: 'ServicePrincipal'
  }
}

// Entra ID-authenticated telemetry (the component has DisableLocalAuth): despite its name the role
// publishes every telemetry type.
resource monitoringRoleAssignment 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(appInsights.id, appPrincipalId, monitoringMetricsPublisher)
  scope: appInsights
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', monitoringMetricsPublisher)
    principalId: appPrincipalId
    principalType: 'ServicePrincipal'
  }
}

resource operatorSecretsRoleAssignment 'Microsoft.Authorization/roleAssignments@2022-04-01' = if (!empty(operatorPrincipalId)) {
  name: guid(vault.id, operatorPrincipalId, keyVaultSecretsOfficer)
  scope: vault
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', keyVaultSecretsOfficer)
    principalId: operatorPrincipalId
    principalType: operatorPrincipalType
  }
}

var cosmosRoleDefinitionId = '${cosmos.id}/sqlRoleDefinitions/${cosmosDataContributor}'
// Scope: the database only (not the whole account).
var cosmosScope = '${cosmos.id}/dbs/${cosmosDatabaseName}'

resource cosmosRoleAssignment 'Microsoft.DocumentDB/databaseAccounts/sqlRoleAssignments@2024-11-15' = {
  parent: cosmos
  name: guid(cosmosScope, appPrincipalId, cosmosDataContributor)
  properties: {
    roleDefinitionId: cosmosRoleDefinitionId
    principalId: appPrincipalId
    scope: cosmosScope
  }
}

output cosmosRoleAssignmentId string = cosmosRoleAssignment.id
