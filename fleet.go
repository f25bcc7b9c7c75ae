package rotatord

import "time"

// What the fleet console reads: the outcome of an agent's newest rotation,
// alerts, revocation entries and an agent's keys, each a page at a time.

// Outcomes of an agent's newest rotation, as the fleet filters them.
const (
	OutcomeCompleted  = "completed"   // the newest rotation completed
	OutcomeRolledBack = "rolled_back" // the newest rotation was rolled back
	OutcomeInFlight   = "in_flight"   // a rotation is in flight
	OutcomeNone       = "none"        // the agent has had no rotation
)

// OutcomeStates returns the rotation states an outcome stands for (with
// OutcomeNone for OutcomeNone), or false for an unknown outcome.
func OutcomeStates(outcome string) ([]string, bool) {
	switch outcome {
	case OutcomeCompleted:
		return []string{RotationCompleted}, true
	case OutcomeRolledBack:
		return []string{RotationRolledBack}, true
	case OutcomeInFlight:
		return []string{RotationIssued, RotationDistributed, RotationConfirmed}, true
	case OutcomeNone:
		return []string{OutcomeNone}, true
	}
	return nil, false
}

// ValidSeverity reports whether s is one of the alert severities.
func ValidSeverity(s string) bool {
	return s == SeverityInfo || s == SeverityWarning || s == SeverityCritical
}

// AlertFilter selects alerts, newest first; zero fields match everything.
type AlertFilter struct {
	Kind     string
	Severity string
	Account  string // account name
	Agent    string // agent name
	// BeforeID, when set, lists alerts with a smaller ID (the next page).
	BeforeID int64
	Limit    int
}

// PageFilter is a page of a list ordered newest first: After is the key
// of the last item of the previous page ("" for the first page).
type PageFilter struct {
	After string
	Limit int
}

// KeyInfo is one of an agent's user keys as the API shows it: never the
// seed, nor the JWT.
type KeyInfo struct {
	PublicKey string
	JWTID     string
	State     string
	IssuedAt  time.Time
	ExpiresAt time.Time
	RevokedAt *time.Time
}
