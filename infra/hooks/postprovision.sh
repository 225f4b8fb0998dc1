#!/bin/sh
# azd postprovision hook: the app's message-signing key (MESSAGE_SIGNING_KEY, a Key Vault
# reference in app.bicep) is created once, at random, and never replaced: a new key would
# invalidate every signed message still queued or scheduled. Runs before `azd deploy`, so the
# app finds its key when it first starts.
set -eu

: "${AZURE_KEY_VAULT_NAME:?an output of infra/main.bicep: run azd provision first}"

secret_name="message-signing-key"
attempts=20
pause=15

# The deploying principal's Key Vault Secrets Officer role (rbac.bicep) may take a few minutes
# to reach the vault: a listing that is refused is retried, never taken for "no key yet".
attempt=1
until existing=$(az keyvault secret list \
  --vault-name "$AZURE_KEY_VAULT_NAME" \
  --query "[?name=='$secret_name'].name" \
  --output tsv); do
  if [ "$attempt" -ge "$attempts" ]; then
    echo "postprovision: cannot list the secrets of $AZURE_KEY_VAULT_NAME (Key Vault Secrets Officer?)" >&2
    exit 1
  fi
  attempt=$((attempt + 1))
  sleep "$pause"
done

if [ -n "$existing" ]; then
  echo "postprovision: $secret_name already in $AZURE_KEY_VAULT_NAME: kept"
  exit 0
fi

# The key goes through a private file, never the command line (visible to other processes).
umask 077
key_file=$(mktemp)
trap 'rm -f "$key_file"' EXIT
openssl rand -hex 32 | tr -d '\n' >"$key_file"
az keyvault secret set \
  --vault-name "$AZURE_KEY_VAULT_NAME" \
  --name "$secret_name" \
  --file "$key_file" \
  --encoding utf-8 \
  --output none
echo "postprovision: created $secret_name in $AZURE_KEY_VAULT_NAME"
