// Alert rules on the signals the app and the platform emit. Each rule names its signal:
//
//   effect-given-up     AppTraces: the outbox's error "<effect> for <model>: gave up after N
//                       attempts in S s: ..." (orchestrator/outbox.py), or AppMetrics: the
//                       counter retrain.effects.given_up (orchestrator/telemetry.py, exported
//                       by Azure Monitor's OpenTelemetry distro)
//   rollback-traffic-not-restored
//                       AppMetrics: the counter retrain.rollback.traffic_not_restored (a
//                       rollback's traffic back to the known-good deployment does not hold)
//   promotion-stuck     AppTraces: the sweep's warning "promotion <id> of <model> has been
//                       <status> since <time>" (orchestrator/maintenance.py, max_time_in_state)
//   promotion-rollback  AppMetrics: the counter retrain.promotions with outcome rolled_back
//                       (orchestrator/handlers.py, docs/observability.md)
//   training-failed     AppMetrics: the counter retrain.training.runs with result failed
//                       (orchestrator/handlers.py: a training job ended failed)
//   app-dead-letters    StorageBlobLogs: a record written to the state account's
//                       `dead-letters` container (every source: Event Grid, Event Hubs, queues),
//                       or AppMetrics: the counter retrain.dead_letters (adapters/dead_letters.py,
//                       counted once the record is written; dimensions source and reason). Both:
//                       the blob log holds even when the app's telemetry does not reach
//                       Application Insights, the metric when the account's logs are late or
//                       turned off; one rule, so one dead letter is one alert
//   queue-dead-letters  metric DeadletteredMessages of the Service Bus namespace (messages past
//                       MaxDeliveryCount)
//   event-grid-dead-letters / event-grid-dropped
//                       metrics DeadLetteredCount / DroppedEventCount of the data account's
//                       system topic (BlobCreated events Event Grid could not deliver)
//
// The app's OpenTelemetry counters (orchestrator/telemetry.py) reach the workspace through the
// Azure Monitor distro as custom metrics: table AppMetrics (customMetrics in Application
// Insights), Name = the instrument's name, the attributes in Properties, Sum = the count added
// in the exported interval. The log tables fill only once the app runs, so the queries are not
// validated at deployment; `union isfuzzy=true` lets a query read a table that does not exist yet.
param location string
param tags object
param resourceToken string
param alertEmail string
param logAnalyticsWorkspaceId string
param serviceBusNamespaceId string
param systemTopicId string

var logAlerts = [
  {
    name: 'effect-given-up'
    severity: 2
    description: 'An effect (deploy, traffic, training job, tag, notification) was given up after its retries: see the model\'s audit (effect.gave_up).'
    query: 'union isfuzzy=true (AppTraces | where Message has "gave up after" and Message has "attempts in"), (AppMetrics | where Name == "retrain.effects.given_up" and Sum > 0)'
  }
  {
    name: 'rollback-traffic-not-restored'
    severity: 1
    description: 'A rollback\'s traffic back to the known-good deployment does not hold: the app retries it on every sweep until it does (rollback.traffic_not_restored in the audit).'
    query: 'AppMetrics | where Name == "retrain.rollback.traffic_not_restored" and Sum > 0'
  }
  {
    name: 'promotion-stuck'
    severity: 2
    description: 'A promotion has stayed in one state past its policy\'s max_time_in_state (the timer\'s sweep reports it every pass).'
    query: 'AppTraces | where Message startswith "promotion " and Message has " has been " and Message has " since "'
  }
  {
    name: 'promotion-rollback'
    severity: 1
    description: 'A promotion was rolled back (promotion.rolled_back).'
    query: 'AppMetrics | where Name == "retrain.promotions" and tostring(Properties["outcome"]) == "rolled_back" and Sum > 0'
  }
  {
    name: 'training-failed'
    severity: 2
    description: 'A training job failed: the model\'s runs (GET /api/models/{model}/runs) and the job\'s logs in Azure ML say why.'
    query: 'AppMetrics | where Name == "retrain.training.runs" and tostring(Properties["result"]) == "failed" and Sum > 0'
  }
  {
    name: 'app-dead-letters'
    severity: 2
    description: 'The app dead-lettered a message or event it can never handle: python -m devhost.cli dead-letters lists and replays them.'
    query: 'union isfuzzy=true (StorageBlobLogs | where OperationName == "PutBlob" and Uri has "/dead-letters/"), (AppMetrics | where Name == "retrain.dead_letters" and Sum > 0)'
  }
]

