package nscimport

import (
	"encoding/json"
	"fmt"
	"maps"
	"reflect"
	"slices"
	"sort"
	"time"

	"github.com/nats-io/jwt/v2"

	"github.com/rotatord/rotatord"
	"github.com/rotatord/rotatord/internal/jwtissue"
)

// unmodeledAccount lists the claims of an account JWT that rotatord would
// not reproduce when it re-signs it. Its "nats" object is modeled (limits,
// JetStream, exports, imports, mappings, default permissions, info URL,
// tags) or kept as it is (see rotatord.Account.BaseClaims); signing keys
// are checked on their own; only standard claims beyond name and subject
// are lost.
func unmodeledAccount(ac *jwt.AccountClaims) []string {
	var out []string
	if ac.Expires != 0 {
		out = append(out, "exp (the account JWT expires "+time.Unix(ac.Expires, 0).UTC().Format(time.RFC3339)+"; rotatord's do not)")
	}
	return out
}

// unmodeledUser lists the claims of a user JWT that rotatord's next JWT for
// the agent would not carry: what jwtissue.EncodeUser writes of the agent's
// template t (read from uc) and tags is compared with uc, where an empty
// allow list is the ">" it grants.
func unmodeledUser(uc *jwt.UserClaims, t rotatord.UserTemplate) []string {
	got := uc.User
	got.UserPermissionLimits = canonical(uc.UserPermissionLimits)
	want := jwt.NewUserClaims(uc.Subject)
	want.IssuerAccount = uc.IssuerAccount
	want.UserPermissionLimits = jwtissue.PermissionLimits(t)
	want.Tags = uc.Tags
	want.Type, want.Version = uc.Type, uc.Version
	return jsonDiff(got, want.User)
}

// unmodeledTemplate lists what a role's template held that t, rotatord's
// reading of it, does not.
func unmodeledTemplate(l jwt.UserPermissionLimits, t rotatord.UserTemplate) []string {
	return jsonDiff(canonical(l), jwtissue.PermissionLimits(t))
}

// canonical is l with ">" allowed where it has no allow entry, which is
// what nats-server grants there.
func canonical(l jwt.UserPermissionLimits) jwt.UserPermissionLimits {
	if len(l.Pub.Allow) == 0 {
		l.Pub.Allow = jwt.StringList{">"}
	}
	if len(l.Sub.Allow) == 0 {
		l.Sub.Allow = jwt.StringList{">"}
	}
	return l
}

// jsonDiff returns the JSON paths (a.b.c) where got and want differ;
// absent, null and empty values count as equal.
func jsonDiff(got, want any) []string {
	var out []string
	diffValue("", asJSON(got), asJSON(want), &out)
	sort.Strings(out)
	return out
}

func asJSON(v any) any {
	b, err := json.Marshal(v)
	if err != nil {
		return fmt.Sprintf("unencodable: %v", err)
	}
	var out any
	if err := json.Unmarshal(b, &out); err != nil {
		return fmt.Sprintf("undecodable: %v", err)
	}
	return out
}

func diffValue(path string, got, want any, out *[]string) {
	gm, gok := got.(map[string]any)
	wm, wok := want.(map[string]any)
	if gok && wok {
		keys := map[string]bool{}
		for k := range gm {
			keys[k] = true
		}
		for k := range wm {
			keys[k] = true
		}
		for _, k := range slices.Sorted(maps.Keys(keys)) {
			p := k
			if path != "" {
				p = path + "." + k
			}
			diffValue(p, gm[k], wm[k], out)
		}
		return
	}
	if isEmpty(got) && isEmpty(want) {
		return
	}
	if !reflect.DeepEqual(got, want) {
		*out = append(*out, path)
	}
}

func isEmpty(v any) bool {
	switch x := v.(type) {
	case nil:
		return true
	case map[string]any:
		for _, e := range x {
			if !isEmpty(e) {
				return false
			}
		}
		return true
	case []any:
		return len(x) == 0
	}
	return false
}
