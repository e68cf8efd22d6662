// jwt-refresh-token on Azure Functions (Linux, custom handler) with Cosmos DB, Key Vault and
// identity-based storage. Deploy at resource-group scope:
//   az deployment group create -g <rg> --template-file infra/main.bicep --parameters infra/main.bicepparam
// See infra/README.md.

targetScope = 'resourceGroup'

// ---------------------------------------------------------------- naming and placement

@description('Short prefix of every resource name: 2-8 lowercase letters, digits or hyphens, starting with a letter.')
@minLength(2)
@maxLength(8)
param namePrefix string = 'jwtrt'

@description('Azure region of every resource (Flex Consumption is not offered everywhere: az functionapp list-flexconsumption-locations).')
param location string = resourceGroup().location

@description('Tags applied to every resource.')
param tags object = {}

// ---------------------------------------------------------------- hosting

@description('FlexConsumption (default: serverless, storage reached by managed identity only) or Dedicated (Linux App Service plan).')
@allowed([
  'FlexConsumption'
  'Dedicated'
])
param hostingPlan string = 'FlexConsumption'

@description('SKU of the Dedicated plan, e.g. B1, P0v3, P1v3 (ignored for FlexConsumption).')
param dedicatedSkuName string = 'B1'

@description('Flex Consumption: memory per instance in MB.')
@allowed([
  512
  2048
  4096
])
param instanceMemoryMB int = 2048

@description('Flex Consumption: maximum number of instances.')
@minValue(40)
@maxValue(1000)
param maximumInstanceCount int = 40

@description('Optional resource id of an existing user-assigned managed identity to attach to the app. When set, AZURE_CLIENT_ID is set to its client id (the Cosmos client then uses it) and it gets the same data roles as the system-assigned identity.')
param userAssignedIdentityResourceId string = ''

// ---------------------------------------------------------------- token settings

@description('JwtRefreshToken__Descriptor__Issuer: iss of every access token.')
@minLength(1)
param jwtIssuer string

@description('JwtRefreshToken__Descriptor__Audience: aud of every access token.')
@minLength(1)
param jwtAudience string

@description('JwtRefreshToken__Descriptor__Algorithm. HS256 (default, as the .NET package) takes a secret of at least 32 bytes; ES256/EdDSA take a PKCS#8 PEM private key.')
@allowed([
  'HS256'
  'ES256'
  'EdDSA'
])
param jwtAlgorithm string = 'HS256'

@secure()
@description('Value of the Key Vault secret jwt-algorithm-key (JwtRefreshToken__Descriptor__AlgorithmKey). HS256: at least 32 bytes, e.g. openssl rand -base64 48.')
@minLength(32)
param jwtAlgorithmKey string

@secure()
@description('Value of the Key Vault secret jwt-rotation-secret (JwtRefreshToken__Rotation__Secret), at least 32 bytes, e.g. openssl rand -base64 48. Changing it ends every session.')
@minLength(32)
param jwtRotationSecret string

@description('JwtRefreshToken__Descriptor__ClockSkewMs: allowance on exp/nbf.')
@minValue(0)
@maxValue(600000)
param jwtClockSkewMs int = 30000

@description('JwtRefreshToken__Expires__CreateExpiresInMs: access-token lifetime.')
@minValue(1000)
@maxValue(86400000)
param jwtCreateExpiresInMs int = 300000

@description('JwtRefreshToken__Expires__RefreshExpiresInMs: absolute session lifetime.')
@minValue(1000)
param jwtRefreshExpiresInMs int = 604800000

@description('JwtRefreshToken__Rotation__ReuseGraceMs: grace for the previous refresh token.')
@minValue(0)
@maxValue(300000)
param jwtReuseGraceMs int = 10000

@description('JwtRefreshToken__Login__MaxFailures: failures before a username is locked.')
@minValue(1)
@maxValue(1000)
param jwtLoginMaxFailures int = 5

@description('JwtRefreshToken__Login__LockoutMs: lock duration and failure window.')
@minValue(1000)
@maxValue(86400000)
param jwtLoginLockoutMs int = 900000

// ---------------------------------------------------------------- Cosmos DB

@description('true: serverless Cosmos DB account (default). false: provisioned throughput on the database.')
param cosmosServerless bool = true

@description('Database throughput in RU/s when cosmosServerless is false.')
@minValue(400)
param cosmosProvisionedThroughput int = 400

@description('JwtRefreshToken__Cosmos__DatabaseName')
param cosmosDatabaseName string = 'jwt-refresh-token'

@description('JwtRefreshToken__Cosmos__TokenContainerId (partition key /userId)')
param cosmosTokenContainerName string = 'tokens'

@description('JwtRefreshToken__Cosmos__UserContainerId (partition key /id)')
param cosmosUserContainerName string = 'users'

@description('JwtRefreshToken__Cosmos__RequestTimeoutMs: timeout of each Cosmos request, retries included.')
@minValue(100)
@maxValue(120000)
param cosmosRequestTimeoutMs int = 5000

// ---------------------------------------------------------------- names

