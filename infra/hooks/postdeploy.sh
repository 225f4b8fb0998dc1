#!/bin/sh
# azd postdeploy hook: subscribe the app to BlobCreated events of the data container.
#
# Runs after `azd deploy` (and `azd up`): the webhook needs the Event Grid extension's system
# key, which exists only once the deployed app has indexed its `data_blob_created` function.
# The subscription is PUT whole every time, so running the hook again changes nothing.
#
# DATA_EVENTS_ROUTE (azd env set DATA_EVENTS_ROUTE eventhub): `webhook` (default) pushes each
# event to the Event Grid trigger; `eventhub` sends them to the data-ready hub instead, where
# the Event Hubs trigger takes them in batches (high-volume prefixes, docs/retraining.md).
# Undeliverable events are dead-lettered to the state account's eventgrid-dead-letters container
# by the system topic's identity (rbac.bicep): no key or SAS anywhere.
set -eu

: "${AZURE_SUBSCRIPTION_ID:?set by azd}"
: "${AZURE_RESOURCE_GROUP:?an output of infra/main.bicep: run azd provision first}"
: "${AZURE_FUNCTION_APP_NAME:?an output of infra/main.bicep}"
: "${EVENTGRID_SYSTEM_TOPIC_ID:?an output of infra/main.bicep}"
: "${EVENTGRID_DEAD_LETTER_ACCOUNT_ID:?an output of infra/main.bicep}"
: "${EVENTGRID_DEAD_LETTER_CONTAINER:?an output of infra/main.bicep}"
: "${DATA_CONTAINER:?an output of infra/main.bicep}"

route="${DATA_EVENTS_ROUTE:-webhook}"
subscription_name="data-blob-created"
api_version="2022-06-15"
attempts=30
pause=10

body_file=$(mktemp)
trap 'rm -f "$body_file"' EXIT

system_key() {
  az functionapp keys list \
    --resource-group "$AZURE_RESOURCE_GROUP" \
    --name "$AZURE_FUNCTION_APP_NAME" \
    --query "systemKeys.eventgrid_extension" \
    --output tsv 2>/dev/null || true
}

case "$route" in
  webhook)
    host=$(az functionapp show \
      --resource-group "$AZURE_RESOURCE_GROUP" \
      --name "$AZURE_FUNCTION_APP_NAME" \
      --query defaultHostName \
      --output tsv)
    attempt=1
    key=$(system_key)
    while [ -z "$key" ]; do
      if [ "$attempt" -ge "$attempts" ]; then
        echo "postdeploy: no eventgrid_extension system key on $AZURE_FUNCTION_APP_NAME after $attempts tries: is data_blob_created deployed? (az functionapp function list)" >&2
        exit 1
      fi
      echo "postdeploy: waiting for the Event Grid extension's system key ($attempt/$attempts)"
      attempt=$((attempt + 1))
      sleep "$pause"
      key=$(system_key)
    done
    destination=$(printf '{"endpointType": "WebHook", "properties": {"endpointUrl": "https://%s/runtime/webhooks/eventgrid?functionName=data_blob_created&code=%s", "maxEventsPerBatch": 1}}' "$host" "$key")
    delivery="\"destination\": $destination"
    ;;
  eventhub)
    : "${DATA_EVENTS_HUB_ID:?an output of infra/main.bicep}"
    delivery=$(printf '"deliveryWithResourceIdentity": {"identity": {"type": "SystemAssigned"}, "destination": {"endpointType": "EventHub", "properties": {"resourceId": "%s"}}}' "$DATA_EVENTS_HUB_ID")
    ;;
  *)
    echo "postdeploy: DATA_EVENTS_ROUTE must be webhook or eventhub, not '$route'" >&2
    exit 2
    ;;
esac

cat >"$body_file" <<JSON
{
  "properties": {
    $delivery,
    "filter": {
      "includedEventTypes": ["Microsoft.Storage.BlobCreated"],
      "subjectBeginsWith": "/blobServices/default/containers/$DATA_CONTAINER/"
    },
    "eventDeliverySchema": "EventGridSchema",
    "retryPolicy": {"maxDeliveryAttempts": 30, "eventTimeToLiveInMinutes": 1440},
    "deadLetterWithResourceIdentity": {
      "identity": {"type": "SystemAssigned"},
      "deadLetterDestination": {
        "endpointType": "StorageBlob",
        "properties": {
          "resourceId": "$EVENTGRID_DEAD_LETTER_ACCOUNT_ID",
          "blobContainerName": "$EVENTGRID_DEAD_LETTER_CONTAINER"
        }
      }
    }
  }
}
JSON