var metricAlerts = [
  {
    name: 'queue-dead-letters'
    scope: serviceBusNamespaceId
    namespace: 'Microsoft.ServiceBus/namespaces'
    metric: 'DeadletteredMessages'
    aggregation: 'Maximum'
    description: 'A Service Bus queue holds dead-lettered messages (past MaxDeliveryCount or expired).'
  }
  {
    name: 'event-grid-dead-letters'
    scope: systemTopicId
    namespace: 'Microsoft.EventGrid/systemTopics'
    metric: 'DeadLetteredCount'
    aggregation: 'Total'
    description: 'Event Grid dead-lettered BlobCreated events it could not deliver to the app (container eventgrid-dead-letters).'
  }
  {
    name: 'event-grid-dropped'
    scope: systemTopicId
    namespace: 'Microsoft.EventGrid/systemTopics'
    metric: 'DroppedEventCount'
    aggregation: 'Total'
    description: 'Event Grid dropped BlobCreated events.'
  }
]

module actionGroup 'br/public:avm/res/insights/action-group:0.8.0' = {
  name: 'alert-action-group'
  params: {
    name: 'ag-${resourceToken}'
    groupShortName: 'retrain'
    location: 'global'
    tags: tags
    emailReceivers: empty(alertEmail) ? [] : [
      {
        name: 'owner'
        emailAddress: alertEmail
        useCommonAlertSchema: true
      }
    ]
  }
}

module logAlertRules 'br/public:avm/res/insights/scheduled-query-rule:0.6.0' = [
  for alert in logAlerts: {
    name: 'alert-${alert.name}'
    params: {
      name: '${alert.name}-${resourceToken}'
      location: location
      tags: tags
      kind: 'LogAlert'
      alertDescription: alert.description
      severity: alert.severity
      enabled: true
      scopes: [
        logAnalyticsWorkspaceId
      ]
      evaluationFrequency: 'PT5M'
      windowSize: 'PT15M'
      autoMitigate: true
      skipQueryValidation: true
      criterias: {
        allOf: [
          {
            query: alert.query
            timeAggregation: 'Count'
            operator: 'GreaterThan'
            threshold: 0
            failingPeriods: {
              numberOfEvaluationPeriods: 1
              minFailingPeriodsToAlert: 1
            }
          }
        ]
      }
      actions: {
        actionGroupResourceIds: [
          actionGroup.outputs.resourceId
        ]
      }
    }
  }
]

module metricAlertRules 'br/public:avm/res/insights/metric-alert:0.4.1' = [
  for alert in metricAlerts: {
    name: 'alert-${alert.name}'
    params: {
      name: '${alert.name}-${resourceToken}'
      location: 'global'
      tags: tags
      alertDescription: alert.description
      severity: 2
      enabled: true
      scopes: [
        alert.scope
      ]
      evaluationFrequency: 'PT5M'
      windowSize: 'PT15M'
      autoMitigate: true
      criteria: {
        'odata.type': 'Microsoft.Azure.Monitor.SingleResourceMultipleMetricCriteria'
        allof: [
          {
            name: alert.metric
            criterionType: 'StaticThresholdCriterion'
            metricNamespace: alert.namespace
            metricName: alert.metric
            operator: 'GreaterThan'
            threshold: 0
            timeAggregation: alert.aggregation
          }
        ]
      }
      actions: [
        actionGroup.outputs.resourceId
      ]
    }
  }
]
