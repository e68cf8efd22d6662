// jwt-refresh-token on Azure Functions (Linux, custom handler) with Cosmos DB, Key Vault,
// identity-based storage and, with sendEmail, Azure Communication Services Email, deployed in one
// pass at resource-group scope:
//   scripts/deploy.sh   (bicep build, what-if, this deployment, secrets, package, publish, smoke test)
// or by hand: az deployment group create -g <rg> -f infra/main.bicep -p infra/main.bicepparam
// The two secrets are not parameters: the deploy step writes them into Key Vault afterwards
// (docs/azure-deployment.md). See infra/README.md for every resource, role and parameter.

targetScope = 'resourceGroup'

// ---------------------------------------------------------------- naming and placement

@description('Short prefix of every resource name: 2-8 lowercase letters and digits, starting with a letter. Hyphens, dots, underscores and spaces are dropped and capitals lowered, so each resource\'s naming rules hold.')
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

@description('Flex Consumption: instances of the http group kept running (billed while idle); 0 scales to zero.')
@minValue(0)
@maxValue(1000)
param alwaysReadyInstanceCount int = 0

@description('Browser origins allowed to call the API (e.g. https://app.example.com), sent with credentials; empty: no cross-origin calls. * is refused.')
param corsAllowedOrigins array = []

@description('true: VNet integration for the app, private endpoints (with private DNS) for storage (blob, queue, table) and Cosmos DB, whose public endpoints are then closed.')
param networkIsolation bool = false

@description('Object id of the operator (user or CI service principal) who writes the two secrets after the deployment; gets Key Vault Secrets Officer on the vault. "" for none (then grant it another way).')
param operatorPrincipalId string = ''

@description('User or ServicePrincipal: the kind of operatorPrincipalId.')
@allowed([
  'User'
  'ServicePrincipal'
])
param operatorPrincipalType string = 'User'

// ---------------------------------------------------------------- token settings

@description('JwtRefreshToken__Descriptor__Issuer: iss of every access token. "" (default): the app\'s own URL, https://<defaultHostName>/api (output issuer), where /api/jwks serves the public keys.')
param jwtIssuer string = ''

@description('JwtRefreshToken__Descriptor__Audience: aud of every access token.')
@minLength(1)
param jwtAudience string

@description('JwtRefreshToken__Descriptor__Algorithm. ES256 (default) and EdDSA sign with a PKCS#8 PEM private key, so resource servers verify tokens with the public keys at /api/jwks; HS256 signs with a shared secret (the handler\'s own default, as the .NET package), which every verifier must hold. The key itself is written to Key Vault by the deploy step (handler keys generate --algorithm <this>).')
@allowed([
  'HS256'
  'ES256'
  'EdDSA'
])
param jwtAlgorithm string = 'ES256'

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

// ---------------------------------------------------------------- sign-in providers

@description('Sign-in providers (docs/federation.md), one object each, written as the JwtRefreshToken__Federation__Providers__<name>__... app settings: name (a-z, 0-9, -), audiences (array of client ids, required) and, optional, tenants (array: microsoft only and required there, tenant ids or [\'any\']), issuer, jwksUri, nonceMode (none, raw, sha256), requireEmailVerified (bool), allowedAlgorithms (comma list, e.g. \'RS256\'), trustMfa (bool: an ID token whose amr holds mfa passes a second factor). A field left out is not set (preset or default applies); any other field stops the deployment. Example: [ { name: \'apple\', audiences: [ \'com.example.app\' ] }, { name: \'microsoft\', audiences: [ \'<application id>\' ], tenants: [ \'any\' ] } ]. Client ids, not secrets: plain app settings. At most 16 (the handler\'s limit).')
@maxLength(16)
param signInProviders array = []

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

// ---------------------------------------------------------------- e-mail (Azure Communication Services)

@description('true: Azure Communication Services Email (an Email Communication Service with a free Azure managed domain, a Communication Services resource linked to it, and the role that lets the app\'s identity send) and JwtRefreshToken__Email__Transport = acs. false (default): none of it and Transport = none (no e-mail features), so a first deployment needs no domain.')
param sendEmail bool = false

@description('Geography where the e-mail resources keep their data at rest (the same for both: a domain links only within its geography). Changing it replaces the resources.')
@allowed([
  'Africa'
  'Asia Pacific'
  'Australia'
  'Brazil'
  'Canada'
  'Europe'
  'France'
  'Germany'
  'India'
  'Japan'
  'Korea'
  'Norway'
  'Switzerland'
  'UAE'
  'UK'
  'United States'
])
param emailDataLocation string = 'United States'

