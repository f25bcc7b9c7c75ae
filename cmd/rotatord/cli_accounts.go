package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/rotatord/rotatord"
)

// accountView is what the CLI reads of an Account.
type accountView struct {
	Name            string                       `json:"name"`
	PublicKey       string                       `json:"public_key"`
	System          bool                         `json:"system"`
	Description     string                       `json:"description"`
	Limits          rotatord.Limits              `json:"limits"`
	SigningKeys     []string                     `json:"signing_keys"`
	Revocations     int                          `json:"revocations"`
	KeepRevocations bool                         `json:"keep_revocations"`
	Agents          int                          `json:"agents"`
	JetStream       *rotatord.JetStream          `json:"jetstream"`
	Exports         []exportView                 `json:"exports"`
	Imports         []importView                 `json:"imports"`
	Mappings        map[string][]json.RawMessage `json:"mappings"`
	InfoURL         string                       `json:"info_url"`
	Tags            []string                     `json:"tags"`
	KeyRotation     *struct {
		Schedule string     `json:"schedule"`
		NextAt   *time.Time `json:"next_at"`
	} `json:"key_rotation"`
}

type exportView struct {
	Name     string `json:"name"`
	Subject  string `json:"subject"`
	Type     string `json:"type"`
	TokenReq bool   `json:"token_req"`
}

type importView struct {
	Name         string `json:"name"`
	Account      string `json:"account"`
	Subject      string `json:"subject"`
	Type         string `json:"type"`
	LocalSubject string `json:"local_subject"`
}

// The count limits, their flags, and the JSON fields they set.
var countLimits = []struct{ flag, field, help string }{
	{"conn", "conn", "connections"},
	{"subs", "subs", "subscriptions"},
	{"payload", "payload", "maximum message payload in bytes"},
	{"data", "data", "data in bytes"},
	{"imports", "imports", "imports the account may have"},
	{"exports", "exports", "exports the account may have"},
	{"leaf", "leaf", "leaf node connections"},
}

// The JetStream limit flags (nsc's names) and their JSON fields.
var jsLimits = []struct{ flag, field, help string }{
	{"js-mem-storage", "mem_storage", "JetStream memory storage in bytes"},
	{"js-disk-storage", "disk_storage", "JetStream file storage in bytes"},
	{"js-streams", "streams", "JetStream streams"},
	{"js-consumer", "consumer", "JetStream consumers"},
	{"js-max-ack-pending", "max_ack_pending", "unacknowledged messages per consumer"},
	{"js-max-mem-stream", "mem_max_stream_bytes", "largest memory stream in bytes"},
	{"js-max-disk-stream", "disk_max_stream_bytes", "largest file stream in bytes"},
}

// accountFlags are the flags of accounts add and update that set fields of
// the request body.
type accountFlags struct {
	description, infoURL, fromFile, jsTier string
	counts                                 map[string]*int64
	js                                     map[string]*int64
	wildcards, disallowBearer, jsMaxBytes  *bool
	jetstream, noJetStream                 *bool
	tags                                   listFlag
}

func (f *accountFlags) bind(c *cli, update bool) {
	fs := c.fs
	fs.StringVar(&f.description, "description", "", "what the account is for")
	fs.StringVar(&f.infoURL, "info-url", "", "http(s) link to more about the account")
	fs.Var(&f.tags, "tag", "a tag (repeatable, comma-separated); the tags given replace the account's")
	fs.StringVar(&f.fromFile, "from-file", "", "a JSON file (- for stdin) with fields of the request body (jetstream, exports, imports, default_permissions, mappings...); flags override it")
	f.counts = map[string]*int64{}
	for _, l := range countLimits {
		f.counts[l.flag] = fs.Int64(l.flag, -1, l.help+" (-1: unlimited)")
	}
	f.wildcards = fs.Bool("wildcards", true, "exports may have wildcard subjects")
	f.disallowBearer = fs.Bool("disallow-bearer", false, "users may not be bearer tokens")
	f.jetstream = fs.Bool("jetstream", false, "turn JetStream on (without limits, unless --js-* flags give some)")
	if update {
		f.noJetStream = fs.Bool("no-jetstream", false, "turn JetStream off")
	}
	f.js = map[string]*int64{}
	for _, l := range jsLimits {
		f.js[l.flag] = fs.Int64(l.flag, -1, l.help+" (-1: unlimited); turns JetStream on")
	}
	f.jsMaxBytes = fs.Bool("js-max-bytes-required", false, "every stream must set its max_bytes; turns JetStream on")
	fs.StringVar(&f.jsTier, "js-tier", "", "apply the --js-* flags to this replication tier (R1, R3...) instead of the whole account")
}

