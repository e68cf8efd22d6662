// Hosting plan + Linux Function App running the Rust custom handler.
//
// FlexConsumption (default): runtime declared in functionAppConfig.runtime (name 'custom'); the
// deployment package lives in a blob container reached with the system-assigned identity, so the
// storage account needs no key. On this plan the platform manages the Functions runtime version
// (4.x only) and rejects FUNCTIONS_WORKER_RUNTIME as an app setting and siteConfig.ftpsState
// (there is no FTP endpoint at all), so those two are set only on the Dedicated plan.
// Dedicated: a Linux App Service plan (no Azure Files content share either), classic settings.

@description('Azure region of the resources.')
param location string

@description('Tags applied to every resource.')
param tags object

@description('Name of the hosting plan.')
param planName string

@description('Name of the Function App (globally unique, becomes <name>.azurewebsites.net).')
param appName string

@description('FlexConsumption (serverless, identity-only storage) or Dedicated (Linux App Service plan).')
@allowed([
  'FlexConsumption'
  'Dedicated'
])
param hostingPlan string = 'FlexConsumption'

@description('SKU of the Dedicated plan (ignored for FlexConsumption), e.g. B1, P0v3, P1v3.')
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

@description('Name of the storage account used as AzureWebJobsStorage.')
param storageAccountName string

@description('Blob container URL for the Flex Consumption deployment package.')
param deploymentContainerUrl string

@description('Application Insights connection string.')
param appInsightsConnectionString string

@description('Resource id of an optional user-assigned identity ("" for none).')
param userAssignedIdentityResourceId string = ''

@description('Client id of that user-assigned identity ("" for none); becomes AZURE_CLIENT_ID.')
param userAssignedIdentityClientId string = ''

@description('JwtRefreshToken__Descriptor__Issuer')
param jwtIssuer string

@description('JwtRefreshToken__Descriptor__Audience')
param jwtAudience string

@description('JwtRefreshToken__Descriptor__Algorithm')
param jwtAlgorithm string

@description('JwtRefreshToken__Descriptor__ClockSkewMs')
param jwtClockSkewMs int

@description('JwtRefreshToken__Expires__CreateExpiresInMs')
param jwtCreateExpiresInMs int

@description('JwtRefreshToken__Expires__RefreshExpiresInMs')
param jwtRefreshExpiresInMs int

@description('JwtRefreshToken__Rotation__ReuseGraceMs')
param jwtReuseGraceMs int

@description('JwtRefreshToken__Login__MaxFailures')
param jwtLoginMaxFailures int

@description('JwtRefreshToken__Login__LockoutMs')
param jwtLoginLockoutMs int

@description('Versionless URI of the Key Vault secret jwt-algorithm-key.')
param algorithmKeySecretUri string

@description('Versionless URI of the Key Vault secret jwt-rotation-secret.')
param rotationSecretUri string

@description('Cosmos DB account documentEndpoint.')
param cosmosEndpoint string

@description('Cosmos DB SQL database name.')
param cosmosDatabaseName string

@description('Cosmos DB sessions container.')
param cosmosTokenContainerName string

@description('Cosmos DB accounts container.')
param cosmosUserContainerName string

@description('JwtRefreshToken__Cosmos__RequestTimeoutMs')
param cosmosRequestTimeoutMs int

var isFlex = hostingPlan == 'FlexConsumption'
var hasUserAssignedIdentity = !empty(userAssignedIdentityResourceId)

var flexSku = {
  tier: 'FlexConsumption'
  name: 'FC1'
}

var dedicatedSku = {
  name: dedicatedSkuName
}

resource plan 'Microsoft.Web/serverfarms@2024-04-01' = {
  name: planName
  location: location
  tags: tags
  kind: isFlex ? 'functionapp' : 'linux'
  sku: isFlex ? flexSku : dedicatedSku
  properties: {
    // Linux
    reserved: true
  }
}

// Custom handler runtime on Flex Consumption ('1.0' is the only version the platform lists for it).
var flexFunctionAppConfig = {
  runtime: {
    name: 'custom'
    version: '1.0'
  }
  scaleAndConcurrency: {
    instanceMemoryMB: instanceMemoryMB
    maximumInstanceCount: maximumInstanceCount
  }
  deployment: {
    storage: {
      type: 'blobContainer'
      value: deploymentContainerUrl
      authentication: {
        type: 'SystemAssignedIdentity'
      }
    }
  }
}

