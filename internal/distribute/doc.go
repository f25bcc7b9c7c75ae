// Package distribute hands new credentials to agents. Each distributor
// implements the rotation engine's Distributor: Deliver makes a Handoff
// available to the agent and returns a reference, Restore uses that
// reference to put back what the agent had when a rotation is rolled back.
//
//   - Vault writes each delivery as a new version of a Vault KV v2 secret,
//     with check-and-set, idempotent for a retried delivery; NewVaultClient
//     logs in (token, AppRole, Kubernetes) and keeps the token renewed.
//   - File writes creds files atomically into a folder, for development and
//     for agents that read mounted secrets.
//
// Agents that poll need no distributor: the engine keeps their creds in the
// registry. Errors never contain a seed, creds or token.
package distribute
