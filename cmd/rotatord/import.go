package main

import (
	"context"
	"errors"
	"io"
)

// runImport imports an nsc store or JWT/creds files. Not built yet.
func runImport(ctx context.Context, cfg Config, args []string, stdout, stderr io.Writer) error {
	return errors.New("import: not implemented yet")
}