// body builds the request body: --from-file, then the flags given. cur is
// the account as it is (nil on add), for the JetStream tiers a --js-tier
// flag leaves alone.
func (f *accountFlags) body(c *cli, cur *accountView) (map[string]any, error) {
	body := map[string]any{}
	if f.fromFile != "" {
		var err error
		if body, err = readBodyFile(f.fromFile); err != nil {
			return nil, err
		}
	}
	if c.isSet("description") {
		body["description"] = f.description
	}
	if c.isSet("info-url") {
		body["info_url"] = f.infoURL
	}
	if c.isSet("tag") {
		body["tags"] = []string(f.tags)
	}
	limits := map[string]any{}
	if l, ok := body["limits"].(map[string]any); ok {
		limits = l
	}
	for _, l := range countLimits {
		if c.isSet(l.flag) {
			limits[l.field] = *f.counts[l.flag]
		}
	}
	if c.isSet("wildcards") {
		limits["wildcards"] = *f.wildcards
	}
	if c.isSet("disallow-bearer") {
		limits["disallow_bearer"] = *f.disallowBearer
	}
	if len(limits) > 0 {
		body["limits"] = limits
	}
	return body, f.jetStream(c, cur, body)
}

// jetStream sets body's jetstream from the JetStream flags: --no-jetstream
// turns it off; the --js-* flags set limits of the account, or of the tier
// --js-tier names (the account's other tiers are kept).
func (f *accountFlags) jetStream(c *cli, cur *accountView, body map[string]any) error {
	given := visitJS(c.fs)
	if f.noJetStream != nil && *f.noJetStream {
		if given {
			return errJetStreamFlags
		}
		body["jetstream"] = nil
		return nil
	}
	if !given {
		return nil
	}
	fields := map[string]any{}
	for _, l := range jsLimits {
		if c.isSet(l.flag) {
			fields[l.field] = *f.js[l.flag]
		}
	}
	if c.isSet("js-max-bytes-required") {
		fields["max_bytes_required"] = *f.jsMaxBytes
	}
	if f.jsTier == "" {
		js, _ := body["jetstream"].(map[string]any)
		if js == nil {
			js = map[string]any{}
		}
		for k, v := range fields {
			js[k] = v
		}
		body["jetstream"] = js
		return nil
	}
	tiers := map[string]any{}
	if cur != nil && cur.JetStream != nil {
		for name, l := range cur.JetStream.Tiers {
			var m map[string]any
			b, _ := json.Marshal(l)
			json.Unmarshal(b, &m) //nolint:errcheck // just marshalled
			tiers[name] = m
		}
	}
	tier, _ := tiers[f.jsTier].(map[string]any)
	if tier == nil {
		tier = map[string]any{}
	}
	for k, v := range fields {
		tier[k] = v
	}
	tiers[f.jsTier] = tier
	body["jetstream"] = map[string]any{"tiers": tiers}
	return nil
}

// readBodyFile reads a JSON object from a file, or from stdin for "-".
func readBodyFile(path string) (map[string]any, error) {
	var (
		b   []byte
		err error
	)
	if path == "-" {
		b, err = io.ReadAll(os.Stdin)
	} else {
		b, err = os.ReadFile(path)
	}
	if err != nil {
		return nil, fmt.Errorf("--from-file: %w", err)
	}
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.UseNumber()
	var body map[string]any
	if err := dec.Decode(&body); err != nil || body == nil {
		return nil, fmt.Errorf("--from-file %s: not a JSON object: %v", path, err)
	}
	return body, nil
}

