package main

import (
	"encoding/json"
	"fmt"
	"strconv"
	"strings"
	"time"
)

// The user claims of agents and roles on the command line: the flags, the
// JSON the API takes, and how tables show them.

// respView is ResponsePermission.
type respView struct {
	Max int    `json:"max"`
	TTL string `json:"ttl"`
}

// permsView is Permissions.
type permsView struct {
	Pub  permListView `json:"pub"`
	Sub  permListView `json:"sub"`
	Resp *respView    `json:"resp,omitempty"`
}

// userLimitView is UserLimits; -1 is unlimited.
type userLimitView struct {
	Subs    int64 `json:"subs"`
	Data    int64 `json:"data"`
	Payload int64 `json:"payload"`
}

type timeRangeView struct {
	Start string `json:"start"`
	End   string `json:"end"`
}

// claimsView are the claims an agent or a role shows besides permissions.
type claimsView struct {
	Limits          userLimitView   `json:"limits"`
	Src             []string        `json:"src"`
	Times           []timeRangeView `json:"times"`
	TimesLocation   string          `json:"times_location"`
	ConnectionTypes []string        `json:"connection_types"`
}

// timesFlag collects --time START-END windows, repeatable or comma-separated.
type timesFlag []timeRangeView

func (f *timesFlag) String() string {
	parts := make([]string, len(*f))
	for i, r := range *f {
		parts[i] = r.Start + "-" + r.End
	}
	return strings.Join(parts, ",")
}

func (f *timesFlag) Set(s string) error {
	for _, w := range strings.Split(s, ",") {
		if w = strings.TrimSpace(w); w == "" {
			continue
		}
		start, end, ok := strings.Cut(w, "-")
		if !ok {
			return fmt.Errorf("%q: want START-END such as 08:00:00-18:00:00", w)
		}
		*f = append(*f, timeRangeView{Start: strings.TrimSpace(start), End: strings.TrimSpace(end)})
	}
	return nil
}

// claimFlags are the flags of an agent's or a role's claims.
type claimFlags struct {
	pub, sub, pubDeny, subDeny listFlag
	respMax                    int
	respTTL                    time.Duration
	noResp                     bool
	subs, data, payload        int64
	src, connTypes             listFlag
	times                      timesFlag
	timesLocation              string
}

func (f *claimFlags) bind(c *cli, update bool) {
	c.fs.Var(&f.pub, "pub", "subjects it may publish to, comma-separated, repeatable (none: it may publish nowhere)")
	c.fs.Var(&f.sub, "sub", "subjects it may subscribe to, comma-separated, repeatable (none: it may subscribe nowhere)")
	c.fs.Var(&f.pubDeny, "pub-deny", "subjects it may not publish to")
	c.fs.Var(&f.subDeny, "sub-deny", "subjects it may not subscribe to")
	c.fs.IntVar(&f.respMax, "resp-max", 0, "allow replies to requests it received, at most this many per request (-1: no limit; 0: the server's default, 1)")
	c.fs.DurationVar(&f.respTTL, "resp-ttl", 0, "with --resp-max: how long after the request replies are allowed (0: the server's default, 2m)")
	if update {
		c.fs.BoolVar(&f.noResp, "no-resp", false, "remove the permission to reply to requests")
	}
	c.fs.Int64Var(&f.subs, "subs", -1, "subscriptions at once (-1: unlimited)")
	c.fs.Int64Var(&f.data, "data", -1, "data in bytes (-1: unlimited)")
	c.fs.Int64Var(&f.payload, "payload", -1, "largest message payload in bytes (-1: unlimited)")
	c.fs.Var(&f.src, "src", "networks it may connect from, CIDRs, comma-separated (none: anywhere)")
	c.fs.Var(&f.times, "time", "a daily window it may connect in, START-END such as 08:00:00-18:00:00, repeatable (none: always)")
	c.fs.StringVar(&f.timesLocation, "times-location", "", "IANA time zone of --time, such as Europe/Paris (default: each server's local time)")
	c.fs.Var(&f.connTypes, "conn-type", "connection types it may use: STANDARD, WEBSOCKET, LEAFNODE, LEAFNODE_WS, MQTT, MQTT_WS, IN_PROCESS (none: any)")
}

var (
	permFlags  = []string{"pub", "sub", "pub-deny", "sub-deny", "resp-max", "resp-ttl", "no-resp"}
	limitNames = []string{"subs", "data", "payload"}
)

