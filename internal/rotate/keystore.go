package rotate

import (
	"context"
	"time"

	"github.com/rotatord/rotatord"
)

// KeyLifecycleStore is what fleet rotations (fleet.go) and signing-key
// rotations (keyrotation.go) need from the registry.
type KeyLifecycleStore interface {
	CreateFleetRotation(ctx context.Context, f *rotatord.FleetRotation) error
	AddFleetMembers(ctx context.Context, fleetID string, agentIDs []int64, waves []int) error
	FindFleetRotation(ctx context.Context, id string) (*rotatord.FleetRotation, error)
	LockFleetRotation(ctx context.Context, id string, skip bool) (*rotatord.FleetRotation, bool, error)
	UpdateFleetRotation(ctx context.Context, f *rotatord.FleetRotation) error
	ListFleetRotations(ctx context.Context, f rotatord.FleetFilter) ([]*rotatord.FleetRotation, error)
	ActiveFleetRotation(ctx context.Context, accountID int64) (*rotatord.FleetRotation, error)
	RunningFleetRotations(ctx context.Context, limit int) ([]string, error)
	FleetProgress(ctx context.Context, fleetID string, wave int, kinds []string, since map[int]time.Time) (map[int]rotatord.FleetWave, error)
	WaitingMembers(ctx context.Context, fleetID string, wave int) ([]int64, error)
	LockWaitingMembers(ctx context.Context, fleetID string, agentIDs []int64, skip bool) ([]int64, error)
	WaitingFleetOf(ctx context.Context, agentID int64) (*rotatord.FleetRotation, error)
	SetFleetMembers(ctx context.Context, fleetID string, ms []rotatord.FleetMember) error
	FleetMemberIDs(ctx context.Context, fleetID string) ([]int64, error)
	AgentIDsOf(ctx context.Context, accountID, roleID int64) ([]int64, error)
	InFlightByAgents(ctx context.Context, agentIDs []int64) (map[int64]*rotatord.Rotation, error)
	RotatedSince(ctx context.Context, agentIDs []int64, t time.Time) (map[int64]bool, error)
	DBNow(ctx context.Context) (time.Time, error)

	// The rest of key rotations' needs are in KeyRotationStore
	// (operatorkey.go).
	WaitKeyRotation(ctx context.Context, id string) (*rotatord.KeyRotation, error)
	AddStagedRoleSigningKey(ctx context.Context, r *rotatord.Role, pub string, seedEnc []byte) error
	ListKeyRotations(ctx context.Context, f rotatord.KeyRotationFilter) ([]*rotatord.KeyRotation, error)
	InFlightKeyRotation(ctx context.Context, accountID int64) (*rotatord.KeyRotation, error)
	PendingSigningKeys(ctx context.Context, accountID int64) ([]rotatord.PendingKey, error)
	KeyHolders(ctx context.Context, keys []string, now time.Time, limit int) ([]int64, []string, error)
	RetireSigningKeys(ctx context.Context, keys []string, at time.Time) error
	RetiredSigningKeys(ctx context.Context, keys []string) (map[string]bool, error)
	LiveSigningKeys(ctx context.Context, keys []string) (map[string]bool, error)
	PruneRevocationsSignedBy(ctx context.Context, accountID int64, keys []string) (int64, error)
	SetKeySchedule(ctx context.Context, accountID int64, schedule string, next time.Time) error
	KeySchedules(ctx context.Context, accountIDs []int64) (map[int64]rotatord.KeyRotationPolicy, error)
	ClaimDueKeySchedules(ctx context.Context, now time.Time, limit int) ([]rotatord.KeySchedule, error)
	ActivationHolders(ctx context.Context, exporter string, signers []string) ([]*rotatord.Account, error)
}
