// The Function App on a Flex Consumption plan (Python 3.11), running as the user-assigned identity,
// its package in the state account's `app-package` container (read with that identity), and
// every app setting the app reads in Azure (local.settings.sample.json, AzureValues).
// tests/infra checks that each identity-based connection the app reads is set here.
param location string
param tags object
param resourceToken string
param identityId string
param identityClientId string
param stateAccountName string
param deploymentContainer string
param stateContainer string
param dataAccountName string
param dataContainer string
param serviceBusNamespaceName string
param orchestratorQueue string
param approvalsQueue string
param maxDeliveries int
param eventHubNamespaceName string
param dataEventsHub string
param lifecycleEventsHub string
param workspaceName string
param workspaceId string
param computeName string
param deploymentInstanceType string
param keyVaultName string
param appInsightsConnectionString string
param entraTenantId string
param entraApiAudience string
param canaryRecordsUri string
param canaryFeedbackUri string
@description('CANARY_LATENCY_WORKSPACE_ID: the Log Analytics workspace (customer id) holding the endpoints\' traffic log.')
param canaryLatencyWorkspaceId string

var functionAppName = 'func-${resourceToken}'
var storageSuffix = environment().suffixes.storage
var stateBlobUri = 'https://${stateAccountName}.blob.${storageSuffix}'
var stateQueueUri = 'https://${stateAccountName}.queue.${storageSuffix}'
var dataBlobUri = 'https://${dataAccountName}.blob.${storageSuffix}'
var dataQueueUri = 'https://${dataAccountName}.queue.${storageSuffix}'
var serviceBusHost = '${serviceBusNamespaceName}.servicebus.windows.net'
var eventHubHost = '${eventHubNamespaceName}.servicebus.windows.net'
var mlflowTrackingUri = 'azureml://${location}.api.azureml.ms/mlflow/v1.0${workspaceId}'

// Flex Consumption takes the runtime from functionAppConfig: FUNCTIONS_WORKER_RUNTIME and
// FUNCTIONS_EXTENSION_VERSION must not be app settings there. Each `<connection>__credential`
// and `__clientId` pin the host's identity-based connection to the user-assigned identity;
// AZURE_CLIENT_ID does the same for the app's own SDK clients (DefaultAzureCredential).
var appSettings = {
  AzureWebJobsStorage__accountName: stateAccountName
  AzureWebJobsStorage__blobServiceUri: stateBlobUri
  AzureWebJobsStorage__queueServiceUri: stateQueueUri
  AzureWebJobsStorage__credential: 'managedidentity'
  AzureWebJobsStorage__clientId: identityClientId
  DataStorage__accountName: dataAccountName
  DataStorage__blobServiceUri: dataBlobUri
  DataStorage__queueServiceUri: dataQueueUri
  DataStorage__credential: 'managedidentity'
  DataStorage__clientId: identityClientId
  ServiceBusConnection__fullyQualifiedNamespace: serviceBusHost
  ServiceBusConnection__credential: 'managedidentity'
  ServiceBusConnection__clientId: identityClientId
  EventHubConnection__fullyQualifiedNamespace: eventHubHost
  EventHubConnection__credential: 'managedidentity'
  EventHubConnection__clientId: identityClientId
  AZURE_CLIENT_ID: identityClientId
  APPLICATIONINSIGHTS_CONNECTION_STRING: appInsightsConnectionString
  APPLICATIONINSIGHTS_AUTHENTICATION_STRING: 'ClientId=${identityClientId};Authorization=AAD'
  DATA_CONTAINER: dataContainer
  STATE_CONTAINER: stateContainer
  ORCHESTRATOR_QUEUE: orchestratorQueue
  APPROVALS_QUEUE: approvalsQueue
  DATA_EVENTS_HUB: dataEventsHub
  LIFECYCLE_EVENTS_HUB: lifecycleEventsHub
  MAX_DELIVERIES: string(maxDeliveries)
  MAX_EFFECT_ATTEMPTS: '5'
  EFFECT_RETRY_SECONDS: '900'
  OVERDUE_CHECK_SECONDS: '60'
  DEPLOYMENT_POLL_SECONDS: '60'
  AZUREML_SUBSCRIPTION_ID: subscription().subscriptionId
  AZUREML_RESOURCE_GROUP: resourceGroup().name
  AZUREML_WORKSPACE: workspaceName
  AZUREML_COMPUTE: computeName
  AZUREML_INSTANCE_TYPE: deploymentInstanceType
  MLFLOW_TRACKING_URI: mlflowTrackingUri
  ENTRA_TENANT_ID: entraTenantId
  ENTRA_API_AUDIENCE: entraApiAudience
  MESSAGE_SIGNING_KEY: '@Microsoft.KeyVault(VaultName=${keyVaultName};SecretName=message-signing-key)'
  CANARY_RECORDS_URI: canaryRecordsUri
  CANARY_FEEDBACK_URI: canaryFeedbackUri
  CANARY_LATENCY_WORKSPACE_ID: canaryLatencyWorkspaceId
  RETRAIN_LOG_LEVEL: 'INFO'
}

module plan 'br/public:avm/res/web/serverfarm:0.5.0' = {
  name: 'flex-plan'
  params: {
    name: 'plan-${resourceToken}'
    location: location
    tags: tags
    skuName: 'FC1'
    kind: 'functionapp'
    reserved: true
    zoneRedundant: false
  }
}

module functionApp 'br/public:avm/res/web/site:0.19.3' = {
  name: 'function-app'
  params: {
    name: functionAppName
    kind: 'functionapp,linux'
    location: location
    tags: union(tags, { 'azd-service-name': 'orchestrator' })
    serverFarmResourceId: plan.outputs.resourceId
    httpsOnly: true
    managedIdentities: {
      userAssignedResourceIds: [
        identityId
      ]
    }
    // Key Vault references (MESSAGE_SIGNING_KEY) resolve with the same identity.
    keyVaultAccessIdentityResourceId: identityId
    functionAppConfig: {
      deployment: {
        storage: {
          type: 'blobContainer'
          value: '${stateBlobUri}/${deploymentContainer}'
          authentication: {
            type: 'UserAssignedIdentity'
            userAssignedIdentityResourceId: identityId
          }
        }
      }
      scaleAndConcurrency: {
        instanceMemoryMB: 2048
        maximumInstanceCount: 40
      }
      runtime: {
        name: 'python'
        version: '3.11'
      }
    }
    siteConfig: {
      alwaysOn: false
      minTlsVersion: '1.2'
      ftpsState: 'Disabled'
      appSettings: [for setting in items(appSettings): { name: setting.key, value: setting.value }]
    }
  }
}

output functionAppName string = functionApp.outputs.name
output stateBlobUri string = stateBlobUri
output stateQueueUri string = stateQueueUri
output dataBlobUri string = dataBlobUri
output serviceBusHost string = serviceBusHost
output eventHubHost string = eventHubHost
output mlflowTrackingUri string = mlflowTrackingUri
