// Package distribute will hand new credentials to agents: Vault KV v2
// (hashicorp/vault/api) with check-and-set writes, files written
// atomically for agents that read mounted secrets, and the creds kept for
// agents that poll. Nothing is implemented yet: today an agent created with
// delivery "poll" receives its first creds in the API response, and
// "vault" is refused as not configured.
package distribute
