// Package api holds rotatord's REST contract, the OpenAPI 3.0 document
// openapi.yaml, embedded into the binary.
package api

import _ "embed"

// Spec is api/openapi.yaml: the OpenAPI 3.0.3 description of every endpoint
// of rotatord's HTTP server (admin API, agent API, account resolver and
// operations endpoints). Operations marked `x-rotatord-status: planned` are
// part of the contract but not served yet. internal/apitest validates the
// server's responses against it in tests; do not modify the slice.
//
//go:embed openapi.yaml
var Spec []byte
