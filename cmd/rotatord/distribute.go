package main

import (
	"context"
	"fmt"

	"github.com/rotatord/rotatord"
	"github.com/rotatord/rotatord/internal/distribute"
	"github.com/rotatord/rotatord/internal/rotate"
)

// setupDistributors adds Vault delivery when VAULT_ADDR is set and file
// delivery when a folder is configured, unless the caller set its own.
func (m *Main) setupDistributors(ctx context.Context) error {
	if m.Distributors == nil {
		m.Distributors = map[rotatord.Delivery]rotate.Distributor{}
	}
	if _, set := m.Distributors[rotatord.DeliveryVault]; !set && m.Config.VaultAddr != "" {
		vctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
		m.vaultStop = cancel
		client, err := distribute.NewVaultClient(vctx, distribute.VaultAuth{
			Addr: m.Config.VaultAddr, Method: m.Config.VaultAuth, RoleID: m.Config.VaultRoleID,
			SecretIDFile: m.Config.VaultSecretIDFile, K8sRole: m.Config.VaultK8sRole,
		}, m.Log)
		if err != nil {
			return fmt.Errorf("vault: %w", err)
		}
		v, err := distribute.NewVault(distribute.VaultConfig{Client: client, Mount: m.Config.VaultMount,
			PathTemplate: m.Config.VaultPath, Log: m.Log})
		if err != nil {
			return fmt.Errorf("vault: %w", err)
		}
		m.Distributors[rotatord.DeliveryVault] = v
		m.vault = v
		m.Log.Info("vault delivery on", "addr", m.Config.VaultAddr, "path", v.Path("{account}", "{agent}"))
	}
	if _, set := m.Distributors[rotatord.DeliveryFile]; !set && m.Config.FileDeliveryDir != "" {
		f, err := distribute.NewFile(m.Config.FileDeliveryDir)
		if err != nil {
			return fmt.Errorf("file delivery: %w", err)
		}
		m.Distributors[rotatord.DeliveryFile] = f
	}
	return nil
}