@description('JwtRefreshToken__Email__ProductName (sendEmail only): the product name in every mail\'s subject and greeting.')
param productName string = 'jwt-refresh-token'

@description('JwtRefreshToken__Email__From (sendEmail only). "" (default): DoNotReply@<the Azure managed domain>, output emailSenderAddress. With a custom domain: an address of it (e.g. DoNotReply@mail.example.com), once the domain is verified and listed in emailCustomDomainIds (infra/README.md, "DNS steps for a custom domain").')
param emailFrom string = ''

@description('Resource ids of verified custom e-mail domains linked to the Communication Services resource next to the Azure managed domain (sendEmail only). Every deployment sets the linked domains to exactly these plus the managed one, so a domain linked by hand is unlinked again: list it here.')
param emailCustomDomainIds array = []

// ---------------------------------------------------------------- names

// Each resource's naming rules: storage 3-24 lowercase letters/digits; Key Vault 3-24 letters,
// digits and single hyphens starting with a letter; Cosmos DB 3-44 lowercase letters, digits,
// hyphens; sites, plans, workspaces letters, digits, hyphens. The prefix is reduced to lowercase
// letters and digits and every name below starts with a fixed letter or the prefix, so no name
// can hold a double hyphen or an upper-case letter.
var prefix = toLower(replace(replace(replace(replace(namePrefix, '-', ''), '_', ''), '.', ''), ' ', ''))
var token = uniqueString(resourceGroup().id)
var names = {
  identity: '${prefix}-id-${token}'
  logAnalytics: '${prefix}-log-${token}'
  appInsights: '${prefix}-appi-${token}'
  storage: take('st${prefix}${token}', 24)
  keyVault: take('kv${prefix}${token}', 24)
  cosmos: '${prefix}-cosmos-${token}'
  plan: '${prefix}-plan-${token}'
  functionApp: '${prefix}-func-${token}'
  vnet: '${prefix}-vnet-${token}'
  emailService: '${prefix}-email-${token}'
  communication: '${prefix}-acs-${token}'
}
var allTags = union({ application: 'jwt-refresh-token' }, tags)

// Key Vault secret names: the app settings reference them, the deploy step writes them.
var secretNames = {
  algorithmKey: 'jwt-algorithm-key'
  rotationSecret: 'jwt-rotation-secret'
}

// ---------------------------------------------------------------- the app's identity

// Created before everything it needs access to, and granted its roles (roles.bicep) before the
// Function App exists: the app's first start can already resolve its Key Vault references and
// reach storage, Cosmos DB and Application Insights.
resource appIdentity 'Microsoft.ManagedIdentity/userAssignedIdentities@2023-01-31' = {
  name: names.identity
  location: location
  tags: allTags
}

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
    networkIsolation: networkIsolation
    logAnalyticsWorkspaceId: monitoring.outputs.logAnalyticsId
  }
}

module keyVault 'modules/keyvault.bicep' = {
  name: 'keyvault'
  params: {
    location: location
    tags: allTags
    name: names.keyVault
    logAnalyticsWorkspaceId: monitoring.outputs.logAnalyticsId
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
    networkIsolation: networkIsolation
    logAnalyticsWorkspaceId: monitoring.outputs.logAnalyticsId
  }
}

module network 'modules/network.bicep' = if (networkIsolation) {
  name: 'network'
  params: {
    location: location
    tags: allTags
    vnetName: names.vnet
    hostingPlan: hostingPlan
    storageAccountId: storage.outputs.id
    cosmosAccountId: cosmos.outputs.accountId
  }
}

module roles 'modules/roles.bicep' = {
  name: 'roles'
  params: {
    appPrincipalId: appIdentity.properties.principalId
    operatorPrincipalId: operatorPrincipalId
    operatorPrincipalType: operatorPrincipalType
    storageAccountName: storage.outputs.name
    keyVaultName: keyVault.outputs.name
    appInsightsName: monitoring.outputs.appInsightsName
    cosmosAccountName: cosmos.outputs.accountName
    cosmosDatabaseName: cosmos.outputs.databaseName
  }
}

// E-mail, only with sendEmail. Its role assignment is made inside the module; the Function App reads
// the module's outputs, so its settings are applied after that assignment exists.
module email 'modules/email.bicep' = if (sendEmail) {
  name: 'email'
  params: {
    tags: allTags
    emailServiceName: names.emailService
    communicationServiceName: names.communication
    dataLocation: emailDataLocation
    appPrincipalId: appIdentity.properties.principalId
    customDomainIds: emailCustomDomainIds
    fromAddress: emailFrom
  }
}

