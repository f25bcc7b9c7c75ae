package nscimport

import (
	"encoding/json"
	"fmt"
	"reflect"
	"sort"
	"time"

	"github.com/nats-io/jwt/v2"
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
// the agent would not carry: everything but the publish and subscribe
// allow and deny lists (see jwtissue.EncodeUser).
func unmodeledUser(uc *jwt.UserClaims) []string {
	want := jwt.NewUserClaims(uc.Subject)
	want.IssuerAccount = uc.IssuerAccount
	want.Pub, want.Sub = uc.Pub, uc.Sub
	want.Type, want.Version = uc.Type, uc.Version
	return jsonDiff(uc.User, want.User)
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
		for _, k := range sortedKeys(keys) {
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
