package registry

import (
	"context"
	"errors"
	"fmt"

	"github.com/jackc/pgx/v5"

	"github.com/rotatord/rotatord"
)

// OperatorSeed returns the operator's encrypted identity seed, which signs
// the operator JWT; nil when the operator was imported without it.
// ENOTFOUND before `rotatord init`.
func (s *Store) OperatorSeed(ctx context.Context) ([]byte, error) {
	var enc []byte
	err := s.q(ctx).QueryRow(ctx, `SELECT seed_enc FROM operator`).Scan(&enc)
	if errors.Is(err, pgx.ErrNoRows) {
		return nil, rotatord.Errorf(rotatord.ENOTFOUND, "no operator: run `rotatord init --operator NAME` first")
	}
	if err != nil {
		return nil, mapErr(fmt.Errorf("read operator seed: %w", err))
	}
	if len(enc) == 0 {
		return nil, nil
	}
	return enc, nil
}
