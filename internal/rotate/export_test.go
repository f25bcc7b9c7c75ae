package rotate

// CachedSigners returns the public keys of the signing keys this service
// holds opened in memory (for tests).
func (s *Service) CachedSigners() []string { return s.cachedSigners() }

// AuthFailureKinds are the alert kinds that count against a wave (for
// tests).
var AuthFailureKinds = authFailureKinds
