package main

// The operator CLI: `rotatord agents|rotations|audit ...` talk to a running
// rotatord over its REST API (api/openapi.yaml), never to the database.
// Every command takes the connection flags of cliFlags; stdout gets only what
// scripts read (tables or one JSON document), stderr the notes for humans.

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"time"
)

const (
	defaultAPIURL     = "http://127.0.0.1:8080"
	defaultCLITimeout = 30 * time.Second
)

// connectionUsage ends every command group's usage.
const connectionUsage = `
Connection flags (every command): --url (ROTATORD_URL), --token (ROTATORD_TOKEN),
--token-file (ROTATORD_TOKEN_FILE), --ca-file (ROTATORD_CA_FILE), --client-cert-file and
--client-key-file (ROTATORD_CLIENT_CERT_FILE, ROTATORD_CLIENT_KEY_FILE), --timeout, -o table|json.
Run a command with -h for its flags.
`

const accountsUsage = `Usage:
  rotatord accounts list
  rotatord accounts show NAME
  rotatord accounts add NAME [--description TEXT] [limits] [jetstream] [--info-url URL] [--tag TAG...]
                        [--from-file FILE] [--key-rotation SCHEDULE]
  rotatord accounts update NAME [--description TEXT] [limits] [jetstream] [--no-jetstream]
                        [--info-url URL] [--tag TAG...] [--from-file FILE] [--keep-revocations true|false]
                        [--key-rotation SCHEDULE|off]
  rotatord accounts rotate-all NAME [--waves 1,10,100] [--halt-on-failure-rate 0.05] [--wait]
  rotatord accounts rotate-key NAME [--role ROLE] [--mode staged|emergency] [--wait]

Limits (-1: unlimited): --conn N --subs N --payload BYTES --data BYTES --imports N --exports N
--leaf N --wildcards=true|false --disallow-bearer=true|false.
JetStream (turns it on): --jetstream --js-mem-storage BYTES --js-disk-storage BYTES --js-streams N
--js-consumer N --js-max-ack-pending N --js-max-mem-stream BYTES --js-max-disk-stream BYTES
--js-max-bytes-required [--js-tier R1|R3...]; update --no-jetstream turns it off.
--from-file takes a JSON object with fields of the request body (exports, imports,
default_permissions, mappings... see api/openapi.yaml); the flags given override it.
` + connectionUsage

const agentsUsage = `Usage:
  rotatord agents list [--account ACCOUNT]
  rotatord agents show NAME
  rotatord agents add NAME --account ACCOUNT [--schedule SPEC] [--grace DURATION]
                      [--delivery poll|vault|file] [--creds-out FILE] [--tag KEY:VALUE,...]
                      [--role ROLE | claims]
  rotatord agents update NAME [--role ROLE] [--tag KEY:VALUE,...] [--schedule SPEC]
                      [--grace DURATION] [--delivery poll|vault|file] [claims] [--no-resp]
  rotatord agents rotate NAME [--wait [--wait-timeout DURATION]]
  rotatord agents revoke NAME [--reason TEXT]
  rotatord agents reissue NAME [--creds-out FILE|-]
` + claimsUsage + connectionUsage

const rolesUsage = `Usage:
  rotatord roles list ACCOUNT
  rotatord roles show ACCOUNT ROLE
  rotatord roles add ACCOUNT ROLE [--description TEXT] [claims]
  rotatord roles update ACCOUNT ROLE [--description TEXT] [claims] [--no-resp]
  rotatord roles delete ACCOUNT ROLE
A role's subjects may use nats-server's templates: {{name()}} (the agent's name),
{{tag(KEY)}} (the values of its tags KEY:VALUE). Changing a role's scope makes the
servers drop its agents' connections; they reconnect at once with the same creds.
` + claimsUsage + connectionUsage

