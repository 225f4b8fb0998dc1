// Every role the app's identity needs for its identity-based connections, and the same
// data-plane roles for the person (or pipeline) running azd, so the CLI works against Azure.
// Each connection the app reads (orchestrator/settings.py, the triggers' `connection=`) has its
// roles here; tests/infra/test_templates.py fails if one is missing.
param appPrincipalId string
@description('The deploying user or pipeline principal; empty: only the app gets roles.')
param userPrincipalId string
param userPrincipalType string
param stateAccountName string
param dataAccountName string
param serviceBusNamespaceName string
param eventHubNamespaceName string
param workspaceName string
param workspaceStorageAccountName string
param containerRegistryName string
param keyVaultName string
param appInsightsName string
param systemTopicPrincipalId string
param dataEventsHub string
param logAnalyticsName string

// Built-in role definition ids (the same in every tenant).
var roles = {
  storageBlobDataOwner: 'b7e6dc6d-f1e8-4753-8033-0f276bb0955b'
  storageBlobDataContributor: 'ba92f5b4-2d11-453d-a403-e96b0029c9fe'
  acrPull: '7f951dda-4ed3-4680-a7ca-43fe172d538d'
  storageQueueDataContributor: '974c5e8b-45b9-4653-ba55-5f855dd0fb88'
  serviceBusDataOwner: '090c5cfd-751d-490a-894a-3ce6f1109419'
  eventHubsDataOwner: 'f526a384-b230-433a-b45c-95f59c4a2dec'
  eventHubsDataSender: '2b629674-e913-4c01-ae53-ef4638d8f975'
  azureMLDataScientist: 'f6c7c914-8db3-469d-8ca1-694a8f32e121'
  keyVaultSecretsUser: '4633458b-17de-408a-b874-0445c86b69e6'
  keyVaultSecretsOfficer: 'b86a8fe4-44ce-4948-aee5-eccb2c155cd7'
  monitoringMetricsPublisher: '3913510d-42f4-4e42-8a64-420c390055eb'
  logAnalyticsReader: '73c42c96-874c-492b-b04d-ab87d138a893'
}

// The app, and the deploying principal when there is one: both get the data-plane roles.
var principals = concat(
  [
    { id: appPrincipalId, type: 'ServicePrincipal' }
  ],
  empty(userPrincipalId) ? [] : [
    { id: userPrincipalId, type: userPrincipalType }
  ]
)

resource stateAccount 'Microsoft.Storage/storageAccounts@2023-05-01' existing = {
  name: stateAccountName
}

resource dataAccount 'Microsoft.Storage/storageAccounts@2023-05-01' existing = {
  name: dataAccountName
}

resource serviceBus 'Microsoft.ServiceBus/namespaces@2022-10-01-preview' existing = {
  name: serviceBusNamespaceName
}

resource eventHubs 'Microsoft.EventHub/namespaces@2024-01-01' existing = {
  name: eventHubNamespaceName
}

resource dataEventsHubRef 'Microsoft.EventHub/namespaces/eventhubs@2024-01-01' existing = {
  parent: eventHubs
  name: dataEventsHub
}

resource workspace 'Microsoft.MachineLearningServices/workspaces@2024-10-01' existing = {
  name: workspaceName
}

resource workspaceStorage 'Microsoft.Storage/storageAccounts@2023-05-01' existing = {
  name: workspaceStorageAccountName
}

resource containerRegistry 'Microsoft.ContainerRegistry/registries@2023-07-01' existing = {
  name: containerRegistryName
}

resource keyVault 'Microsoft.KeyVault/vaults@2023-07-01' existing = {
  name: keyVaultName
}

resource appInsights 'Microsoft.Insights/components@2020-02-02' existing = {
  name: appInsightsName
}

// AzureWebJobsStorage: the host (leases, timers, the deployment package) and the app's state,
// audit and dead letters.
resource stateBlobOwner 'Microsoft.Authorization/roleAssignments@2022-04-01' = [
  for principal in principals: {
    name: guid(stateAccount.id, principal.id, roles.storageBlobDataOwner)
    scope: stateAccount
    properties: {
      principalId: principal.id
      principalType: principal.type
      roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roles.storageBlobDataOwner)
    }
  }
]

resource stateQueueContributor 'Microsoft.Authorization/roleAssignments@2022-04-01' = [
  for principal in principals: {
    name: guid(stateAccount.id, principal.id, roles.storageQueueDataContributor)
    scope: stateAccount
    properties: {
      principalId: principal.id
      principalType: principal.type
      roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roles.storageQueueDataContributor)
    }
  }
]

// DataStorage: the data the app and the training jobs (the cluster runs as the app) read.
resource dataBlobOwner 'Microsoft.Authorization/roleAssignments@2022-04-01' = [
  for principal in principals: {
    name: guid(dataAccount.id, principal.id, roles.storageBlobDataOwner)
    scope: dataAccount
    properties: {
      principalId: principal.id
      principalType: principal.type
      roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roles.storageBlobDataOwner)
    }
  }
]

