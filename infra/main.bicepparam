// Example parameters. Secrets come from environment variables, never from this file:
//   export JWT_ALGORITHM_KEY="$(openssl rand -base64 48)"
//   export JWT_ROTATION_SECRET="$(openssl rand -base64 48)"
// Keep both values (e.g. in your pipeline's secret store): every deployment writes them to Key
// Vault, and a different JWT_ROTATION_SECRET ends every session (see infra/README.md).
using 'main.bicep'

param namePrefix = 'jwtrt'

param hostingPlan = 'FlexConsumption'

param jwtIssuer = 'https://auth.example.com'
param jwtAudience = 'api://example-app'
param jwtAlgorithm = 'HS256'

param jwtAlgorithmKey = readEnvironmentVariable('JWT_ALGORITHM_KEY')
param jwtRotationSecret = readEnvironmentVariable('JWT_ROTATION_SECRET')

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
