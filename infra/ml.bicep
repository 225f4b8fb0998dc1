// The Azure ML workspace with its own storage (shared keys off, identity datastores), Key Vault
// and container registry, sharing the app's Application Insights; a CPU cluster that scales to
// zero; and one managed online endpoint per policy endpoint (the `models` parameter: one entry
// per policy file, and one more per later ring it names). Endpoints start empty: the app
// creates, shifts and deletes their deployments.
param location string
param tags object
param resourceToken string
param applicationInsightsId string
@description('The app\'s user-assigned identity: the training cluster runs as it, so jobs read the data account with the app\'s roles.')
param computeIdentityId string
param computeVmSize string
param computeMaxNodes int
param models array
@description('The Log Analytics workspace (resource id) that receives each endpoint\'s traffic log: the canary\'s latency samples (adapters/traffic_log_latency.py).')
param logAnalyticsWorkspaceId string

var workspaceName = 'mlw-${resourceToken}'
var computeName = 'cpu-cluster'

module workspaceStorage 'br/public:avm/res/storage/storage-account:0.31.0' = {
  name: 'ml-storage'
  params: {
    name: 'stml${resourceToken}'
    location: location
    tags: tags
    skuName: 'Standard_LRS'
    kind: 'StorageV2'
    allowSharedKeyAccess: false
    defaultToOAuthAuthentication: true
    allowBlobPublicAccess: false
    minimumTlsVersion: 'TLS1_2'
  }
}

module workspaceVault 'br/public:avm/res/key-vault/vault:0.13.3' = {
  name: 'ml-key-vault'
  params: {
    name: 'kvml-${resourceToken}'
    location: location
    tags: tags
    sku: 'standard'
    enableRbacAuthorization: true
    enablePurgeProtection: false
    softDeleteRetentionInDays: 7
  }
}

module registry 'br/public:avm/res/container-registry/registry:0.12.1' = {
  name: 'ml-registry'
  params: {
    name: 'cr${resourceToken}'
    location: location
    tags: tags
    acrSku: 'Basic'
    acrAdminUserEnabled: false
  }
}

module workspace 'br/public:avm/res/machine-learning-services/workspace:0.13.2' = {
  name: 'ml-workspace'
  params: {
    name: workspaceName
    location: location
    tags: tags
    sku: 'Basic'
    kind: 'Default'
    managedIdentities: {
      systemAssigned: true
    }
    associatedStorageAccountResourceId: workspaceStorage.outputs.resourceId
    associatedKeyVaultResourceId: workspaceVault.outputs.resourceId
    associatedApplicationInsightsResourceId: applicationInsightsId
    associatedContainerRegistryResourceId: registry.outputs.resourceId
    // The workspace's datastores use identities: its storage allows no shared key.
    systemDatastoresAuthMode: 'Identity'
    publicNetworkAccess: 'Enabled'
  }
}

// Children of the workspace: no Azure Verified Module covers a compute cluster or an online
// endpoint on its own, so they are declared here.
resource workspaceRef 'Microsoft.MachineLearningServices/workspaces@2024-10-01' existing = {
  name: workspaceName
}

resource compute 'Microsoft.MachineLearningServices/workspaces/computes@2024-10-01' = {
  parent: workspaceRef
  name: computeName
  location: location
  tags: tags
  identity: {
    type: 'UserAssigned'
    userAssignedIdentities: {
      '${computeIdentityId}': {}
    }
  }
  properties: {
    computeType: 'AmlCompute'
    disableLocalAuth: true
    properties: {
      vmSize: computeVmSize
      vmPriority: 'Dedicated'
      osType: 'Linux'
      scaleSettings: {
        minNodeCount: 0
        maxNodeCount: computeMaxNodes
        nodeIdleTimeBeforeScaleDown: 'PT5M'
      }
    }
  }
  dependsOn: [
    workspace
  ]
}

// Scoring takes Entra ID tokens (AADToken): no endpoint key exists to leak.
resource endpoints 'Microsoft.MachineLearningServices/workspaces/onlineEndpoints@2024-10-01' = [
  for model in models: {
    parent: workspaceRef
    name: model.endpoint
    location: location
    tags: union(tags, { model: model.model })
    kind: 'Managed'
    identity: {
      type: 'SystemAssigned'
    }
    properties: {
      authMode: 'AADToken'
      publicNetworkAccess: 'Enabled'
      description: 'Managed online endpoint of the model ${model.model} (policies/ names it).'
    }
    dependsOn: [
      workspace
    ]
  }
]

// The traffic log (one record per request, with its duration and deployment) goes to Log
// Analytics: the latency gate reads each arm's p95 there (CANARY_LATENCY_WORKSPACE_ID).
resource endpointTrafficLogs 'Microsoft.Insights/diagnosticSettings@2021-05-01-preview' = [
  for (model, i) in models: {
    name: 'traffic-log'
    scope: endpoints[i]
    properties: {
      workspaceId: logAnalyticsWorkspaceId
      logs: [
        {
          category: 'AmlOnlineEndpointTrafficLog'
          enabled: true
        }
      ]
    }
  }
]

output workspaceName string = workspace.outputs.name
output workspaceId string = workspace.outputs.resourceId
output workspaceStorageAccountName string = workspaceStorage.outputs.name
output containerRegistryName string = registry.outputs.name
output computeName string = compute.name
output endpointNames array = [for (model, index) in models: endpoints[index].name]
