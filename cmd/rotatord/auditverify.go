package main

import (
	"context"
	"errors"
	"io"
)

// runAuditVerify checks the audit trail's hash chain. Not built yet.
func runAuditVerify(ctx context.Context, cfg Config, args []string, stdout, stderr io.Writer) error {
	return errors.New("audit verify: not implemented yet")
}