// anySet reports whether one of the flags was given.
func anySet(c *cli, names ...string) bool {
	for _, n := range names {
		if c.isSet(n) {
			return true
		}
	}
	return false
}

// given reports whether any claim flag was given.
func (f *claimFlags) given(c *cli) bool {
	return anySet(c, permFlags...) || anySet(c, limitNames...) || anySet(c, "src", "time", "times-location", "conn-type")
}

// permissions builds the permissions from the flags over base: each list
// flag given replaces that list.
func (f *claimFlags) permissions(c *cli, base permsView) (permsView, error) {
	for _, l := range []struct {
		flag string
		src  listFlag
		dst  *[]string
	}{{"pub", f.pub, &base.Pub.Allow}, {"pub-deny", f.pubDeny, &base.Pub.Deny}, {"sub", f.sub, &base.Sub.Allow}, {"sub-deny", f.subDeny, &base.Sub.Deny}} {
		if c.isSet(l.flag) {
			*l.dst = nonNil(l.src)
		}
	}
	base.Pub.Allow, base.Pub.Deny = nonNil(base.Pub.Allow), nonNil(base.Pub.Deny)
	base.Sub.Allow, base.Sub.Deny = nonNil(base.Sub.Allow), nonNil(base.Sub.Deny)
	switch {
	case f.noResp && anySet(c, "resp-max", "resp-ttl"):
		return base, fmt.Errorf("--no-resp and --resp-max/--resp-ttl exclude each other")
	case f.noResp:
		base.Resp = nil
	case anySet(c, "resp-max", "resp-ttl"):
		base.Resp = &respView{Max: f.respMax, TTL: f.respTTL.String()}
	}
	return base, nil
}

// body adds the claims given on the command line to an API body.
func (f *claimFlags) body(c *cli, body map[string]any, base permsView) error {
	if anySet(c, permFlags...) {
		perms, err := f.permissions(c, base)
		if err != nil {
			return err
		}
		body["permissions"] = perms
	}
	limits := map[string]int64{}
	for _, l := range []struct {
		name string
		v    int64
	}{{"subs", f.subs}, {"data", f.data}, {"payload", f.payload}} {
		if c.isSet(l.name) {
			limits[l.name] = l.v
		}
	}
	if len(limits) > 0 {
		body["limits"] = limits
	}
	if c.isSet("src") {
		body["src"] = nonNil(f.src)
	}
	if c.isSet("time") {
		body["times"] = append(timesFlag{}, f.times...)
	}
	if c.isSet("times-location") {
		body["times_location"] = f.timesLocation
	}
	if c.isSet("conn-type") {
		body["connection_types"] = nonNil(f.connTypes)
	}
	return nil
}

// claimRows adds an agent's or a role's claims to a table.
func claimRows(t *table, p permsView, c claimsView) {
	t.row("Publish allow:", fmtList(p.Pub.Allow))
	t.row("Publish deny:", fmtList(p.Pub.Deny))
	t.row("Subscribe allow:", fmtList(p.Sub.Allow))
	t.row("Subscribe deny:", fmtList(p.Sub.Deny))
	resp := ""
	if r := p.Resp; r != nil {
		resp = fmt.Sprintf("max %s, ttl %s", fmtLimit(int64(r.Max)), r.TTL)
	}
	t.row("Replies:", resp)
	t.row("Limits:", fmt.Sprintf("subs %s, data %s, payload %s", fmtLimit(c.Limits.Subs), fmtLimit(c.Limits.Data), fmtLimit(c.Limits.Payload)))
	t.row("Source networks:", fmtList(c.Src))
	times := make([]string, len(c.Times))
	for i, r := range c.Times {
		times[i] = r.Start + "-" + r.End
	}
	t.row("Connect times:", fmtList(times))
	t.row("Times location:", c.TimesLocation)
	t.row("Connection types:", fmtList(c.ConnectionTypes))
}

func fmtLimit(n int64) string {
	if n < 0 {
		return "unlimited"
	}
	return strconv.FormatInt(n, 10)
}

// toMap turns a request struct into a JSON object to add fields to.
func toMap(v any) (map[string]any, error) {
	b, err := json.Marshal(v)
	if err != nil {
		return nil, fmt.Errorf("encode request: %w", err)
	}
	var m map[string]any
	if err := json.Unmarshal(b, &m); err != nil {
		return nil, fmt.Errorf("encode request: %w", err)
	}
	return m, nil
}
