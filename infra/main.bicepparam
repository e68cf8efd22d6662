// Example parameters: edit the issuer, audience and prefix. No secret is a parameter: the signing
// key and the rotation secret are written into Key Vault after the deployment (README.md,
// "Deploy to Azure"). The operator's object id comes from the environment so this file stays
// the same for everyone:
//   export OPERATOR_PRINCIPAL_ID="$(az ad signed-in-user show --query id -o tsv)"
using 'main.bicep'

param namePrefix = 'jwtrt'

param hostingPlan = 'FlexConsumption'
param alwaysReadyInstanceCount = 0
param networkIsolation = false
param corsAllowedOrigins = []

param operatorPrincipalId = readEnvironmentVariable('OPERATOR_PRINCIPAL_ID', '')
param operatorPrincipalType = 'User'

param jwtIssuer = 'https://auth.example.com'
param jwtAudience = 'api://example-app'
param jwtAlgorithm = 'HS256'

param jwtCreateExpiresInMs = 300000
param jwtRefreshExpiresInMs = 604800000
param jwtReuseGraceMs = 10000
param jwtLoginMaxFailures = 5
param jwtLoginLockoutMs = 900000

param cosmosServerless = true
param cosmosDatabaseName = 'jwt-refresh-token'
param cosmosTokenContainerName = 'tokens'
param cosmosUserContainerName = 'users'

param tags = {
  environment: 'dev'
}