# The system topic's role assignments (rbac.bicep) may still be propagating: Event Grid checks
# them when the subscription is written, so a refusal is retried for a while.
url="https://management.azure.com${EVENTGRID_SYSTEM_TOPIC_ID}/eventSubscriptions/${subscription_name}?api-version=${api_version}"
attempt=1
until az rest --method put --url "$url" --body "@$body_file" --output none; do
  if [ "$attempt" -ge "$attempts" ]; then
    echo "postdeploy: could not write the Event Grid subscription $subscription_name" >&2
    exit 1
  fi
  attempt=$((attempt + 1))
  sleep "$pause"
done
echo "postdeploy: BlobCreated on $DATA_CONTAINER/ -> $route (subscription $subscription_name)"

# Azure ML run events (docs/retraining.md, "Job completion by event"): the workspace's system
# topic sends each run that ends (RunStatusChanged to Completed, Failed or Canceled) to the
# data-events hub, where `data_events` checks that training job at once; polling stays the
# fallback, so an event lost here costs only time. ML_RUN_EVENTS=off skips it.
if [ "${ML_RUN_EVENTS:-on}" = "off" ]; then
  echo "postdeploy: ML_RUN_EVENTS=off: training jobs are polled only"
  exit 0
fi
: "${AZUREML_WORKSPACE:?an output of infra/main.bicep}"
: "${AZURE_LOCATION:?an output of infra/main.bicep}"
: "${DATA_EVENTS_HUB_ID:?an output of infra/main.bicep}"
group_id="/subscriptions/${AZURE_SUBSCRIPTION_ID}/resourceGroups/${AZURE_RESOURCE_GROUP}"
workspace_id="${group_id}/providers/Microsoft.MachineLearningServices/workspaces/${AZUREML_WORKSPACE}"
ml_topic_id="${group_id}/providers/Microsoft.EventGrid/systemTopics/${AZUREML_WORKSPACE}-events"
# The topic gets an identity of its own: the hub takes no keys (local auth is off), so Event
# Grid delivers as that identity, which needs Event Hubs Data Sender on the hub.
cat >"$body_file" <<JSON
{
  "location": "$AZURE_LOCATION",
  "identity": {"type": "SystemAssigned"},
  "properties": {
    "source": "$workspace_id",
    "topicType": "Microsoft.MachineLearningServices.Workspaces"
  }
}
JSON
# Everything below is best effort: polling ends every job anyway, so a failure here warns and
# leaves the deployment standing.
ml_events_warning() {
  echo "postdeploy: WARNING: $1; training jobs are polled only (docs/retraining.md)" >&2
  exit 0
}
topic_principal=$(az rest --method put \
  --url "https://management.azure.com${ml_topic_id}?api-version=${api_version}" \
  --body "@$body_file" --query identity.principalId --output tsv) ||
  ml_events_warning "could not create the system topic ${ml_topic_id##*/} (a workspace has one system topic: add the subscription to an existing one by hand)"
az role assignment create --assignee-object-id "$topic_principal" \
  --assignee-principal-type ServicePrincipal --role "Azure Event Hubs Data Sender" \
  --scope "$DATA_EVENTS_HUB_ID" --output none ||
  ml_events_warning "could not let the system topic send to the data-events hub"
cat >"$body_file" <<JSON
{
  "properties": {
    "deliveryWithResourceIdentity": {
      "identity": {"type": "SystemAssigned"},
      "destination": {"endpointType": "EventHub", "properties": {"resourceId": "$DATA_EVENTS_HUB_ID"}}
    },
    "filter": {
      "includedEventTypes": ["Microsoft.MachineLearningServices.RunStatusChanged"],
      "advancedFilters": [
        {"operatorType": "StringIn", "key": "data.runStatus", "values": ["Completed", "Failed", "Canceled"]}
      ]
    },
    "eventDeliverySchema": "EventGridSchema",
    "retryPolicy": {"maxDeliveryAttempts": 10, "eventTimeToLiveInMinutes": 60}
  }
}
JSON
# The new role assignment may still be propagating when the subscription is written.
url="https://management.azure.com${ml_topic_id}/eventSubscriptions/ml-run-events?api-version=${api_version}"
attempt=1
until az rest --method put --url "$url" --body "@$body_file" --output none; do
  if [ "$attempt" -ge "$attempts" ]; then
    ml_events_warning "could not write the Event Grid subscription ml-run-events"
  fi
  attempt=$((attempt + 1))
  sleep "$pause"
done
echo "postdeploy: Azure ML run events of $AZUREML_WORKSPACE -> the data-events hub (subscription ml-run-events)"
