package rotate

import (
	"context"
	"fmt"
	"strconv"
)

// NATSConfigCache returns the block to paste into nats-server.conf for a
// resolver over NATS instead of HTTP: `resolver: {type: cache}`. Such a
// server asks for each account JWT on $SYS.REQ.ACCOUNT.<acc>.CLAIMS.LOOKUP,
// which rotatord answers, and keeps the JWTs it got in dir. The system
// account's JWT is preloaded, so the server starts and rotatord connects
// to it in any order; print the block again after changing the system
// account.
func (s *Service) NATSConfigCache(ctx context.Context, dir string) (string, error) {
	op, err := s.store.Operator(ctx)
	if err != nil {
		return "", err
	}
	sys, err := s.store.FindAccountByPublicKey(ctx, op.SystemAccount)
	if err != nil {
		return "", fmt.Errorf("find system account: %w", err)
	}
	return fmt.Sprintf("operator: %s\nsystem_account: %s\nresolver: {\n  type: cache\n  dir: %s\n}\nresolver_preload: {\n  %s: %s\n}\n",
		op.JWT, op.SystemAccount, strconv.Quote(dir), sys.PublicKey, sys.JWT), nil
}
