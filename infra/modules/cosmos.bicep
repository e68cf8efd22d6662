// Cosmos DB for NoSQL: account without keys (Entra ID only), one database, two containers.
// Data-plane access is granted in roles.bicep (sqlRoleAssignments, built-in Data Contributor).

@description('Azure region of the resources.')
param location string

@description('Tags applied to every resource.')
param tags object

@description('Cosmos DB account name: 3-44 lowercase letters, digits and hyphens, globally unique.')
@minLength(3)
@maxLength(44)
param accountName string

@description('true: serverless (pay per request, single region). false: provisioned throughput on the database.')
param serverless bool = true

@description('Database throughput in RU/s when serverless is false (ignored otherwise).')
@minValue(400)
param provisionedThroughput int = 400

@description('SQL database name (JwtRefreshToken__Cosmos__DatabaseName).')
param databaseName string

@description('Sessions container, partition key /userId (JwtRefreshToken__Cosmos__TokenContainerId).')
param tokenContainerName string

@description('Accounts container, partition key /id (JwtRefreshToken__Cosmos__UserContainerId).')
param userContainerName string

@description('true: public network access off, the account is reached only through its private endpoint (network.bicep).')
param networkIsolation bool = false

@description('Resource id of the Log Analytics workspace that receives the data-plane and control-plane logs.')
param logAnalyticsWorkspaceId string

resource account 'Microsoft.DocumentDB/databaseAccounts@2024-11-15' = {
  name: accountName
  location: location
  tags: tags
  kind: 'GlobalDocumentDB'
  // checkov:skip=CKV_AZURE_99: restriction is a parameter: networkIsolation closes the public endpoint; without it every request still needs an Entra ID token and a data-plane role (disableLocalAuth)
  // checkov:skip=CKV_AZURE_101: same parameter (publicNetworkAccess is Disabled with networkIsolation)
  // checkov:skip=CKV_AZURE_100: data at rest is encrypted with Microsoft-managed keys; customer-managed keys would add a key-vault key and its rotation to operate, not needed for session records
  properties: {
    databaseAccountOfferType: 'Standard'
    locations: [
      {
        locationName: location
        failoverPriority: 0
        isZoneRedundant: false
      }
    ]
    consistencyPolicy: {
      defaultConsistencyLevel: 'Session'
    }
    capabilities: serverless ? [ { name: 'EnableServerless' } ] : []
    // No account keys: only Microsoft Entra ID (the app's managed identity, developers via az login).
    disableLocalAuth: true
    // Databases and containers are changed through ARM (this template), never through the data plane.
    disableKeyBasedMetadataWriteAccess: true
    minimalTlsVersion: 'Tls12'
    publicNetworkAccess: networkIsolation ? 'Disabled' : 'Enabled'
  }
}

resource database 'Microsoft.DocumentDB/databaseAccounts/sqlDatabases@2024-11-15' = {
  parent: account
  name: databaseName
  properties: {
    resource: {
      id: databaseName
    }
    options: serverless ? {} : { throughput: provisionedThroughput }
  }
}

// Sessions. Every operation is a point read/write by (id, partition key) or a query scoped to one
// partition (SELECT c.id FROM c / SELECT * FROM c with the user id as partition key), which need no
// index. Only the partition key path is indexed (the exclude-/* strategy does not index it by
// default); `id` and `_ts` are always indexed in consistent mode. defaultTtl -1: TTL is on and
// each document carries its own `ttl`.
resource tokenContainer 'Microsoft.DocumentDB/databaseAccounts/sqlDatabases/containers@2024-11-15' = {
  parent: database
  name: tokenContainerName
  properties: {
    resource: {
      id: tokenContainerName
      partitionKey: {
        paths: [
          '/userId'
        ]
        kind: 'Hash'
        version: 2
      }
      defaultTtl: -1
      indexingPolicy: {
        indexingMode: 'consistent'
        automatic: true
        includedPaths: [
          {
            path: '/userId/?'
          }
        ]
        excludedPaths: [
          {
            path: '/*'
          }
        ]
      }
    }
  }
}

// Accounts (one document per username). Point reads by id only; the admin listing is a
// cross-partition scan, acceptable for a rare command. Nothing indexed beyond id/_ts. TTL cannot be
// combined with indexingMode none, hence consistent mode with everything excluded.
resource userContainer 'Microsoft.DocumentDB/databaseAccounts/sqlDatabases/containers@2024-11-15' = {
  parent: database
  name: userContainerName
  properties: {
    resource: {
      id: userContainerName
      partitionKey: {
        paths: [
          '/id'
        ]
        kind: 'Hash'
        version: 2
      }
      defaultTtl: -1
      indexingPolicy: {
        indexingMode: 'consistent'
        automatic: true
        includedPaths: []
        excludedPaths: [
          {
            path: '/*'
          }
        ]
      }
    }
  }
}

// Request logs in resource-specific tables: CDBDataPlaneRequests (every read/write, status,
// RU charge, client identity), CDBControlPlaneRequests (account/database/container changes),
// CDBQueryRuntimeStatistics.
resource accountDiagnostics 'Microsoft.Insights/diagnosticSettings@2021-05-01-preview' = {
  name: 'requests-to-log-analytics'
  scope: account
  properties: {
    workspaceId: logAnalyticsWorkspaceId
    logAnalyticsDestinationType: 'Dedicated'
    logs: [
      {
        category: 'DataPlaneRequests'
        enabled: true
      }
      {
        category: 'ControlPlaneRequests'
        enabled: true
      }
      {
        category: 'QueryRuntimeStatistics'
        enabled: true
      }
    ]
    metrics: [
      {
        category: 'Requests'
        enabled: true
      }
    ]
  }
}

output accountName string = account.name
output accountId string = account.id
// e.g. https://<account>.documents.azure.com:443/
output documentEndpoint string = account.properties.documentEndpoint
output databaseName string = database.name
