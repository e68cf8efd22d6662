// Hosting plan + Linux Function App running the Rust custom handler, with the user-assigned
// identity main.bicep creates (and roles.bicep has already granted) as its only identity: host
// storage, the deployment container, Key Vault references, Application Insights ingestion and the
// Cosmos client all use it.
//
// FlexConsumption (default): runtime declared in functionAppConfig.runtime (name 'custom'); the
// deployment package lives in a blob container reached with the identity, so the storage account
// needs no key. On this plan the platform manages the Functions runtime version (4.x only) and
// rejects FUNCTIONS_WORKER_RUNTIME as an app setting and siteConfig.ftpsState (there is no FTP
// endpoint at all), so those two are set only on the Dedicated plan.
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

@description('Flex Consumption: instances of the http group kept warm (0: scale to zero).')
@minValue(0)
@maxValue(1000)
param alwaysReadyInstanceCount int = 0

@description('Origins a browser may call the API from (siteConfig.cors, with credentials); never *.')
param corsAllowedOrigins array = []

@description('Resource id of the app-integration subnet ("" for none: no VNet integration).')
param appSubnetId string = ''

@description('Name of the storage account used as AzureWebJobsStorage.')
param storageAccountName string

@description('Blob container URL for the Flex Consumption deployment package.')
param deploymentContainerUrl string

@description('Application Insights connection string.')
param appInsightsConnectionString string

@description('Resource id of the app\'s user-assigned identity.')
param identityResourceId string

@description('Client id of the app\'s user-assigned identity (AZURE_CLIENT_ID and the identity-based connections).')
param identityClientId string

@description('JwtRefreshToken__Descriptor__Issuer; "" for the app\'s own URL, https://<defaultHostName>/api.')
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

@description('Sign-in providers: objects { name, audiences, tenants?, issuer?, jwksUri?, nonceMode?, requireEmailVerified?, allowedAlgorithms?, trustMfa? } (main.bicep, docs/federation.md).')
@maxLength(16)
param signInProviders array = []

@description('Key Vault URI, e.g. https://<vault>.vault.azure.net/ (with the trailing slash).')
param keyVaultUri string

@description('Name of the Key Vault secret holding the signing key (JwtRefreshToken__Descriptor__AlgorithmKey).')
param algorithmKeySecretName string

@description('Name of the Key Vault secret holding the refresh-token secret (JwtRefreshToken__Rotation__Secret).')
param rotationSecretName string

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

@description('true: e-mail through Azure Communication Services (JwtRefreshToken__Email__Transport = acs); false: Transport = none.')
param sendEmail bool = false

@description('JwtRefreshToken__Email__Acs__Endpoint: https://<Communication Services hostName> ("" without sendEmail).')
param emailAcsEndpoint string = ''

@description('JwtRefreshToken__Email__From: the sender address of a linked domain ("" without sendEmail).')
param emailFrom string = ''

@description('JwtRefreshToken__Email__ProductName')
param emailProductName string = 'jwt-refresh-token'

var isFlex = hostingPlan == 'FlexConsumption'
var hasSubnet = !empty(appSubnetId)

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
  // checkov:skip=CKV_AZURE_225: zone redundancy needs Premium v3 (Dedicated) or an explicit Flex Consumption zone setting in a region that offers it; left to the operator (infra/README.md, "Not included")
  // checkov:skip=CKV_AZURE_211: the plan SKU is a parameter (FC1 by default); Flex Consumption has no Premium tier to choose
  // checkov:skip=CKV_AZURE_212: instance count is the platform's (Flex Consumption scales per request; alwaysReadyInstanceCount keeps warm instances)
  properties: {
    // Linux
    reserved: true
  }
}

// Always-ready instances for the http group (all HTTP-triggered functions of the app).
var alwaysReadyHttp = [
  {
    name: 'http'
    instanceCount: alwaysReadyInstanceCount
  }
]
var alwaysReady = alwaysReadyInstanceCount > 0 ? alwaysReadyHttp : []

// Custom handler runtime on Flex Consumption ('1.0' is the only version the platform lists for it).
var flexFunctionAppConfig = {
  runtime: {
    name: 'custom'
    version: '1.0'
  }
  scaleAndConcurrency: {
    instanceMemoryMB: instanceMemoryMB
    maximumInstanceCount: maximumInstanceCount
    alwaysReady: alwaysReady
  }
  deployment: {
    storage: {
      type: 'blobContainer'
      value: deploymentContainerUrl
      authentication: {
        type: 'UserAssignedIdentity'
        userAssignedIdentityResourceId: identityResourceId
      }
    }
  }
}

