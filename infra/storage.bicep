// The two storage accounts, shared keys off: `state` (the host's AzureWebJobsStorage, the app's
// state, audit and dead letters, and the deployment package) and `data` (where training data
// lands, DataStorage), with the Event Grid system topic on the data account whose BlobCreated
// subscription hooks/postdeploy.sh creates.
param location string
param tags object
param resourceToken string
param dataContainer string
param logAnalyticsWorkspaceId string

var deploymentContainer = 'app-package'
var stateContainer = 'retrain-state'
var eventGridDeadLetterContainer = 'eventgrid-dead-letters'

module stateAccount 'br/public:avm/res/storage/storage-account:0.31.0' = {
  name: 'state-account'
  params: {
    name: 'st${resourceToken}'
    location: location
    tags: tags
    skuName: 'Standard_LRS'
    kind: 'StorageV2'
    allowSharedKeyAccess: false
    defaultToOAuthAuthentication: true
    allowBlobPublicAccess: false
    minimumTlsVersion: 'TLS1_2'
    networkAcls: {
      defaultAction: 'Allow'
      bypass: 'AzureServices'
    }
    blobServices: {
      containers: [
        { name: deploymentContainer }
        { name: stateContainer }
        { name: 'dead-letters' }
        { name: eventGridDeadLetterContainer }
        { name: 'feedback' }
      ]
      // StorageBlobLogs: the dead-letters alert (alerts.bicep) counts the records written there.
      diagnosticSettings: [
        {
          name: 'blob-writes'
          workspaceResourceId: logAnalyticsWorkspaceId
          logCategoriesAndGroups: [
            { category: 'StorageWrite' }
          ]
          metricCategories: []
        }
      ]
    }
  }
}

module dataAccount 'br/public:avm/res/storage/storage-account:0.31.0' = {
  name: 'data-account'
  params: {
    name: 'stdata${resourceToken}'
    location: location
    tags: tags
    skuName: 'Standard_LRS'
    kind: 'StorageV2'
    allowSharedKeyAccess: false
    defaultToOAuthAuthentication: true
    allowBlobPublicAccess: false
    minimumTlsVersion: 'TLS1_2'
    networkAcls: {
      defaultAction: 'Allow'
      bypass: 'AzureServices'
    }
    blobServices: {
      containers: [
        { name: dataContainer }
      ]
    }
  }
}

// Its identity writes Event Grid's dead letters to the state account (rbac.bicep) and, on the
// Event Hubs route, sends to the data-ready hub: shared keys are off everywhere.
module systemTopic 'br/public:avm/res/event-grid/system-topic:0.6.4' = {
  name: 'data-system-topic'
  params: {
    name: 'evgt-data-${resourceToken}'
    location: location
    tags: tags
    source: dataAccount.outputs.resourceId
    topicType: 'Microsoft.Storage.StorageAccounts'
    managedIdentities: {
      systemAssigned: true
    }
  }
}

output stateAccountName string = stateAccount.outputs.name
output dataAccountName string = dataAccount.outputs.name
output deploymentContainer string = deploymentContainer
output stateContainer string = stateContainer
output systemTopicName string = systemTopic.outputs.name
output systemTopicId string = systemTopic.outputs.resourceId
// Declared optional by the module (none without a system identity): this topic has one.
output systemTopicPrincipalId string = systemTopic.outputs.?systemAssignedMIPrincipalId ?? ''
output stateAccountId string = stateAccount.outputs.resourceId
output eventGridDeadLetterContainer string = eventGridDeadLetterContainer