resource dataQueueContributor 'Microsoft.Authorization/roleAssignments@2022-04-01' = [
  for principal in principals: {
    name: guid(dataAccount.id, principal.id, roles.storageQueueDataContributor)
    scope: dataAccount
    properties: {
      principalId: principal.id
      principalType: principal.type
      roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roles.storageQueueDataContributor)
    }
  }
]

// ServiceBusConnection: Owner, not Receiver + Sender: the Flex Consumption scaler reads the
// queues' runtime properties, which needs Manage.
resource serviceBusOwner 'Microsoft.Authorization/roleAssignments@2022-04-01' = [
  for principal in principals: {
    name: guid(serviceBus.id, principal.id, roles.serviceBusDataOwner)
    scope: serviceBus
    properties: {
      principalId: principal.id
      principalType: principal.type
      roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roles.serviceBusDataOwner)
    }
  }
]

// EventHubConnection: the trigger (with its checkpoints in AzureWebJobsStorage) and the
// lifecycle events the app publishes.
resource eventHubsOwner 'Microsoft.Authorization/roleAssignments@2022-04-01' = [
  for principal in principals: {
    name: guid(eventHubs.id, principal.id, roles.eventHubsDataOwner)
    scope: eventHubs
    properties: {
      principalId: principal.id
      principalType: principal.type
      roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roles.eventHubsDataOwner)
    }
  }
]

// AZUREML_WORKSPACE and MLFLOW_TRACKING_URI: pipeline jobs, online deployments and traffic,
// the registry's tags, MLflow metrics.
resource workspaceDataScientist 'Microsoft.Authorization/roleAssignments@2022-04-01' = [
  for principal in principals: {
    name: guid(workspace.id, principal.id, roles.azureMLDataScientist)
    scope: workspace
    properties: {
      principalId: principal.id
      principalType: principal.type
      roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roles.azureMLDataScientist)
    }
  }
]

// The workspace's storage (identity datastores): the training cluster runs as the app's
// identity and reads snapshots and writes outputs there; CANARY_RECORDS_URI, the data
// collector's records the canary gate reads (latency, accuracy), lands there too.
resource workspaceStorageContributor 'Microsoft.Authorization/roleAssignments@2022-04-01' = [
  for principal in principals: {
    name: guid(workspaceStorage.id, principal.id, roles.storageBlobDataContributor)
    scope: workspaceStorage
    properties: {
      principalId: principal.id
      principalType: principal.type
      roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roles.storageBlobDataContributor)
    }
  }
]

// The training cluster (running as the app's identity) pulls its environment images.
resource appAcrPull 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(containerRegistry.id, appPrincipalId, roles.acrPull)
  scope: containerRegistry
  properties: {
    principalId: appPrincipalId
    principalType: 'ServicePrincipal'
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roles.acrPull)
  }
}

// MESSAGE_SIGNING_KEY: the app reads the secret; the deploying principal creates it
// (hooks/postprovision.sh).
resource appSecretsUser 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(keyVault.id, appPrincipalId, roles.keyVaultSecretsUser)
  scope: keyVault
  properties: {
    principalId: appPrincipalId
    principalType: 'ServicePrincipal'
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roles.keyVaultSecretsUser)
  }
}

resource userSecretsOfficer 'Microsoft.Authorization/roleAssignments@2022-04-01' = if (!empty(userPrincipalId)) {
  name: guid(keyVault.id, userPrincipalId, roles.keyVaultSecretsOfficer)
  scope: keyVault
  properties: {
    principalId: userPrincipalId
    principalType: userPrincipalType
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roles.keyVaultSecretsOfficer)
  }
}

// APPLICATIONINSIGHTS_AUTHENTICATION_STRING: telemetry sent with Entra ID (local auth is off).
resource appMetricsPublisher 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(appInsights.id, appPrincipalId, roles.monitoringMetricsPublisher)
  scope: appInsights
  properties: {
    principalId: appPrincipalId
    principalType: 'ServicePrincipal'
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roles.monitoringMetricsPublisher)
  }
}

// CANARY_LATENCY_WORKSPACE_ID: the latency gate queries the endpoints' traffic log.
resource logAnalytics 'Microsoft.OperationalInsights/workspaces@2023-09-01' existing = {
  name: logAnalyticsName
}

resource appLogAnalyticsReader 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(logAnalytics.id, appPrincipalId, roles.logAnalyticsReader)
  scope: logAnalytics
  properties: {
    principalId: appPrincipalId
    principalType: 'ServicePrincipal'
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roles.logAnalyticsReader)
  }
}

// Event Grid's system topic: its dead letters go to the state account, and on the Event Hubs
// route (hooks/postdeploy.sh, DATA_EVENTS_ROUTE=eventhub) it sends to the data-ready hub.
resource topicDeadLetterWriter 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(stateAccount.id, systemTopicPrincipalId, roles.storageBlobDataContributor)
  scope: stateAccount
  properties: {
    principalId: systemTopicPrincipalId
    principalType: 'ServicePrincipal'
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roles.storageBlobDataContributor)
  }
}

resource topicHubSender 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(dataEventsHubRef.id, systemTopicPrincipalId, roles.eventHubsDataSender)
  scope: dataEventsHubRef
  properties: {
    principalId: systemTopicPrincipalId
    principalType: 'ServicePrincipal'
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roles.eventHubsDataSender)
  }
}