// Flex Consumption rejects several classic siteConfig properties (ftpsState, linuxFxVersion, ...);
// minTlsVersion is the one Microsoft's own Flex templates set.
var flexSiteConfig = {
  minTlsVersion: '1.2'
}

var dedicatedSiteConfig = {
  minTlsVersion: '1.2'
  http20Enabled: true
  ftpsState: 'Disabled'
  alwaysOn: true
}

var systemIdentity = {
  type: 'SystemAssigned'
}

var systemAndUserIdentity = {
  type: 'SystemAssigned, UserAssigned'
  userAssignedIdentities: {
    '${userAssignedIdentityResourceId}': {}
  }
}

resource site 'Microsoft.Web/sites@2024-04-01' = {
  name: appName
  location: location
  tags: tags
  kind: 'functionapp,linux'
  identity: hasUserAssignedIdentity ? systemAndUserIdentity : systemIdentity
  properties: {
    serverFarmId: plan.id
    httpsOnly: true
    functionAppConfig: isFlex ? flexFunctionAppConfig : null
    siteConfig: isFlex ? flexSiteConfig : dedicatedSiteConfig
  }
}

// Functions host: storage through the managed identity (no connection string, no key) and
// Application Insights.
var hostSettings = {
  AzureWebJobsStorage__accountName: storageAccountName
  APPLICATIONINSIGHTS_CONNECTION_STRING: appInsightsConnectionString
}

// Settings the Flex Consumption platform owns (functionAppConfig.runtime / runtime 4.x); on the
// Dedicated plan they are set explicitly.
var dedicatedPlanSettings = {
  FUNCTIONS_WORKER_RUNTIME: 'custom'
  FUNCTIONS_EXTENSION_VERSION: '~4'
  WEBSITE_RUN_FROM_PACKAGE: '1'
}

// The service's own settings (see src/settings.rs). Secrets are Key Vault references resolved
// with the system-assigned identity; the Cosmos client authenticates with Entra ID (no key).
var jwtSettings = {
  JwtRefreshToken__Descriptor__Issuer: jwtIssuer
  JwtRefreshToken__Descriptor__Audience: jwtAudience
  JwtRefreshToken__Descriptor__Algorithm: jwtAlgorithm
  JwtRefreshToken__Descriptor__AlgorithmKey: '@Microsoft.KeyVault(SecretUri=${algorithmKeySecretUri})'
  JwtRefreshToken__Descriptor__ClockSkewMs: string(jwtClockSkewMs)
  JwtRefreshToken__Expires__CreateExpiresInMs: string(jwtCreateExpiresInMs)
  JwtRefreshToken__Expires__RefreshExpiresInMs: string(jwtRefreshExpiresInMs)
  JwtRefreshToken__Rotation__ReuseGraceMs: string(jwtReuseGraceMs)
  JwtRefreshToken__Rotation__Secret: '@Microsoft.KeyVault(SecretUri=${rotationSecretUri})'
  JwtRefreshToken__Login__MaxFailures: string(jwtLoginMaxFailures)
  JwtRefreshToken__Login__LockoutMs: string(jwtLoginLockoutMs)
  JwtRefreshToken__Cosmos__AccountEndpoint: cosmosEndpoint
  JwtRefreshToken__Cosmos__DatabaseName: cosmosDatabaseName
  JwtRefreshToken__Cosmos__TokenContainerId: cosmosTokenContainerName
  JwtRefreshToken__Cosmos__UserContainerId: cosmosUserContainerName
  JwtRefreshToken__Cosmos__RequestTimeoutMs: string(cosmosRequestTimeoutMs)
}

// With a user-assigned identity the Cosmos client (and DefaultAzureCredential-style clients in
// general) use it instead of the system-assigned one.
var userAssignedIdentitySettings = {
  AZURE_CLIENT_ID: userAssignedIdentityClientId
}
var identitySettings = hasUserAssignedIdentity ? userAssignedIdentitySettings : {}

resource appSettings 'Microsoft.Web/sites/config@2024-04-01' = {
  parent: site
  name: 'appsettings'
  properties: union(hostSettings, isFlex ? {} : dedicatedPlanSettings, jwtSettings, identitySettings)
}

output name string = site.name
output defaultHostName string = site.properties.defaultHostName
output principalId string = site.identity.principalId
