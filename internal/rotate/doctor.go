package rotate

import (
	"context"
	"fmt"
)

// KeyProblem is a signing key that the master key does not open.
type KeyProblem struct {
	Owner string // "operator" or the account's name
	Key   string // the signing key's public key
	Err   error
}

// CheckSigningKeys opens the newest signing key of the operator and of
// every account with the master key, without keeping them, and returns
// how many it checked and those it could not open. err is for the
// database only.
func (s *Service) CheckSigningKeys(ctx context.Context) (checked int, problems []KeyProblem, err error) {
	accounts, err := s.store.ListAccounts(ctx)
	if err != nil {
		return 0, nil, fmt.Errorf("check signing keys: %w", err)
	}
	owners := map[int64]string{0: "operator"}
	ids := []int64{0}
	for _, a := range accounts {
		owners[a.ID] = a.Name
		ids = append(ids, a.ID)
	}
	for _, id := range ids {
		pub, enc, err := s.store.SigningKey(ctx, id)
		if err != nil {
			problems = append(problems, KeyProblem{Owner: owners[id], Err: err})
			continue
		}
		checked++
		if _, err := s.sealer.Open(enc, []byte(pub)); err != nil {
			problems = append(problems, KeyProblem{Owner: owners[id], Key: pub, Err: err})
		}
	}
	return checked, problems, nil
}
