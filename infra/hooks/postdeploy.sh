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