var prefix = toLower(namePrefix)
var token = uniqueString(resourceGroup().id)
var names = {
  logAnalytics: '${prefix}-log-${token}'
  appInsights: '${prefix}-appi-${token}'
  storage: take('st${replace(prefix, '-', '')}${token}', 24)
  keyVault: take('${prefix}-kv${token}', 24)
  cosmos: '${prefix}-cosmos-${token}'
  plan: '${prefix}-plan-${token}'
  functionApp: '${prefix}-func-${token}'
}
var allTags = union({ application: 'jwt-refresh-token' }, tags)

// ---------------------------------------------------------------- optional user-assigned identity

var hasUserAssignedIdentity = !empty(userAssignedIdentityResourceId)
// A well-formed placeholder keeps the scope expression valid when no identity is given.
var placeholderIdentityId = '/subscriptions/${subscription().subscriptionId}/resourceGroups/${resourceGroup().name}/providers/Microsoft.ManagedIdentity/userAssignedIdentities/none'
var identityIdSegments = split(hasUserAssignedIdentity ? userAssignedIdentityResourceId : placeholderIdentityId, '/')

resource userAssignedIdentity 'Microsoft.ManagedIdentity/userAssignedIdentities@2023-01-31' existing = if (hasUserAssignedIdentity) {
  name: last(identityIdSegments)
  scope: resourceGroup(identityIdSegments[2], identityIdSegments[4])
}

// ARM evaluates only the taken branch of a conditional, so these never touch a missing identity.
var userAssignedClientId = hasUserAssignedIdentity ? userAssignedIdentity.properties.clientId : ''
var userAssignedPrincipalId = hasUserAssignedIdentity ? userAssignedIdentity.properties.principalId : ''

// ---------------------------------------------------------------- resources

module monitoring 'modules/monitoring.bicep' = {
  name: 'monitoring'
  params: {
    location: location
    tags: allTags
    logAnalyticsName: names.logAnalytics
    appInsightsName: names.appInsights
  }
}

module storage 'modules/storage.bicep' = {
  name: 'storage'
  params: {
    location: location
    tags: allTags
    name: names.storage
    deploymentContainerName: 'app-package'
  }
}

module keyVault 'modules/keyvault.bicep' = {
  name: 'keyvault'
  params: {
    location: location
    tags: allTags
    name: names.keyVault
    algorithmKey: jwtAlgorithmKey
    rotationSecret: jwtRotationSecret
  }
}

module cosmos 'modules/cosmos.bicep' = {
  name: 'cosmos'
  params: {
    location: location
    tags: allTags
    accountName: names.cosmos
    serverless: cosmosServerless
    provisionedThroughput: cosmosProvisionedThroughput
    databaseName: cosmosDatabaseName
    tokenContainerName: cosmosTokenContainerName
    userContainerName: cosmosUserContainerName
  }
}

module functionApp 'modules/functionapp.bicep' = {
  name: 'functionapp'
  params: {
    location: location
    tags: allTags
    planName: names.plan
    appName: names.functionApp
    hostingPlan: hostingPlan
    dedicatedSkuName: dedicatedSkuName
    instanceMemoryMB: instanceMemoryMB
    maximumInstanceCount: maximumInstanceCount
    storageAccountName: storage.outputs.name
    deploymentContainerUrl: storage.outputs.deploymentContainerUrl
    appInsightsConnectionString: monitoring.outputs.appInsightsConnectionString
    userAssignedIdentityResourceId: userAssignedIdentityResourceId
    userAssignedIdentityClientId: userAssignedClientId
    jwtIssuer: jwtIssuer
    jwtAudience: jwtAudience
    jwtAlgorithm: jwtAlgorithm
    jwtClockSkewMs: jwtClockSkewMs
    jwtCreateExpiresInMs: jwtCreateExpiresInMs
    jwtRefreshExpiresInMs: jwtRefreshExpiresInMs
    jwtReuseGraceMs: jwtReuseGraceMs
    jwtLoginMaxFailures: jwtLoginMaxFailures
    jwtLoginLockoutMs: jwtLoginLockoutMs
    algorithmKeySecretUri: keyVault.outputs.algorithmKeySecretUri
    rotationSecretUri: keyVault.outputs.rotationSecretUri
    cosmosEndpoint: cosmos.outputs.documentEndpoint
    cosmosDatabaseName: cosmos.outputs.databaseName
    cosmosTokenContainerName: cosmosTokenContainerName
    cosmosUserContainerName: cosmosUserContainerName
    cosmosRequestTimeoutMs: cosmosRequestTimeoutMs
  }
}

module roles 'modules/roles.bicep' = {
  name: 'roles'
  params: {
    principalIds: concat([functionApp.outputs.principalId], hasUserAssignedIdentity ? [userAssignedPrincipalId] : [])
    storageAccountName: storage.outputs.name
    keyVaultName: keyVault.outputs.name
    cosmosAccountName: cosmos.outputs.accountName
    cosmosDatabaseName: cosmos.outputs.databaseName
  }
}

// ---------------------------------------------------------------- outputs

output functionAppName string = functionApp.outputs.name
output functionAppDefaultHostName string = functionApp.outputs.defaultHostName
output functionAppPrincipalId string = functionApp.outputs.principalId
output cosmosEndpoint string = cosmos.outputs.documentEndpoint
output cosmosAccountName string = cosmos.outputs.accountName
output keyVaultName string = keyVault.outputs.name
output storageAccountName string = storage.outputs.name
