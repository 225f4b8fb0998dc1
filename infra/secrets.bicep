// The app's Key Vault: MESSAGE_SIGNING_KEY is a Key Vault reference to its secret
// `message-signing-key`, which hooks/postprovision.sh creates once (a random 64-hex-digit key) and
// never replaces: rotating it would make every signed message in flight invalid.
param location string
param tags object
param resourceToken string

module vault 'br/public:avm/res/key-vault/vault:0.13.3' = {
  name: 'app-key-vault'
  params: {
    name: 'kv-${resourceToken}'
    location: location
    tags: tags
    sku: 'standard'
    enableRbacAuthorization: true
    // `azd down --purge` can then remove it at once; soft delete still guards a mistake.
    enablePurgeProtection: false
    softDeleteRetentionInDays: 7
  }
}

output keyVaultName string = vault.outputs.name