func accountPath(name string) string { return "/v1/accounts/" + url.PathEscape(name) }

func runAccountsList(ctx context.Context, c *cli, args []string) error {
	if _, err := c.parse(args, 0); err != nil {
		return err
	}
	api, err := c.client()
	if err != nil {
		return err
	}
	// Accounts come in one answer, not in pages.
	var all struct {
		Accounts []json.RawMessage `json:"accounts"`
	}
	if _, err := api.get(ctx, "/v1/accounts", nil, &all); err != nil {
		return err
	}
	return printPage(c, "accounts", listPage{items: all.Accounts}, printAccounts)
}

func runAccountsShow(ctx context.Context, c *cli, args []string) error {
	return showOne(ctx, c, args, accountPath, c.printAccount)
}

func runAccountsAdd(ctx context.Context, c *cli, args []string) error {
	var f accountFlags
	f.bind(c, false)
	keyRotation := c.fs.String("key-rotation", "", `schedule staged rotations of the account's signing key ("@every 2160h", a cron expression)`)
	pos, err := c.parse(args, 1)
	if err != nil {
		return err
	}
	body, err := f.body(c, nil)
	if err != nil {
		return err
	}
	body["name"] = pos[0]
	api, err := c.client()
	if err != nil {
		return err
	}
	if *keyRotation != "" {
		body["key_rotation"] = map[string]string{"schedule": *keyRotation}
	}
	raw, err := api.do(ctx, http.MethodPost, "/v1/accounts", nil, body)
	if err != nil {
		return err
	}
	return c.printAccount(raw)
}

func runAccountsUpdate(ctx context.Context, c *cli, args []string) error {
	var f accountFlags
	f.bind(c, true)
	keep := c.fs.String("keep-revocations", "", "true: keep revocation entries until they expire; false: fold them into '*' (see README)")
	keyRotation := c.fs.String("key-rotation", "", `schedule staged rotations of the account's signing key ("@every 2160h", a cron expression), or "off"`)
	pos, err := c.parse(args, 1)
	if err != nil {
		return err
	}
	api, err := c.client()
	if err != nil {
		return err
	}
	var cur *accountView
	if c.isSet("js-tier") {
		// The tiers sent replace the account's: start from them.
		cur = &accountView{}
		if _, err := api.get(ctx, accountPath(pos[0]), nil, cur); err != nil {
			return err
		}
	}
	patch, err := f.body(c, cur)
	if err != nil {
		return err
	}
	switch *keyRotation {
	case "":
	case "off":
		patch["key_rotation"] = nil
	default:
		patch["key_rotation"] = map[string]string{"schedule": *keyRotation}
	}
	if *keep != "" {
		b, err := strconv.ParseBool(*keep)
		if err != nil {
			return fmt.Errorf("--keep-revocations %q: want true or false", *keep)
		}
		patch["keep_revocations"] = b
	}
	if len(patch) == 0 {
		return fmt.Errorf("nothing to change; usage: rotatord %s", c.usage)
	}
	raw, err := api.do(ctx, http.MethodPatch, accountPath(pos[0]), nil, patch)
	if err != nil {
		return err
	}
	return c.printAccount(raw)
}

