// Example parameters: edit the audience and prefix. No secret is a parameter: the signing key and
// the rotation secret are written into Key Vault after the deployment (scripts/deploy.sh,
// docs/azure-deployment.md). The operator's object id and an optional issuer come from the
// environment so this file stays the same for everyone:
//   export OPERATOR_PRINCIPAL_ID="$(az ad signed-in-user show --query id -o tsv)"
//   export JWT_ISSUER=https://auth.example.com   # optional; unset: https://<app host>/api
using 'main.bicep'

param namePrefix = 'jwtrt'

param hostingPlan = 'FlexConsumption'
param alwaysReadyInstanceCount = 0
param networkIsolation = false
param corsAllowedOrigins = []

param operatorPrincipalId = readEnvironmentVariable('OPERATOR_PRINCIPAL_ID', '')
param operatorPrincipalType = readEnvironmentVariable('OPERATOR_PRINCIPAL_TYPE', 'User')

param jwtIssuer = readEnvironmentVariable('JWT_ISSUER', '')
param jwtAudience = 'api://example-app'
param jwtAlgorithm = 'ES256'

param jwtCreateExpiresInMs = 300000
param jwtRefreshExpiresInMs = 604800000
param jwtReuseGraceMs = 10000
param jwtLoginMaxFailures = 5
param jwtLoginLockoutMs = 900000

param cosmosServerless = true
param cosmosDatabaseName = 'jwt-refresh-token'
param cosmosTokenContainerName = 'tokens'
param cosmosUserContainerName = 'users'

// E-mail through Azure Communication Services: off for a first deployment (no domain needed).
// true: an Azure managed domain sends as DoNotReply@<guid>.azurecomm.net (low limits); a custom
// domain: infra/README.md, "DNS steps for a custom domain", then emailFrom and emailCustomDomainIds.
param sendEmail = false
param emailDataLocation = 'United States'
param productName = 'jwt-refresh-token'
param emailFrom = ''
param emailCustomDomainIds = []

param tags = {
  environment: 'dev'
}
