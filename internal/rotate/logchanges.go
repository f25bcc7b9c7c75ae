package rotate

import (
	"context"
	"log/slog"

	"github.com/rotatord/rotatord"
)

// logChanges logs the rotation steps among committed audit events, one line
// each: at info, and a rollback at warn. The audit trail has every event;
// the log shows an operator the state machine at work.
func (s *Service) logChanges(events []*rotatord.AuditEvent) {
	for _, e := range events {
		var msg string
		level := slog.LevelInfo
		switch e.Action {
		case "rotation.start":
			msg = "rotation started"
		case "credential.deliver":
			msg = "rotation distributed: waiting for the agent to reconnect with the new key"
		case "rotation.confirm":
			msg = "rotation confirmed: the agent reconnected with the new key"
		case "rotation.complete":
			msg = "rotation completed: the old key is revoked"
		case "rotation.rollback":
			msg, level = "rotation rolled back: the agent keeps its old key", slog.LevelWarn
		default:
			continue
		}
		args := []any{"agent", e.Agent, "account", e.Account, "rotation", e.Rotation, "key", e.PublicKey}
		for _, k := range []string{"trigger", "deadline", "by", "next_rotation_at", "reason", "retry_at"} {
			if v, ok := e.Details[k]; ok {
				args = append(args, k, v)
			}
		}
		s.log.Log(context.Background(), level, msg, args...)
	}
}