// A wildcard would let any site call the API with the user's cookies: refused (the template stops
// with this message instead of deploying it).
var corsOrigins = contains(corsAllowedOrigins, '*') ? [ int('corsAllowedOrigins must list origins; * is refused') ] : corsAllowedOrigins

var cors = {
  allowedOrigins: corsOrigins
  supportCredentials: true
}

// Flex Consumption rejects several classic siteConfig properties (ftpsState, linuxFxVersion, ...).
var flexSiteConfig = {
  minTlsVersion: '1.2'
  cors: cors
}

var dedicatedSiteConfig = {
  minTlsVersion: '1.2'
  http20Enabled: true
  ftpsState: 'Disabled'
  alwaysOn: true
  remoteDebuggingEnabled: false
  vnetRouteAllEnabled: hasSubnet
  cors: cors
}

resource site 'Microsoft.Web/sites@2024-04-01' = {
  name: appName
  // checkov:skip=CKV_AZURE_56: the API authenticates its callers itself (it issues the tokens); App Service authentication would put a second login in front of the login endpoint
  // checkov:skip=CKV_AZURE_16: same reason (no Entra ID app registration in front of a token endpoint)
  // checkov:skip=CKV_AZURE_13: same reason
  // checkov:skip=CKV_AZURE_17: clients are mobile and web apps without client certificates
  location: location
  // checkov:skip=CKV_AZURE_222: the token endpoints are public by design; storage and Cosmos DB are the ones closed by networkIsolation
  // checkov:skip=CKV_AZURE_62: a token service for public clients is called from every region
  // checkov:skip=CKV_AZURE_213: Functions has no health-check path of its own on Flex Consumption; the host probes the handler's GET / at start-up
  // checkov:skip=CKV_AZURE_212: instance count is the platform's (Flex Consumption scales per request; alwaysReadyInstanceCount keeps warm instances)
  tags: tags
  // checkov:skip=CKV_AZURE_78: FTP does not exist on Flex Consumption (ftpsState is rejected there) and is Disabled in the Dedicated siteConfig; basic publishing credentials are off for ftp and scm below
  // checkov:skip=CKV_AZURE_18: HTTP/2 is set in the Dedicated siteConfig; Flex Consumption manages the front end and rejects most siteConfig properties
  // checkov:skip=CKV_AZURE_67: same reason as CKV_AZURE_18
  // checkov:skip=CKV_AZURE_15: minTlsVersion '1.2' is set in both siteConfig variables, which checkov does not follow
  kind: 'functionapp,linux'
  // checkov:skip=CKV_AZURE_145: same reason as CKV_AZURE_15
  // checkov:skip=CKV_AZURE_57: CORS lists explicit origins only; a * stops the deployment (corsOrigins)
  // checkov:skip=CKV_AZURE_72: remoteDebuggingEnabled is false in the Dedicated siteConfig; Flex Consumption has no remote debugging
  // checkov:skip=CKV_AZURE_71: the app runs with a user-assigned managed identity (identity below), which this check does not recognise
  identity: {
    type: 'UserAssigned'
    userAssignedIdentities: {
      '${identityResourceId}': {}
    }
  }
  properties: {
    serverFarmId: plan.id
    httpsOnly: true
    // Key Vault references resolve with the user-assigned identity (it already holds Key Vault
    // Secrets User when the site is created; the system-assigned identity does not exist here).
    keyVaultReferenceIdentity: identityResourceId
    virtualNetworkSubnetId: hasSubnet ? appSubnetId : null
    functionAppConfig: isFlex ? flexFunctionAppConfig : null
    siteConfig: isFlex ? flexSiteConfig : dedicatedSiteConfig
  }
}

// No publishing user name/password: deployments authenticate with Entra ID (az / func use the
// caller's token against the Function App's control plane).
resource scmBasicAuth 'Microsoft.Web/sites/basicPublishingCredentialsPolicies@2024-04-01' = {
  parent: site
  name: 'scm'
  // Not in the resource type's schema, but the deployment fails with "parameter 'location' has an
  // invalid value" without it (Azure/bicep-types-az#1529, #1566, #1317; Azure/bicep#5531).
  #disable-next-line BCP187
  location: location
  properties: {
    allow: false
  }
}

resource ftpBasicAuth 'Microsoft.Web/sites/basicPublishingCredentialsPolicies@2024-04-01' = {
  parent: site
  name: 'ftp'
  // Not in the resource type's schema, but the deployment fails with "parameter 'location' has an
  // invalid value" without it (Azure/bicep-types-az#1529, #1566, #1317; Azure/bicep#5531).
  #disable-next-line BCP187
  location: location
  properties: {
    allow: false
  }
}