module functionApp 'modules/functionapp.bicep' = {
  name: 'functionapp'
  // The site and its app settings (Key Vault references included) only after every role exists.
  dependsOn: [
    roles
  ]
  params: {
    location: location
    tags: allTags
    planName: names.plan
    appName: names.functionApp
    hostingPlan: hostingPlan
    dedicatedSkuName: dedicatedSkuName
    instanceMemoryMB: instanceMemoryMB
    maximumInstanceCount: maximumInstanceCount
    alwaysReadyInstanceCount: alwaysReadyInstanceCount
    corsAllowedOrigins: corsAllowedOrigins
    appSubnetId: networkIsolation ? network!.outputs.appSubnetId : ''
    storageAccountName: storage.outputs.name
    deploymentContainerUrl: storage.outputs.deploymentContainerUrl
    appInsightsConnectionString: monitoring.outputs.appInsightsConnectionString
    identityResourceId: appIdentity.id
    identityClientId: appIdentity.properties.clientId
    jwtIssuer: jwtIssuer
    jwtAudience: jwtAudience
    jwtAlgorithm: jwtAlgorithm
    jwtClockSkewMs: jwtClockSkewMs
    jwtCreateExpiresInMs: jwtCreateExpiresInMs
    jwtRefreshExpiresInMs: jwtRefreshExpiresInMs
    jwtReuseGraceMs: jwtReuseGraceMs
    jwtLoginMaxFailures: jwtLoginMaxFailures
    jwtLoginLockoutMs: jwtLoginLockoutMs
    signInProviders: signInProviders
    keyVaultUri: keyVault.outputs.vaultUri
    algorithmKeySecretName: secretNames.algorithmKey
    rotationSecretName: secretNames.rotationSecret
    cosmosEndpoint: cosmos.outputs.documentEndpoint
    cosmosDatabaseName: cosmos.outputs.databaseName
    cosmosTokenContainerName: cosmosTokenContainerName
    cosmosUserContainerName: cosmosUserContainerName
    cosmosRequestTimeoutMs: cosmosRequestTimeoutMs
    sendEmail: sendEmail
    emailAcsEndpoint: sendEmail ? email!.outputs.endpoint : ''
    emailFrom: sendEmail ? email!.outputs.senderAddress : ''
    emailProductName: productName
  }
}

// ---------------------------------------------------------------- outputs (names and URLs only)

output functionAppName string = functionApp.outputs.name
output functionAppId string = functionApp.outputs.id
output functionAppDefaultHostName string = functionApp.outputs.defaultHostName
output tokenUrl string = 'https://${functionApp.outputs.defaultHostName}/api/token'
output jwksUrl string = 'https://${functionApp.outputs.defaultHostName}/api/jwks'
// The iss of every access token (JwtRefreshToken__Descriptor__Issuer): jwtIssuer, or
// https://<defaultHostName>/api when it is "". Resource servers check tokens against it.
output issuer string = functionApp.outputs.issuer
output jwtAlgorithm string = jwtAlgorithm
output appIdentityPrincipalId string = appIdentity.properties.principalId
output appIdentityClientId string = appIdentity.properties.clientId
output cosmosEndpoint string = cosmos.outputs.documentEndpoint
output cosmosAccountName string = cosmos.outputs.accountName
output cosmosDatabaseName string = cosmos.outputs.databaseName
output keyVaultName string = keyVault.outputs.name
output algorithmKeySecretName string = secretNames.algorithmKey
output rotationSecretName string = secretNames.rotationSecret
output storageAccountName string = storage.outputs.name
output appInsightsName string = monitoring.outputs.appInsightsName
output logAnalyticsWorkspaceName string = monitoring.outputs.logAnalyticsName
// E-mail (sendEmail; all "" without it): JwtRefreshToken__Email__From and __Acs__Endpoint, and the
// two names the custom-domain steps of infra/README.md need.
output emailSenderAddress string = sendEmail ? email!.outputs.senderAddress : ''
output communicationEndpoint string = sendEmail ? email!.outputs.endpoint : ''
output emailServiceName string = sendEmail ? email!.outputs.emailServiceName : ''
output communicationServiceName string = sendEmail ? email!.outputs.communicationServiceName : ''
