package httpapi

import (
	"github.com/rotatord/rotatord"
)

// claimsInput are the user claims of a create body (agents and roles),
// besides permissions; absent fields are empty, absent limits unlimited.
type claimsInput struct {
	Limits          *rotatord.UserLimitsPatch `json:"limits"`
	Src             []string                  `json:"src"`
	Times           []rotatord.TimeRange      `json:"times"`
	TimesLocation   string                    `json:"times_location"`
	ConnectionTypes []string                  `json:"connection_types"`
}

// claimsPatch are the user claims of a PATCH body besides permissions;
// absent or null fields stay as they are, an empty list clears one.
type claimsPatch struct {
	Limits          *rotatord.UserLimitsPatch `json:"limits"`
	Src             *[]string                 `json:"src"`
	Times           *[]rotatord.TimeRange     `json:"times"`
	TimesLocation   *string                   `json:"times_location"`
	ConnectionTypes *[]string                 `json:"connection_types"`
}

// claimsJSON are the user claims of an agent or role besides permissions.
type claimsJSON struct {
	Limits          rotatord.UserLimits  `json:"limits"`
	Src             []string             `json:"src"`
	Times           []rotatord.TimeRange `json:"times"`
	TimesLocation   string               `json:"times_location"`
	ConnectionTypes []string             `json:"connection_types"`
}

func toClaimsJSON(t rotatord.UserTemplate) claimsJSON {
	t = t.Normalize()
	return claimsJSON{Limits: t.Limits, Src: t.Src, Times: t.Times, TimesLocation: t.TimesLocation, ConnectionTypes: t.ConnectionTypes}
}

func nonNilStrings(l []string) []string {
	if l == nil {
		return []string{}
	}
	return l
}