func (c *cli) printAccount(raw []byte) error {
	if c.output == "json" {
		return printJSON(c.stdout, raw)
	}
	a, err := decodeView[accountView](raw)
	if err != nil {
		return err
	}
	t := newTable(c.stdout)
	t.row("Name:", a.Name)
	t.row("Public key:", a.PublicKey)
	t.row("System:", strconv.FormatBool(a.System))
	t.row("Description:", a.Description)
	t.row("Limits:", fmtLimits(a.Limits))
	t.row("JetStream:", fmtJetStream(a.JetStream))
	for i, e := range a.Exports {
		access := "public"
		if e.TokenReq {
			access = "token required"
		}
		t.row(label("Exports:", i), fmt.Sprintf("%s %s (%s, %s)", e.Type, e.Subject, e.Name, access))
	}
	for i, im := range a.Imports {
		s := fmt.Sprintf("%s %s from %s", im.Type, im.Subject, im.Account)
		if im.LocalSubject != "" {
			s += " as " + im.LocalSubject
		}
		t.row(label("Imports:", i), s)
	}
	if len(a.Mappings) > 0 {
		srcs := make([]string, 0, len(a.Mappings))
		for s := range a.Mappings {
			srcs = append(srcs, s)
		}
		sort.Strings(srcs)
		t.row("Mappings:", strings.Join(srcs, ", "))
	}
	t.row("Info URL:", a.InfoURL)
	t.row("Tags:", fmtList(a.Tags))
	t.row("Signing keys:", fmtList(a.SigningKeys))
	t.row("Agents:", strconv.Itoa(a.Agents))
	t.row("Revocations:", strconv.Itoa(a.Revocations))
	t.row("Keep revocations:", strconv.FormatBool(a.KeepRevocations))
	if k := a.KeyRotation; k != nil {
		t.row("Key rotation:", k.Schedule+", next "+fmtTime(k.NextAt))
	} else {
		t.row("Key rotation:", "off")
	}
	return t.flush()
}

// label is the row label of a list's first item, blank for the others.
func label(l string, i int) string {
	if i == 0 {
		return l
	}
	return ""
}

func printAccounts(w io.Writer, accounts []accountView) error {
	t := newTable(w, "NAME", "SYSTEM", "AGENTS", "REVOCATIONS", "JETSTREAM", "EXPORTS", "IMPORTS", "LIMITS", "PUBLIC KEY")
	for _, a := range accounts {
		js := "off"
		if a.JetStream != nil {
			js = "on"
		}
		t.row(a.Name, strconv.FormatBool(a.System), strconv.Itoa(a.Agents), strconv.Itoa(a.Revocations), js,
			strconv.Itoa(len(a.Exports)), strconv.Itoa(len(a.Imports)), fmtLimits(a.Limits), a.PublicKey)
	}
	return t.flush()
}

func fmtCount(n int64) string {
	if n < 0 {
		return "unlimited"
	}
	return strconv.FormatInt(n, 10)
}

func fmtLimits(l rotatord.Limits) string {
	s := fmt.Sprintf("conn %s, subs %s, payload %s, data %s, imports %s, exports %s, leaf %s",
		fmtCount(l.Conn), fmtCount(l.Subs), fmtCount(l.Payload), fmtCount(l.Data),
		fmtCount(l.Imports), fmtCount(l.Exports), fmtCount(l.Leaf))
	if !l.Wildcards {
		s += ", no wildcard exports"
	}
	if l.DisallowBearer {
		s += ", no bearer users"
	}
	return s
}

func fmtJSLimits(l rotatord.JetStreamLimits) string {
	s := fmt.Sprintf("mem %s, disk %s, streams %s, consumers %s", fmtCount(l.MemStorage), fmtCount(l.DiskStorage),
		fmtCount(l.Streams), fmtCount(l.Consumer))
	if l.MaxBytesRequired {
		s += ", max_bytes required"
	}
	return s
}

func fmtJetStream(js *rotatord.JetStream) string {
	switch {
	case js == nil:
		return "off"
	case js.Tiers != nil:
		names := make([]string, 0, len(js.Tiers))
		for n := range js.Tiers {
			names = append(names, n)
		}
		sort.Strings(names)
		parts := make([]string, len(names))
		for i, n := range names {
			parts[i] = n + ": " + fmtJSLimits(js.Tiers[n])
		}
		return strings.Join(parts, "; ")
	}
	return fmtJSLimits(*js.Limits)
}

var errJetStreamFlags = errors.New("--no-jetstream cannot go with --jetstream or --js-* flags")

// visitJS reports whether any JetStream flag was given.
func visitJS(fs *flag.FlagSet) bool {
	found := false
	fs.Visit(func(fl *flag.Flag) {
		if strings.HasPrefix(fl.Name, "js-") || fl.Name == "jetstream" {
			found = true
		}
	})
	return found
}