// Functions host: storage, Application Insights and the Cosmos client all through the one
// user-assigned identity (no connection string, no key).
var hostSettings = {
  AzureWebJobsStorage__accountName: storageAccountName
  AzureWebJobsStorage__credential: 'managedidentity'
  AzureWebJobsStorage__clientId: identityClientId
  APPLICATIONINSIGHTS_CONNECTION_STRING: appInsightsConnectionString
  // Entra ID ingestion (the component has local auth off), with this identity.
  APPLICATIONINSIGHTS_AUTHENTICATION_STRING: 'ClientId=${identityClientId};Authorization=AAD'
  AZURE_CLIENT_ID: identityClientId
}

// Settings the Flex Consumption platform owns (functionAppConfig.runtime / runtime 4.x); on the
// Dedicated plan they are set explicitly.
var dedicatedPlanSettings = {
  FUNCTIONS_WORKER_RUNTIME: 'custom'
  FUNCTIONS_EXTENSION_VERSION: '~4'
  WEBSITE_RUN_FROM_PACKAGE: '1'
}

// The issuer of every access token: the parameter, or the app's own URL under the route prefix
// (https://<app>.azurewebsites.net/api, where /api/jwks serves the public keys).
var issuer = empty(jwtIssuer) ? 'https://${site.properties.defaultHostName}/api' : jwtIssuer

// The service's own settings (names: src/settings/names.rs). Secrets are Key Vault references to
// versionless secret URIs; the secrets themselves are written by the deploy step.
var jwtSettings = {
  JwtRefreshToken__Descriptor__Issuer: issuer
  JwtRefreshToken__Descriptor__Audience: jwtAudience
  JwtRefreshToken__Descriptor__Algorithm: jwtAlgorithm
  JwtRefreshToken__Descriptor__AlgorithmKey: '@Microsoft.KeyVault(SecretUri=${keyVaultUri}secrets/${algorithmKeySecretName})'
  JwtRefreshToken__Descriptor__ClockSkewMs: string(jwtClockSkewMs)
  JwtRefreshToken__Expires__CreateExpiresInMs: string(jwtCreateExpiresInMs)
  JwtRefreshToken__Expires__RefreshExpiresInMs: string(jwtRefreshExpiresInMs)
  JwtRefreshToken__Rotation__ReuseGraceMs: string(jwtReuseGraceMs)
  JwtRefreshToken__Rotation__Secret: '@Microsoft.KeyVault(SecretUri=${keyVaultUri}secrets/${rotationSecretName})'
  JwtRefreshToken__Login__MaxFailures: string(jwtLoginMaxFailures)
  JwtRefreshToken__Login__LockoutMs: string(jwtLoginLockoutMs)
  JwtRefreshToken__Cosmos__AccountEndpoint: cosmosEndpoint
  JwtRefreshToken__Cosmos__DatabaseName: cosmosDatabaseName
  JwtRefreshToken__Cosmos__TokenContainerId: cosmosTokenContainerName
  JwtRefreshToken__Cosmos__UserContainerId: cosmosUserContainerName
  JwtRefreshToken__Cosmos__RequestTimeoutMs: string(cosmosRequestTimeoutMs)
  // The same origins: the platform answers preflights, the handler checks Origin on cookie requests.
  JwtRefreshToken__Cors__AllowedOrigins: join(corsOrigins, ',')
}

// E-mail (names: src/settings/names.rs, EMAIL_*). With sendEmail: Azure Communication Services
// Email, which the handler calls with a token for the app's identity (AZURE_CLIENT_ID; the identity
// holds its role on the Communication Services resource, modules/email.bicep). Without it: no
// transport, so no e-mail features (and no address is asked for). One object or the other, each a
// variable of its own so infra/check.py reads both sets of names.
var emailAcsSettings = {
  JwtRefreshToken__Email__Transport: 'acs'
  JwtRefreshToken__Email__Acs__Endpoint: emailAcsEndpoint
  JwtRefreshToken__Email__From: emailFrom
  JwtRefreshToken__Email__ProductName: emailProductName
}
var emailOffSettings = {
  JwtRefreshToken__Email__Transport: 'none'
}
var emailSettings = sendEmail ? emailAcsSettings : emailOffSettings

// Sign-in providers (names: src/settings/names.rs, FEDERATION_PROVIDERS; docs/federation.md): each
// entry of signInProviders becomes its JwtRefreshToken__Federation__Providers__<name>__... set.
// audiences and tenants are numbered (__Audiences__0, __1, ...); every other field is one setting,
// left unset when the entry leaves it out (the provider's preset or the handler's default applies).
// Client ids and URLs, not secrets: plain values. Built with for-expressions, filter() and json(),
// not map() / toObject(): checkov's Bicep parser (pycep-parser 0.5.1, which the checkov pinned in
// infra/requirements.txt requires) parses filter() but no other lambda function, and a file it
// cannot parse is a parsing error of the checkov gate.

