// The Function App on a Flex Consumption plan (Python 3.11), running as the user-assigned identity,
// its package in the state account's `app-package` container (read with that identity), and
// every app setting the app reads in Azure (local.settings.sample.json, AzureValues); with an
// API app registration (entraClientId), App Service authentication (authsettingsV2, below).
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
@description('The API app registration\'s client id: App Service authentication signs people in with it. Empty: App Service authentication is left as it is.')
param entraClientId string
@description('The scope the sign-in asks for. Empty: <the first ENTRA_API_AUDIENCE>/user_impersonation.')
param entraApiScope string
@description('The identity App Service authentication presents to Entra ID instead of a client secret (a federated credential of the app registration). Empty when entraClientId is.')
param authIdentityId string
param authIdentityClientId string

var functionAppName = 'func-${resourceToken}'
var storageSuffix = environment().suffixes.storage
var stateBlobUri = 'https://${stateAccountName}.blob.${storageSuffix}'
var stateQueueUri = 'https://${stateAccountName}.queue.${storageSuffix}'
var dataBlobUri = 'https://${dataAccountName}.blob.${storageSuffix}'
var dataQueueUri = 'https://${dataAccountName}.queue.${storageSuffix}'
var serviceBusHost = '${serviceBusNamespaceName}.servicebus.windows.net'
var eventHubHost = '${eventHubNamespaceName}.servicebus.windows.net'
var mlflowTrackingUri = 'azureml://${location}.api.azureml.ms/mlflow/v1.0${workspaceId}'
// App Service authentication: on when the API's app registration is given (main.bicep).
var appServiceAuth = !empty(entraClientId)
// ENTRA_API_AUDIENCE: the Application ID URI and/or the client id, comma-separated.
var apiAudiences = map(split(entraApiAudience, ','), audience => trim(audience))
var signInScope = empty(entraApiScope) ? '${first(apiAudiences)}/user_impersonation' : entraApiScope

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
  // host.json sets `telemetryMode: OpenTelemetry`. With this setting the Python worker (the
  // one of Python 3.11) tells the host it exports OpenTelemetry itself, so the host stops
  // forwarding the worker's logs (each would reach Application Insights twice: once from the
  // host, once from the app's own exporter), and each invocation runs inside the host's trace
  // context. Learn: "Use OpenTelemetry with Azure Functions" (Python): PYTHON_ENABLE_OPENTELEMETRY
  // "so that the Functions host allows the Python worker process to stream OpenTelemetry logs
  // directly, which prevents duplicate host-level entries". Not its Application Insights twin
  // PYTHON_APPLICATIONINSIGHTS_ENABLE_TELEMETRY: that makes the worker call
  // configure_azure_monitor() itself, without the app's identity, against an Application
  // Insights that takes Entra tokens only, before the app installs its own exporter
  // (adapters/telemetry_exporters.py), which would then be ignored.
  PYTHON_ENABLE_OPENTELEMETRY: 'true'
}
// App Service authentication proves the app to Entra ID with this identity's token (a
// federated credential of the app registration) instead of a client secret: the setting's
// name is what `clientSecretSettingName` names below (Learn: "Use a managed identity instead
// of a secret").
var authSettings = appServiceAuth ? { OVERRIDE_USE_MI_FIC_ASSERTION_CLIENTID: authIdentityClientId } : {}

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
      // The auth identity only for sign-in: every connection names the app's own (__clientId,
      // AZURE_CLIENT_ID, the deployment storage, Key Vault references).
      userAssignedResourceIds: appServiceAuth ? [identityId, authIdentityId] : [identityId]
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
      appSettings: [for setting in items(union(appSettings, authSettings)): { name: setting.key, value: setting.value }]
    }
  }
}

// App Service authentication (Learn: "Configure your App Service or Azure Functions app to use
// Microsoft Entra sign-in"), for the dashboard (docs/dashboard.md): a person signs in at
// /.auth/login/aad with the API's app registration; the login asks for the API's scope, so the
// token store keeps an access token for the API, which the page reads from /.auth/me and sends
// as `Authorization: Bearer`. The app verifies that token itself (orchestrator/people.py), as it
// does on the queues. Nothing is refused for want of a sign-in: every route keeps its function
// key (and /api/health none), Event Grid's webhook its system key, and a person's command its
// bearer token; an anonymous request reaches the app, which treats it as the key's holder
// (triggers/http_api.py `requester`: X-MS-CLIENT-PRINCIPAL only when App Service sets it).
// Only when entraClientId is given: otherwise a setting made by hand is left as it is.
resource site 'Microsoft.Web/sites@2024-04-01' existing = {
  name: functionAppName
}

resource authSettingsV2 'Microsoft.Web/sites/config@2024-04-01' = if (appServiceAuth) {
  parent: site
  name: 'authsettingsV2'
  properties: {
    platform: {
      enabled: true
    }
    globalValidation: {
      requireAuthentication: false
      unauthenticatedClientAction: 'AllowAnonymous'
    }
    httpSettings: {
      requireHttps: true
    }
    identityProviders: {
      azureActiveDirectory: {
        enabled: true
        registration: {
          clientId: entraClientId
          // The tenant's v2.0 issuer: the app registration is single-tenant.
          openIdIssuer: '${environment().authentication.loginEndpoint}${entraTenantId}/v2.0'
          // No secret: the auth identity's token, exchanged through the registration's
          // federated credential (infra/hooks/postprovision.sh adds it). Without a client
          // credential the sign-in is the implicit flow, which yields no access token.
          clientSecretSettingName: 'OVERRIDE_USE_MI_FIC_ASSERTION_CLIENTID'
        }
        validation: {
          // v1 access tokens name the Application ID URI, v2 tokens the client id.
          allowedAudiences: union(apiAudiences, [entraClientId])
        }
        login: {
          // An access token for the API (offline_access: a refresh token for /.auth/refresh).
          loginParameters: [
            'scope=openid profile offline_access ${signInScope}'
          ]
        }
      }
    }
    login: {
      // /.auth/me answers with the person's tokens only from the token store.
      tokenStore: {
        enabled: true
      }
    }
  }
  dependsOn: [
    functionApp
  ]
}

output functionAppName string = functionApp.outputs.name
output defaultHostname string = functionApp.outputs.defaultHostname
output stateBlobUri string = stateBlobUri
output stateQueueUri string = stateQueueUri
output dataBlobUri string = dataBlobUri
output serviceBusHost string = serviceBusHost
output eventHubHost string = eventHubHost
output mlflowTrackingUri string = mlflowTrackingUri