// claimsUsage lists the claim flags of agents and roles.
const claimsUsage = `
Claims: --pub SUBJ,... --sub SUBJ,... --pub-deny SUBJ,... --sub-deny SUBJ,... (a direction
with no allow entry denies everything; --pub '>' reaches everything), --resp-max N
--resp-ttl DURATION (reply to requests received), --subs N --data BYTES --payload BYTES,
--src CIDR,... --time HH:MM:SS-HH:MM:SS --times-location ZONE --conn-type TYPE,...
`

const rotationsUsage = `Usage:
  rotatord rotations list [--account ACCOUNT] [--state STATE] [--limit N] [--after ID]
                          the fleet's rotations, newest first (100 unless --limit)
  rotatord rotations list --agent NAME [--limit N]
  rotatord rotations show ID
` + connectionUsage

const auditUsage = `Usage:
  rotatord audit list [--agent NAME] [--action ACTION] [--since TIME|DURATION]
                      [--after ID] [--limit N | --all] [--oldest-first]
                      newest first unless --oldest-first
  rotatord audit verify [flags]
` + connectionUsage

// cliCommand is one subcommand of a command group.
type cliCommand struct {
	usage string // the line after "Usage: rotatord "
	run   func(ctx context.Context, c *cli, args []string) error
}

func runAccounts(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	return dispatchCLI(ctx, "accounts", accountsUsage, map[string]cliCommand{
		"list":   {"accounts list [flags]", runAccountsList},
		"show":   {"accounts show NAME [flags]", runAccountsShow},
		"add":    {"accounts add NAME [--description TEXT] [limits] [jetstream] [--from-file FILE] [--key-rotation SCHEDULE] [flags]", runAccountsAdd},
		"update": {"accounts update NAME [--description TEXT] [limits] [jetstream] [--from-file FILE] [--keep-revocations true|false] [--key-rotation SCHEDULE|off] [flags]", runAccountsUpdate},
		// Fleet and signing-key rotations (cli_keys.go).
		"rotate-all": {"accounts rotate-all NAME [--waves 1,10,100] [--halt-on-failure-rate 0.05] [--wait] [flags]", runAccountsRotateAll},
		"rotate-key": {"accounts rotate-key NAME [--role ROLE] [--mode staged|emergency] [--wait] [flags]", runAccountsRotateKey},
	}, args, stdout, stderr)
}

func runAgents(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	return dispatchCLI(ctx, "agents", agentsUsage, map[string]cliCommand{
		"list":    {"agents list [--account ACCOUNT] [flags]", runAgentsList},
		"show":    {"agents show NAME [flags]", runAgentsShow},
		"add":     {"agents add NAME --account ACCOUNT [flags]", runAgentsAdd},
		"rotate":  {"agents rotate NAME [--wait] [flags]", runAgentsRotate},
		"revoke":  {"agents revoke NAME [--reason TEXT] [flags]", runAgentsRevoke},
		"reissue": {"agents reissue NAME [--creds-out FILE|-] [flags]", runAgentsReissue},
		"update":  {"agents update NAME [--role ROLE] [--tag KEY:VALUE,...] [claims] [flags]", runAgentsUpdate},
	}, args, stdout, stderr)
}

func runRoles(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	return dispatchCLI(ctx, "roles", rolesUsage, map[string]cliCommand{
		"list":   {"roles list ACCOUNT [flags]", runRolesList},
		"show":   {"roles show ACCOUNT ROLE [flags]", runRolesShow},
		"add":    {"roles add ACCOUNT ROLE [--description TEXT] [claims] [flags]", runRolesAdd},
		"update": {"roles update ACCOUNT ROLE [--description TEXT] [claims] [flags]", runRolesUpdate},
		"delete": {"roles delete ACCOUNT ROLE [flags]", runRolesDelete},
	}, args, stdout, stderr)
}

func runRotations(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	return dispatchCLI(ctx, "rotations", rotationsUsage, map[string]cliCommand{
		"list": {"rotations list [--agent NAME | --account ACCOUNT --state STATE] [flags]", runRotationsList},
		"show": {"rotations show ID [flags]", runRotationsShow},
	}, args, stdout, stderr)
}

