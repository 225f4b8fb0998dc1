// Log Analytics and a workspace-based Application Insights: the app's traces (AppTraces) and the
// platform's logs land in one workspace, where the alert rules (alerts.bicep) query them.
param location string
param tags object
param resourceToken string

module logAnalytics 'br/public:avm/res/operational-insights/workspace:0.12.0' = {
  name: 'log-analytics'
  params: {
    name: 'log-${resourceToken}'
    location: location
    tags: tags
    dataRetention: 30
  }
}

module applicationInsights 'br/public:avm/res/insights/component:0.6.0' = {
  name: 'application-insights'
  params: {
    name: 'appi-${resourceToken}'
    location: location
    tags: tags
    workspaceResourceId: logAnalytics.outputs.resourceId
    // Telemetry is sent with the app's identity (Monitoring Metrics Publisher), never an
    // instrumentation key alone.
    disableLocalAuth: true
  }
}

output logAnalyticsWorkspaceId string = logAnalytics.outputs.resourceId
// The workspace's customer id (a GUID): what CANARY_LATENCY_WORKSPACE_ID names for queries.
output logAnalyticsCustomerId string = logAnalytics.outputs.logAnalyticsWorkspaceId
output logAnalyticsName string = logAnalytics.outputs.name
output applicationInsightsId string = applicationInsights.outputs.resourceId
output applicationInsightsName string = applicationInsights.outputs.name
output applicationInsightsConnectionString string = applicationInsights.outputs.connectionString
