// Azure Communication Services Email, deployed by main.bicep only when sendEmail is true: an Email
// Communication Service with its free Azure managed domain (<guid>.azurecomm.net: no DNS to set up,
// low sending limits), a Communication Services resource linked to that domain (and to the verified
// custom domains listed in customDomainIds), and the role that lets the app's identity send through
// it with an Entra ID token (POST https://<hostName>/emails:send). No access key is read or stored.
// Both resources are global; their data stays in dataLocation, which must be the same for the two
// (a domain links only to a Communication Services resource of its own geography).

@description('Name of the Email Communication Service (1-63 letters, digits, hyphens).')
param emailServiceName string

@description('Name of the Communication Services resource: globally unique, it becomes <name>.<geography>.communication.azure.com.')
param communicationServiceName string

@description('Geography where both resources keep their data at rest, e.g. United States or Europe.')
param dataLocation string

@description('Tags applied to every resource.')
param tags object

@description('Principal (object) id of the app\'s user-assigned identity.')
param appPrincipalId string

@description('Resource ids of verified custom domains linked next to the Azure managed domain (see infra/README.md).')
param customDomainIds array = []

@description('Sender address; "" for DoNotReply@<the Azure managed domain>.')
param fromAddress string = ''

// Built-in "Communication and Email Service Owner" (the id is the same in every tenant): the role
// Microsoft names for an Entra ID identity that sends email through this resource; the narrower
// alternative is a custom role with Microsoft.Communication/CommunicationServices/Read and /Write
// and Microsoft.Communication/EmailServices/write (infra/README.md, "E-mail").
var communicationAndEmailServiceOwner = '09976791-48a7-449e-bb21-39d1a415f350'

resource emailService 'Microsoft.Communication/emailServices@2023-04-01' = {
  name: emailServiceName
  location: 'global'
  tags: tags
  properties: {
    dataLocation: dataLocation
  }
}

// The Azure managed domain must have this name; engagement tracking off: no tracking pixel and no
// rewritten links in mails that carry one-time codes.
resource managedDomain 'Microsoft.Communication/emailServices/domains@2023-04-01' = {
  parent: emailService
  name: 'AzureManagedDomain'
  location: 'global'
  tags: tags
  properties: {
    domainManagement: 'AzureManaged'
    userEngagementTracking: 'Disabled'
  }
}

// linkedDomains is the whole list: a redeployment unlinks a domain linked by hand, so custom domains
// are linked through customDomainIds (main.bicep param emailCustomDomainIds).
resource communication 'Microsoft.Communication/communicationServices@2023-04-01' = {
  name: communicationServiceName
  location: 'global'
  tags: tags
  properties: {
    dataLocation: dataLocation
    linkedDomains: concat([ managedDomain.id ], customDomainIds)
  }
}

// Scoped to this Communication Services resource only (not the email service or the group).
resource sendRoleAssignment 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(communication.id, appPrincipalId, communicationAndEmailServiceOwner)
  scope: communication
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', communicationAndEmailServiceOwner)
    principalId: appPrincipalId
    principalType: 'ServicePrincipal'
  }
}

output endpoint string = 'https://${communication.properties.hostName}'
output senderAddress string = empty(fromAddress) ? 'DoNotReply@${managedDomain.properties.mailFromSenderDomain}' : fromAddress
output emailServiceName string = emailService.name
output communicationServiceName string = communication.name
