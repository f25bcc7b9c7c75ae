package rotate

import "github.com/rotatord/rotatord"

// The system account carries rotatord's own NATS connection: the user it
// mints for itself (MintSystemUser) pushes every account JWT, revocations
// included, and watches $SYS for connects and auth failures. A change to the
// account that cut that connection (conn 0, too few subscriptions, a payload
// under the size of an account JWT) would leave every later revocation
// unpushed, and could not be undone through NATS. So its limits are
// read-only; its description (and keep_revocations) may change. Of its
// claims, JetStream, default permissions, mappings and imports are refused
// too (see checkClaims); its exports, info URL and tags may change.

// checkSystemPatch refuses, with ECONFLICT, a patch of the system account
// acc that would change anything but what cannot cut rotatord off.
func checkSystemPatch(acc *rotatord.Account, p AccountPatch) error {
	if !acc.System {
		return nil
	}
	if p.Limits != nil && p.Limits.Apply(acc.Limits) != acc.Limits {
		return rotatord.Errorf(rotatord.ECONFLICT,
			"the system account's limits are read-only: rotatord's own NATS connection runs in it (it pushes every revocation), and a limit could cut it off for good; its description, exports, info URL and tags may change")
	}
	return nil
}
