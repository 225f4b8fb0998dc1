// Service Bus (the app's commands and people's approvals) and Event Hubs (data-ready events in,
// lifecycle events out), both with local (SAS key) authentication off.
param location string
param tags object
param resourceToken string
@description('MaxDeliveryCount of both queues: the app reads the same number (MAX_DELIVERIES).')
param maxDeliveries int

var orchestratorQueue = 'orchestrator'
var approvalsQueue = 'approvals'
var dataEventsHub = 'data-ready'
var lifecycleEventsHub = 'model-lifecycle'
// Duplicate detection drops a message id seen in this window (the app's ids are keyed:
// docs/reliability.md); messages that expire or exceed MaxDeliveryCount are dead-lettered.
var queueDefaults = {
  requiresDuplicateDetection: true
  duplicateDetectionHistoryTimeWindow: 'PT1H'
  maxDeliveryCount: maxDeliveries
  deadLetteringOnMessageExpiration: true
  lockDuration: 'PT5M'
  defaultMessageTimeToLive: 'P14D'
}

module serviceBus 'br/public:avm/res/service-bus/namespace:0.16.1' = {
  name: 'service-bus'
  params: {
    name: 'sb-${resourceToken}'
    location: location
    tags: tags
    // Standard: duplicate detection needs it (Basic has none).
    skuObject: {
      name: 'Standard'
    }
    zoneRedundant: false
    disableLocalAuth: true
    minimumTlsVersion: '1.2'
    queues: [
      union(queueDefaults, { name: orchestratorQueue })
      union(queueDefaults, { name: approvalsQueue })
    ]
  }
}

module eventHubs 'br/public:avm/res/event-hub/namespace:0.15.0' = {
  name: 'event-hubs'
  params: {
    name: 'evhns-${resourceToken}'
    location: location
    tags: tags
    skuName: 'Standard'
    skuCapacity: 1
    zoneRedundant: false
    disableLocalAuth: true
    minimumTlsVersion: '1.2'
    eventhubs: [
      {
        name: dataEventsHub
        partitionCount: 2
        // The Event Hubs trigger (data_events) reads it with the $Default consumer group.
        messageRetentionInDays: 1
      }
      {
        name: lifecycleEventsHub
        partitionCount: 2
        messageRetentionInDays: 7
        // For whoever reads the lifecycle events (promoted, rolled back, approval requested);
        // add one group per reader.
        consumergroups: [
          { name: 'notifications' }
        ]
      }
    ]
  }
}

output serviceBusNamespaceName string = serviceBus.outputs.name
output serviceBusNamespaceId string = serviceBus.outputs.resourceId
output orchestratorQueue string = orchestratorQueue
output approvalsQueue string = approvalsQueue
output eventHubNamespaceName string = eventHubs.outputs.name
output dataEventsHub string = dataEventsHub
output lifecycleEventsHub string = lifecycleEventsHub
output dataEventsHubId string = '${eventHubs.outputs.resourceId}/eventhubs/${dataEventsHub}'