// A field the handler does not read (a typo such as requireEmailVerifed) stops the deployment with
// this message instead of being dropped unread: union() with every known field then adds a key.
var providerFields = {
  name: ''
  audiences: ''
  tenants: ''
  issuer: ''
  jwksUri: ''
  nonceMode: ''
  requireEmailVerified: ''
  allowedAlgorithms: ''
  trustMfa: ''
}
var providersWithUnknownFields = filter(signInProviders, p => length(union(providerFields, p)) != length(providerFields))
var providers = empty(providersWithUnknownFields) ? signInProviders : [ int('signInProviders: an entry has a field other than name, audiences, tenants, issuer, jwksUri, nonceMode, requireEmailVerified, allowedAlgorithms, trustMfa') ]

// Numbered values: one slot per (provider, n) for n below the handler's 32 per list (MAX_LIST in
// src/settings/federation.rs; at most 16 providers, so at most 512 slots); the slots a provider's
// list fills become settings.
var listSlots = 32
var providerSlots = [for i in range(0, length(providers) * listSlots): {
  p: i / listSlots
  n: i % listSlots
}]
var audienceSlots = filter(providerSlots, s => s.n < length(providers[s.p].audiences))
var tenantSlots = filter(providerSlots, s => s.n < length(providers[s.p].?tenants ?? []))

var audienceSettings = [for s in audienceSlots: {
  name: 'JwtRefreshToken__Federation__Providers__${providers[s.p].name}__Audiences__${s.n}'
  value: providers[s.p].audiences[s.n]
}]

var tenantSettings = [for s in tenantSlots: {
  name: 'JwtRefreshToken__Federation__Providers__${providers[s.p].name}__Tenants__${s.n}'
  value: providers[s.p].tenants[s.n]
}]

// string() of the bool requireEmailVerified is 'True' / 'False', which the handler reads without case.
var optionSettingLists = [for p in providers: [
  {
    name: 'JwtRefreshToken__Federation__Providers__${p.name}__Issuer'
    value: string(p.?issuer ?? '')
  }
  {
    name: 'JwtRefreshToken__Federation__Providers__${p.name}__JwksUri'
    value: string(p.?jwksUri ?? '')
  }
  {
    name: 'JwtRefreshToken__Federation__Providers__${p.name}__NonceMode'
    value: string(p.?nonceMode ?? '')
  }
  {
    name: 'JwtRefreshToken__Federation__Providers__${p.name}__RequireEmailVerified'
    value: string(p.?requireEmailVerified ?? '')
  }
  {
    name: 'JwtRefreshToken__Federation__Providers__${p.name}__AllowedAlgorithms'
    value: string(p.?allowedAlgorithms ?? '')
  }
  {
    name: 'JwtRefreshToken__Federation__Providers__${p.name}__TrustMfa'
    value: string(p.?trustMfa ?? '')
  }
]]
var optionSettings = filter(flatten(optionSettingLists), o => !empty(o.value))

// { name, value } entries to one object: each entry as the JSON text of { '<name>': value } without
// its braces (string() escapes both), joined and read back with json().
var federationEntries = concat(audienceSettings, tenantSettings, optionSettings)
var federationPairs = [for e in federationEntries: substring(string({ '${e.name}': e.value }), 1, length(string({ '${e.name}': e.value })) - 2)]
var federationSettings = json('{${join(federationPairs, ',')}}')

resource appSettings 'Microsoft.Web/sites/config@2024-04-01' = {
  // checkov:skip=CKV_AZURE_13: checkov reads this app-settings resource as a web app; authentication is discussed on the site above
  // checkov:skip=CKV_AZURE_63: HTTP logs of App Service do not apply to Functions; requests are logged by the host to Application Insights
  // checkov:skip=CKV_AZURE_65: same reason (detailed error pages are an App Service web-server feature)
  // checkov:skip=CKV_AZURE_66: same reason (failed request tracing is an IIS/App Service web-server feature)
  parent: site
  name: 'appsettings'
  // checkov:skip=CKV_AZURE_80: no .NET Framework: a Rust custom handler
  // checkov:skip=CKV_AZURE_88: no Azure Files share on purpose: it needs an account key (allowSharedKeyAccess is false)
  // checkov:skip=CKV_AZURE_222: not a site; see the site's reason
  properties: union(hostSettings, isFlex ? {} : dedicatedPlanSettings, jwtSettings, emailSettings, federationSettings)
}

output name string = site.name
output id string = site.id
output defaultHostName string = site.properties.defaultHostName
output issuer string = issuer