func runAudit(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	return dispatchCLI(ctx, "audit", auditUsage, map[string]cliCommand{
		"list": {"audit list [flags]", runAuditList},
	}, args, stdout, stderr)
}

// dispatchCLI runs the subcommand named by args[0].
func dispatchCLI(ctx context.Context, group, usage string, cmds map[string]cliCommand, args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return fmt.Errorf("%s: missing command", group)
	}
	name := args[0]
	switch name {
	case "help", "-h", "-help", "--help":
		fmt.Fprint(stdout, usage)
		return nil
	}
	cmd, ok := cmds[name]
	if !ok {
		return fmt.Errorf("%s: unknown command %q (rotatord %s help lists them)", group, name, group)
	}
	c := newCLI(group+" "+name, cmd.usage, stdout, stderr, os.Getenv)
	return cmd.run(ctx, c, args[1:])
}

// cli is the state of one CLI invocation: its flags, output and environment.
type cli struct {
	fs     *flag.FlagSet
	usage  string
	stdout io.Writer
	stderr io.Writer
	getenv func(string) string

	url       string
	token     string
	tokenFile string
	tls       tlsFiles
	output    string
	timeout   time.Duration
}

func newCLI(name, usage string, stdout, stderr io.Writer, getenv func(string) string) *cli {
	c := &cli{fs: newFlags(name, stderr), usage: usage, stdout: stdout, stderr: stderr, getenv: getenv}
	fs := c.fs
	// Defaults shown by -h are constants, never the environment: the token
	// must not appear in help output.
	fs.StringVar(&c.url, "url", "", "rotatord's URL (env ROTATORD_URL, default "+defaultAPIURL+")")
	fs.StringVar(&c.token, "token", "", "API token (env ROTATORD_TOKEN); prefer --token-file, command lines are visible to other users")
	fs.StringVar(&c.tokenFile, "token-file", "", "file holding the API token (env ROTATORD_TOKEN_FILE)")
	fs.StringVar(&c.tls.ca, "ca-file", "", "PEM CA(s) that signed rotatord's certificate, instead of the system roots (env ROTATORD_CA_FILE)")
	fs.StringVar(&c.tls.cert, "client-cert-file", "", "PEM client certificate, for a rotatord that requires one (env ROTATORD_CLIENT_CERT_FILE)")
	fs.StringVar(&c.tls.key, "client-key-file", "", "PEM private key of the client certificate (env ROTATORD_CLIENT_KEY_FILE)")
	fs.StringVar(&c.output, "output", "table", "output format: table or json")
	fs.StringVar(&c.output, "o", "table", "shorthand for --output")
	fs.DurationVar(&c.timeout, "timeout", defaultCLITimeout, "timeout of each HTTP request")
	setUsage(fs, func() {
		fmt.Fprintf(stderr, "Usage: rotatord %s\n\nFlags:\n", usage)
		fs.PrintDefaults()
	})
	return c
}

// parse parses the flags wherever they are among the positional arguments
// (`agents show NAME -o json`) and checks that there are want positionals.
// The flag package stops at the first non-flag, so parse again after each;
// everything after "--" is positional.
func (c *cli) parse(args []string, want int) ([]string, error) {
	var pos []string
	for {
		if err := c.fs.Parse(args); err != nil {
			return nil, err
		}
		rest := c.fs.Args()
		if len(rest) == 0 {
			break
		}
		if n := len(args) - len(rest); n > 0 && args[n-1] == "--" {
			pos = append(pos, rest...)
			break
		}
		pos = append(pos, rest[0])
		args = rest[1:]
	}
	if len(pos) != want {
		return nil, c.usageError()
	}
	for _, p := range pos {
		if strings.TrimSpace(p) == "" {
			return nil, c.usageError()
		}
	}
	if c.output != "table" && c.output != "json" {
		return nil, fmt.Errorf("--output %q: want table or json", c.output)
	}
	return pos, nil
}

func (c *cli) usageError() error {
	return fmt.Errorf("usage: rotatord %s", c.usage)
}

