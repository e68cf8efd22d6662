// Data-plane role assignments for the Function App's identities (its system-assigned identity and,
// when given, the user-assigned one): host storage, Key Vault secrets, Cosmos DB data.

@description('Principal (object) ids of the app identities that get every role.')
param principalIds array

@description('Name of the storage account used as AzureWebJobsStorage (same resource group).')
param storageAccountName string

@description('Name of the Key Vault holding the service secrets (same resource group).')
param keyVaultName string

@description('Name of the Cosmos DB account (same resource group).')
param cosmosAccountName string

@description('Cosmos DB SQL database the app may read and write.')
param cosmosDatabaseName string

// Built-in Azure RBAC role definitions (ids are the same in every tenant).
var storageBlobDataOwner = 'b7e6dc6d-f1e8-4753-8033-0f276bb0955b'
var storageQueueDataContributor = '974c5e8b-45b9-4653-ba55-5f855dd0fb88'
var storageTableDataContributor = '0a9a7e1f-b9d0-4cc4-a60d-0319b160aaa3'
var keyVaultSecretsUser = '4633458b-17de-408a-b874-0445c86b69e6'
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

resource cosmos 'Microsoft.DocumentDB/databaseAccounts@2024-11-15' existing = {
  name: cosmosAccountName
}

// One assignment per (principal, storage role): index i is principal i / count, role i % count.
var storageRoleCount = length(storageRoles)

resource storageRoleAssignments 'Microsoft.Authorization/roleAssignments@2022-04-01' = [for i in range(0, length(principalIds) * storageRoleCount): {
  name: guid(storage.id, principalIds[i / storageRoleCount], storageRoles[i % storageRoleCount])
  scope: storage
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', storageRoles[i % storageRoleCount])
    principalId: principalIds[i / storageRoleCount]
    principalType: 'ServicePrincipal'
  }
}]

resource keyVaultRoleAssignments 'Microsoft.Authorization/roleAssignments@2022-04-01' = [for principalId in principalIds: {
  name: guid(vault.id, principalId, keyVaultSecretsUser)
  scope: vault
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', keyVaultSecretsUser)
    principalId: principalId
    principalType: 'ServicePrincipal'
  }
}]

var cosmosRoleDefinitionId = '${cosmos.id}/sqlRoleDefinitions/${cosmosDataContributor}'
// Scope: the database only (not the whole account).
var cosmosScope = '${cosmos.id}/dbs/${cosmosDatabaseName}'

resource cosmosRoleAssignments 'Microsoft.DocumentDB/databaseAccounts/sqlRoleAssignments@2024-11-15' = [for principalId in principalIds: {
  parent: cosmos
  name: guid(cosmosScope, principalId, cosmosDataContributor)
  properties: {
    roleDefinitionId: cosmosRoleDefinitionId
    principalId: principalId
    scope: cosmosScope
  }
}]
