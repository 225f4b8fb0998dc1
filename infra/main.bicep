// The whole system in one subscription: `azd up` provisions this, deploys the app, then runs
// hooks/postprovision.sh (the signing key) and hooks/postdeploy.sh (the Event Grid subscription).
// Modules come from the public registry (Azure Verified Modules, pinned by version) or this folder.
targetScope = 'subscription'

@minLength(1)
@maxLength(64)
@description('The azd environment name: the resource group is rg-<name>, every name ends in a hash of it.')
param environmentName string

@minLength(1)
@description('Region of every resource. Flex Consumption and Azure ML must both be offered there.')
param location string

@description('Object id of the person (or pipeline principal) running azd: given the same data-plane roles as the app, so the CLI works against Azure. Empty: none.')
param principalId string = ''

@allowed([
  'User'
  'ServicePrincipal'
])
param principalType string = 'User'

@description('One entry per endpoint a policy in policies/ names (its endpoint, and each later ring\'s): the model and the managed online endpoint.')
param models array

@description('The container new training data lands in (DATA_CONTAINER; every policy\'s data.container).')
param dataContainer string = 'training-data'

@description('The Entra ID tenant whose tokens a person\'s command carries (ENTRA_TENANT_ID).')
param entraTenantId string = tenant().tenantId

@minLength(1)
@description('The API app registration\'s Application ID URI and/or client id (ENTRA_API_AUDIENCE; README "Who can move a promotion").')
param entraApiAudience string

@description('The API app registration\'s client id (ENTRA_CLIENT_ID): App Service authentication signs people in with it, so the dashboard acts as the signed-in person (docs/dashboard.md). Empty: App Service authentication is left as it is.')
param entraClientId string = ''

@description('App Service authentication when entraClientId is given (default true); false leaves it as it is.')
param appServiceAuthentication bool = true

@description('The scope the dashboard\'s sign-in asks for (ENTRA_API_SCOPE). Empty: <the first of entraApiAudience>/user_impersonation.')
param entraApiScope string = ''

@description('Where alerts are e-mailed. Empty: the alert rules fire without notifying anyone.')
param alertEmail string = ''

@description('VM size of the training cluster (it scales to zero nodes).')
param computeVmSize string = 'Standard_DS3_v2'

@minValue(1)
param computeMaxNodes int = 2

@description('Instance type of each online deployment the app creates (AZUREML_INSTANCE_TYPE).')
param deploymentInstanceType string = 'Standard_DS3_v2'

@minValue(1)
@description('Deliveries before a Service Bus message is dead-lettered; the app reads the same number (MAX_DELIVERIES).')
param maxDeliveries int = 5

@description('CANARY_RECORDS_URI: the data collector output the canary gate reads (docs/endpoint.md). Empty until known.')
param canaryRecordsUri string = ''

@description('CANARY_FEEDBACK_URI: the feedback the canary gate reads. Empty until known.')
param canaryFeedbackUri string = ''

var resourceToken = toLower(uniqueString(subscription().id, environmentName, location))
var tags = {
  'azd-env-name': environmentName
}
// App Service authentication (app.bicep) with the API's app registration.
var signIn = appServiceAuthentication && !empty(entraClientId)

resource rg 'Microsoft.Resources/resourceGroups@2024-03-01' = {
  name: 'rg-${environmentName}'
  location: location
  tags: tags
}

// The app's one identity: every connection (host storage, data, Service Bus, Event Hubs, Azure ML,
// Key Vault, Application Insights) authenticates as it; no connection string, no key.
module appIdentity 'br/public:avm/res/managed-identity/user-assigned-identity:0.4.1' = {
  name: 'app-identity'
  scope: rg
  params: {
    name: 'id-func-${resourceToken}'
    location: location
    tags: tags
  }
}

// The identity App Service authentication presents to Entra ID instead of a client secret (a
// federated credential of the API's app registration: infra/hooks/postprovision.sh). Its own,
// not the app's: the app's identity also runs the training cluster, which must not be able to
// act as the app registration.
module authIdentity 'br/public:avm/res/managed-identity/user-assigned-identity:0.4.1' = if (signIn) {
  name: 'auth-identity'
  scope: rg
  params: {
    name: 'id-auth-${resourceToken}'
    location: location
    tags: tags
  }
}

module monitoring 'monitoring.bicep' = {
  name: 'monitoring'
  scope: rg
  params: {
    location: location
    tags: tags
    resourceToken: resourceToken
  }
}

module storage 'storage.bicep' = {
  name: 'storage'
  scope: rg
  params: {
    location: location
    tags: tags
    resourceToken: resourceToken
    dataContainer: dataContainer
    logAnalyticsWorkspaceId: monitoring.outputs.logAnalyticsWorkspaceId
  }
}

module messaging 'messaging.bicep' = {
  name: 'messaging'
  scope: rg
  params: {
    location: location
    tags: tags
    resourceToken: resourceToken
    maxDeliveries: maxDeliveries
  }
}

module secrets 'secrets.bicep' = {
  name: 'secrets'
  scope: rg
  params: {
    location: location
    tags: tags
    resourceToken: resourceToken
  }
}

module ml 'ml.bicep' = {
  name: 'ml'
  scope: rg
  params: {
    location: location
    tags: tags
    resourceToken: resourceToken
    applicationInsightsId: monitoring.outputs.applicationInsightsId
    computeIdentityId: appIdentity.outputs.resourceId
    computeVmSize: computeVmSize
    computeMaxNodes: computeMaxNodes
    models: models
    logAnalyticsWorkspaceId: monitoring.outputs.logAnalyticsWorkspaceId
  }
}

