package main

import (
	"context"
	"errors"
	"io"
)

// The operator CLI over the REST API. Not built yet.

func runAgents(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	return errors.New("agents: not implemented yet")
}

func runRotations(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	return errors.New("rotations: not implemented yet")
}

func runAudit(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	return errors.New("audit: not implemented yet")
}
