package jwtissue

import (
	"github.com/nats-io/jwt/v2"

	"github.com/rotatord/rotatord"
)

// UserTemplateOf reads the user claims of a JWT (a user's, or a scoped
// signing key's template) into rotatord's model, the way nats-server
// applies them: a direction without allow entries allows everything, which
// rotatord writes as ">" (its default deny would otherwise take that away).
// PermissionLimits of the result grants what l granted.
func UserTemplateOf(l jwt.UserPermissionLimits) rotatord.UserTemplate {
	t := rotatord.UserTemplate{
		Permissions: rotatord.Permissions{
			Pub: rotatord.PermissionList{Allow: l.Pub.Allow, Deny: l.Pub.Deny},
			Sub: rotatord.PermissionList{Allow: l.Sub.Allow, Deny: l.Sub.Deny},
		}.AllowAllWhereEmpty(),
		Limits:          rotatord.UserLimits{Subs: l.Subs, Data: l.Data, Payload: l.Payload},
		Src:             append([]string(nil), l.Src...),
		TimesLocation:   l.Locale,
		ConnectionTypes: append([]string(nil), l.AllowedConnectionTypes...),
	}
	if r := l.Resp; r != nil {
		t.Permissions.Resp = &rotatord.ResponsePermission{Max: r.MaxMsgs, TTL: r.Expires}
	}
	for _, r := range l.Times {
		t.Times = append(t.Times, rotatord.TimeRange{Start: r.Start, End: r.End})
	}
	return t.Normalize()
}