module app 'app.bicep' = {
  name: 'app'
  scope: rg
  params: {
    location: location
    tags: tags
    resourceToken: resourceToken
    identityId: appIdentity.outputs.resourceId
    identityClientId: appIdentity.outputs.clientId
    stateAccountName: storage.outputs.stateAccountName
    deploymentContainer: storage.outputs.deploymentContainer
    stateContainer: storage.outputs.stateContainer
    dataAccountName: storage.outputs.dataAccountName
    dataContainer: dataContainer
    serviceBusNamespaceName: messaging.outputs.serviceBusNamespaceName
    orchestratorQueue: messaging.outputs.orchestratorQueue
    approvalsQueue: messaging.outputs.approvalsQueue
    maxDeliveries: maxDeliveries
    eventHubNamespaceName: messaging.outputs.eventHubNamespaceName
    dataEventsHub: messaging.outputs.dataEventsHub
    lifecycleEventsHub: messaging.outputs.lifecycleEventsHub
    workspaceName: ml.outputs.workspaceName
    workspaceId: ml.outputs.workspaceId
    computeName: ml.outputs.computeName
    deploymentInstanceType: deploymentInstanceType
    keyVaultName: secrets.outputs.keyVaultName
    appInsightsConnectionString: monitoring.outputs.applicationInsightsConnectionString
    entraTenantId: entraTenantId
    entraApiAudience: entraApiAudience
    canaryRecordsUri: canaryRecordsUri
    canaryFeedbackUri: canaryFeedbackUri
    canaryLatencyWorkspaceId: monitoring.outputs.logAnalyticsCustomerId
    entraClientId: signIn ? entraClientId : ''
    entraApiScope: entraApiScope
    authIdentityId: signIn ? authIdentity.outputs.resourceId : ''
    authIdentityClientId: signIn ? authIdentity.outputs.clientId : ''
  }
}

module rbac 'rbac.bicep' = {
  name: 'rbac'
  scope: rg
  params: {
    appPrincipalId: appIdentity.outputs.principalId
    userPrincipalId: principalId
    userPrincipalType: principalType
    stateAccountName: storage.outputs.stateAccountName
    dataAccountName: storage.outputs.dataAccountName
    serviceBusNamespaceName: messaging.outputs.serviceBusNamespaceName
    eventHubNamespaceName: messaging.outputs.eventHubNamespaceName
    workspaceName: ml.outputs.workspaceName
    workspaceStorageAccountName: ml.outputs.workspaceStorageAccountName
    containerRegistryName: ml.outputs.containerRegistryName
    keyVaultName: secrets.outputs.keyVaultName
    appInsightsName: monitoring.outputs.applicationInsightsName
    systemTopicPrincipalId: storage.outputs.systemTopicPrincipalId
    dataEventsHub: messaging.outputs.dataEventsHub
    logAnalyticsName: monitoring.outputs.logAnalyticsName
  }
}

module alerts 'alerts.bicep' = {
  name: 'alerts'
  scope: rg
  params: {
    location: location
    tags: tags
    resourceToken: resourceToken
    alertEmail: alertEmail
    logAnalyticsWorkspaceId: monitoring.outputs.logAnalyticsWorkspaceId
    serviceBusNamespaceId: messaging.outputs.serviceBusNamespaceId
    systemTopicId: storage.outputs.systemTopicId
  }
}

// azd writes these into the environment (`azd env get-values`): the hooks read them, and the
// settings named as the app reads them point the CLI at this deployment.
output AZURE_LOCATION string = location
output AZURE_TENANT_ID string = tenant().tenantId
output AZURE_RESOURCE_GROUP string = rg.name
output AZURE_FUNCTION_APP_NAME string = app.outputs.functionAppName
output AZURE_KEY_VAULT_NAME string = secrets.outputs.keyVaultName
output EVENTGRID_SYSTEM_TOPIC_NAME string = storage.outputs.systemTopicName
output EVENTGRID_SYSTEM_TOPIC_ID string = storage.outputs.systemTopicId
output EVENTGRID_DEAD_LETTER_ACCOUNT_ID string = storage.outputs.stateAccountId
output EVENTGRID_DEAD_LETTER_CONTAINER string = storage.outputs.eventGridDeadLetterContainer
output DATA_EVENTS_HUB_ID string = messaging.outputs.dataEventsHubId
output DATA_CONTAINER string = dataContainer
output AzureWebJobsStorage__blobServiceUri string = app.outputs.stateBlobUri
output AzureWebJobsStorage__queueServiceUri string = app.outputs.stateQueueUri
output DataStorage__blobServiceUri string = app.outputs.dataBlobUri
output ServiceBusConnection__fullyQualifiedNamespace string = app.outputs.serviceBusHost
output EventHubConnection__fullyQualifiedNamespace string = app.outputs.eventHubHost
output AZUREML_SUBSCRIPTION_ID string = subscription().subscriptionId
output AZUREML_RESOURCE_GROUP string = rg.name
output AZUREML_WORKSPACE string = ml.outputs.workspaceName
output AZUREML_COMPUTE string = ml.outputs.computeName
output MLFLOW_TRACKING_URI string = app.outputs.mlflowTrackingUri
output ENTRA_TENANT_ID string = entraTenantId
output ENTRA_API_AUDIENCE string = entraApiAudience
// For the postprovision hook (with ENTRA_CLIENT_ID, the input): the app registration's redirect
// URI and federated credential. Empty: App Service authentication is not configured here.
output AUTH_IDENTITY_PRINCIPAL_ID string = signIn ? authIdentity.outputs.principalId : ''
output AZURE_FUNCTION_APP_HOSTNAME string = app.outputs.defaultHostname
