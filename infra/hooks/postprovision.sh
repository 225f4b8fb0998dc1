#!/bin/sh
# azd postprovision hook. Runs before `azd deploy`, so the app finds both when it first starts:
#
# 1. The app's message-signing key (MESSAGE_SIGNING_KEY, a Key Vault reference in app.bicep) is
#    created once, at random, and never replaced: a new key would invalidate every signed
#    message still queued or scheduled.
# 2. With App Service authentication (ENTRA_CLIENT_ID set: app.bicep), the API's app
#    registration is made to accept the app's sign-in: its redirect URI, ID tokens, and a
#    federated credential trusting the sign-in's managed identity (no client secret). Those live
#    in Entra ID, not in the resource group: done when the deploying principal may change the
#    registration (e.g. its owner); otherwise a warning says what to add by hand.
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

# Private temporary files (the key, the credential's JSON), never the command line.
umask 077
key_file=$(mktemp)
credential_file=$(mktemp)
trap 'rm -f "$key_file" "$credential_file"' EXIT

if [ -n "$existing" ]; then
  echo "postprovision: $secret_name already in $AZURE_KEY_VAULT_NAME: kept"
else
  openssl rand -hex 32 | tr -d '\n' >"$key_file"
  az keyvault secret set \
    --vault-name "$AZURE_KEY_VAULT_NAME" \
    --name "$secret_name" \
    --file "$key_file" \
    --encoding utf-8 \
    --output none
  echo "postprovision: created $secret_name in $AZURE_KEY_VAULT_NAME"
fi

# --- 2. the app registration, for App Service authentication ---------------------------------

client_id="${ENTRA_CLIENT_ID:-}"
principal="${AUTH_IDENTITY_PRINCIPAL_ID:-}" # empty: App Service authentication not configured
if [ -z "$client_id" ] || [ -z "$principal" ]; then
  exit 0
fi
: "${AZURE_FUNCTION_APP_HOSTNAME:?an output of infra/main.bicep}"
: "${AZURE_TENANT_ID:?an output of infra/main.bicep}"

callback="https://$AZURE_FUNCTION_APP_HOSTNAME/.auth/login/aad/callback"
issuer="https://login.microsoftonline.com/$AZURE_TENANT_ID/v2.0"
audience="api://AzureADTokenExchange"
credential_name="app-service-auth-$(printf '%s' "$principal" | cut -c1-8)"

# A refusal here never stops azd: the app runs without it, only the dashboard's sign-in waits.
warn() {
  echo "postprovision: WARNING: $1 (docs/deploy.md, App Service authentication)" >&2
}

if ! uris=$(az ad app show --id "$client_id" --query "web.redirectUris" --output tsv); then
  warn "cannot read the app registration $client_id: by hand, add the redirect URI $callback, turn on ID tokens, add a federated credential (issuer $issuer, subject $principal, audience $audience)"
  exit 0
fi
if printf '%s\n' "$uris" | grep -Fqx "$callback"; then
  echo "postprovision: $callback is already a redirect URI of $client_id"
else
  # One URI per word (a redirect URI holds no space): the existing ones are kept.
  # shellcheck disable=SC2086
  if az ad app update --id "$client_id" --web-redirect-uris $uris "$callback" --output none; then
    echo "postprovision: added the redirect URI $callback to $client_id"
  else
    warn "cannot add the redirect URI $callback to $client_id"
  fi
fi
# The sign-in (authorization code with an ID token) needs the registration to issue ID tokens.
if ! az ad app update --id "$client_id" --enable-id-token-issuance true --output none; then
  warn "cannot turn on ID tokens for $client_id"
fi

if ! trusted=$(az ad app federated-credential list --id "$client_id" \
  --query "[?subject=='$principal'].name" --output tsv); then
  warn "cannot list the federated credentials of $client_id: add one (issuer $issuer, subject $principal, audience $audience)"
elif [ -n "$trusted" ]; then
  echo "postprovision: $client_id already trusts the sign-in identity ($trusted)"
else
  printf '{"name": "%s", "issuer": "%s", "subject": "%s", "audiences": ["%s"], "description": "%s"}\n' \
    "$credential_name" "$issuer" "$principal" "$audience" \
    "App Service authentication of $AZURE_FUNCTION_APP_HOSTNAME, with no client secret" \
    >"$credential_file"
  if az ad app federated-credential create --id "$client_id" \
    --parameters "@$credential_file" --output none; then
    echo "postprovision: $client_id now trusts the sign-in identity ($credential_name)"
  else
    warn "cannot add the federated credential (issuer $issuer, subject $principal, audience $audience) to $client_id"
  fi
fi