// isSet reports whether flag name was given on the command line.
func (c *cli) isSet(name string) bool {
	set := false
	c.fs.Visit(func(f *flag.Flag) {
		if f.Name == name {
			set = true
		}
	})
	return set
}

// client builds the API client from the flags, then the environment.
func (c *cli) client() (*apiClient, error) {
	base := c.flagOrEnv("url", c.url, "ROTATORD_URL")
	if base == "" {
		base = defaultAPIURL
	}
	token, err := c.apiToken()
	if err != nil {
		return nil, err
	}
	files := tlsFiles{
		ca:   c.flagOrEnv("ca-file", c.tls.ca, "ROTATORD_CA_FILE"),
		cert: c.flagOrEnv("client-cert-file", c.tls.cert, "ROTATORD_CLIENT_CERT_FILE"),
		key:  c.flagOrEnv("client-key-file", c.tls.key, "ROTATORD_CLIENT_KEY_FILE"),
	}
	return newAPIClient(base, token, files, c.timeout)
}

// flagOrEnv is the flag's value when it was given, else the variable's.
func (c *cli) flagOrEnv(flagName, value, env string) string {
	if c.isSet(flagName) {
		return value
	}
	return c.getenv(env)
}

// apiToken finds the token: --token or --token-file (not both), then
// ROTATORD_TOKEN, then ROTATORD_TOKEN_FILE. Errors never carry the token.
func (c *cli) apiToken() (string, error) {
	if c.isSet("token") && c.isSet("token-file") {
		return "", errors.New("give --token or --token-file, not both")
	}
	var token string
	switch {
	case c.isSet("token"):
		token = c.token
	case c.isSet("token-file"):
		return readTokenFile(c.tokenFile)
	case c.getenv("ROTATORD_TOKEN") != "":
		token = c.getenv("ROTATORD_TOKEN")
	case c.getenv("ROTATORD_TOKEN_FILE") != "":
		return readTokenFile(c.getenv("ROTATORD_TOKEN_FILE"))
	default:
		return "", noTokenError()
	}
	return checkToken(strings.TrimSpace(token))
}

// noTokenError says where a token comes from; in a folder where `rotatord
// dev` runs, it points at the dev admin token.
func noTokenError() error {
	const msg = "no API token: set ROTATORD_TOKEN or ROTATORD_TOKEN_FILE, or give --token-file"
	tokenFile := filepath.Join(devDirName, devTokenFile)
	if _, err := os.Stat(tokenFile); err == nil {
		envFile := filepath.Join(devDirName, devEnvFile)
		if _, err := os.Stat(envFile); err == nil {
			return fmt.Errorf("%s; for rotatord dev: source %s (or --token-file %s)", msg, envFile, tokenFile)
		}
		return fmt.Errorf("%s; for rotatord dev: --token-file %s", msg, tokenFile)
	}
	return errors.New(msg + " (make one with rotatord token create)")
}

func readTokenFile(path string) (string, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return "", fmt.Errorf("read token file: %w", err)
	}
	token, err := checkToken(strings.TrimSpace(string(b)))
	if err != nil {
		return "", fmt.Errorf("token file %s: %w", path, err)
	}
	return token, nil
}

// checkToken refuses what cannot go into an Authorization header, without
// saying what the token is.
func checkToken(token string) (string, error) {
	if token == "" {
		return "", errors.New("the API token is empty")
	}
	for _, r := range token {
		if r <= ' ' || r >= 0x7f {
			return "", errors.New("the API token holds spaces or control characters")
		}
	}
	return token, nil
}

// isTerminal reports whether w is a terminal (a character device).
func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	if !ok {
		return false
	}
	fi, err := f.Stat()
	return err == nil && fi.Mode()&os.ModeCharDevice != 0
}

// listFlag collects a list from repeated flags, each comma-separated.
type listFlag []string

func (l *listFlag) String() string { return strings.Join(*l, ",") }

func (l *listFlag) Set(s string) error {
	for _, v := range strings.Split(s, ",") {
		if v = strings.TrimSpace(v); v != "" {
			*l = append(*l, v)
		}
	}
	return nil
}
