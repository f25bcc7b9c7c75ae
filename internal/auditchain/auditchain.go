// Package auditchain hashes audit events into a chain and verifies it. It is
// pure: the registry reads and writes the rows, this package only encodes,
// hashes and compares.
//
// The chain is a sequence of links numbered 1, 2, 3, ... (seq). Link n
// seals one audit event:
//
//	hash(n) = SHA-256(hash(n-1) || Encode(event))
//
// where hash(0) is 32 zero bytes (Genesis). Changing, removing or reordering
// any sealed event or link changes every later hash, so an operator who
// records the head (seq, hash) somewhere the database's superuser cannot
// write can prove the trail up to that point was not rewritten.
//
// # Encoding (version rotatord-audit-v1)
//
// Encode writes ten fields, each as its length in bytes (4 bytes, big
// endian) followed by its bytes, in this order:
//
//  1. the string "rotatord-audit-v1"
//  2. id: the event's id in decimal ASCII, no sign, no leading zeros
//  3. at: the event's time in UTC as "2006-01-02T15:04:05.000000Z"
//     (always six fractional digits; PostgreSQL keeps microseconds)
//  4. actor, 5. action, 6. account, 7. agent, 8. public_key: UTF-8 as stored
//  9. rotation_id: the UUID in lowercase hyphenated form, or empty
//  10. details: canonical JSON of the details as PostgreSQL's jsonb returns
//     them: no insignificant whitespace, object keys sorted by their UTF-8
//     bytes, numbers copied digit for digit (jsonb already normalized them),
//     strings in double quotes with only these escapes: \" and \\, \n, \r
//     and \t, other characters below U+0020 as \u00XX (lowercase hex);
//     everything else as raw UTF-8.
//
// The encoding is part of the stored data: changing it makes every existing
// chain fail verification. A new encoding needs a new version string.
package auditchain

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"sort"
	"strconv"
	"strings"
	"time"
)

// Version names the encoding; it is the first field of every encoded event.
const Version = "rotatord-audit-v1"

// HashSize is the size of a link's hash in bytes.
const HashSize = sha256.Size

// timeLayout is the fixed-precision UTC form of an event's time.
const timeLayout = "2006-01-02T15:04:05.000000Z"

// Event is an audit event as stored, in the form the chain hashes.
type Event struct {
	ID        int64
	At        time.Time
	Actor     string
	Action    string
	Account   string
	Agent     string
	PublicKey string
	// RotationID is the rotation's UUID as text, "" when none.
	RotationID string
	// Details is the details' JSON text as read back from jsonb.
	Details []byte
}

// Genesis returns the hash that the first link chains from: 32 zero bytes.
func Genesis() []byte { return make([]byte, HashSize) }

// Encode returns the canonical encoding of e described in the package
// documentation. It fails only when e.Details is not valid JSON.
func Encode(e Event) ([]byte, error) {
	details, err := CanonicalJSON(e.Details)
	if err != nil {
		return nil, fmt.Errorf("encode audit event %d: details: %w", e.ID, err)
	}
	var b bytes.Buffer
	for _, f := range []string{
		Version,
		strconv.FormatInt(e.ID, 10),
		e.At.UTC().Format(timeLayout),
		e.Actor, e.Action, e.Account, e.Agent, e.PublicKey, e.RotationID,
	} {
		writeField(&b, []byte(f))
	}
	writeField(&b, details)
	return b.Bytes(), nil
}

func writeField(b *bytes.Buffer, f []byte) {
	var n [4]byte
	binary.BigEndian.PutUint32(n[:], uint32(len(f)))
	b.Write(n[:])
	b.Write(f)
}

// Hash returns SHA-256(prev || Encode(e)): the hash of the link that seals e
// after the link whose hash is prev.
func Hash(prev []byte, e Event) ([]byte, error) {
	enc, err := Encode(e)
	if err != nil {
		return nil, err
	}
	h := sha256.New()
	h.Write(prev)
	h.Write(enc)
	return h.Sum(nil), nil
}

// CanonicalJSON re-encodes one JSON value canonically: no insignificant
// whitespace, object keys sorted by their UTF-8 bytes, numbers kept as
// written. Empty input is taken as {} (no details). It fails on invalid JSON,
// on trailing data and on duplicate object keys, which jsonb never returns.
func CanonicalJSON(raw []byte) ([]byte, error) {
	if len(bytes.TrimSpace(raw)) == 0 {
		return []byte("{}"), nil
	}
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.UseNumber()
	var b bytes.Buffer
	if err := canonValue(dec, &b); err != nil {
		return nil, err
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		return nil, errors.New("trailing data after the JSON value")
	}
	return b.Bytes(), nil
}

// canonValue copies the next JSON value of dec to b in canonical form.
func canonValue(dec *json.Decoder, b *bytes.Buffer) error {
	tok, err := dec.Token()
	if err != nil {
		return fmt.Errorf("invalid JSON: %w", err)
	}
	switch t := tok.(type) {
	case json.Delim:
		switch t {
		case '{':
			return canonObject(dec, b)
		case '[':
			b.WriteByte('[')
			for i := 0; dec.More(); i++ {
				if i > 0 {
					b.WriteByte(',')
				}
				if err := canonValue(dec, b); err != nil {
					return err
				}
			}
			if _, err := dec.Token(); err != nil { // ']'
				return fmt.Errorf("invalid JSON: %w", err)
			}
			b.WriteByte(']')
			return nil
		}
		return fmt.Errorf("invalid JSON: unexpected %q", t)
	case json.Number:
		b.WriteString(t.String())
	case string:
		writeString(b, t)
	case bool:
		b.WriteString(strconv.FormatBool(t))
	case nil:
		b.WriteString("null")
	default:
		return fmt.Errorf("invalid JSON: unexpected token %v", tok)
	}
	return nil
}

func canonObject(dec *json.Decoder, b *bytes.Buffer) error {
	type member struct {
		key   string
		value []byte
	}
	var members []member
	seen := map[string]bool{}
	for dec.More() {
		tok, err := dec.Token()
		if err != nil {
			return fmt.Errorf("invalid JSON: %w", err)
		}
		key, ok := tok.(string)
		if !ok {
			return fmt.Errorf("invalid JSON: object key %v is not a string", tok)
		}
		if seen[key] {
			return fmt.Errorf("invalid JSON: duplicate key %q", key)
		}
		seen[key] = true
		var v bytes.Buffer
		if err := canonValue(dec, &v); err != nil {
			return err
		}
		members = append(members, member{key, v.Bytes()})
	}
	if _, err := dec.Token(); err != nil { // '}'
		return fmt.Errorf("invalid JSON: %w", err)
	}
	// Go compares strings bytewise, which is the order of their UTF-8 bytes.
	sort.Slice(members, func(i, j int) bool { return members[i].key < members[j].key })
	b.WriteByte('{')
	for i, m := range members {
		if i > 0 {
			b.WriteByte(',')
		}
		writeString(b, m.key)
		b.WriteByte(':')
		b.Write(m.value)
	}
	b.WriteByte('}')
	return nil
}

// writeString writes s as a JSON string with the escapes of the package
// documentation. It does not use encoding/json, whose escaping has changed
// between Go releases: the hashes must not.
func writeString(b *bytes.Buffer, s string) {
	const hexDigits = "0123456789abcdef"
	b.WriteByte('"')
	for i := 0; i < len(s); i++ {
		switch c := s[i]; {
		case c == '"' || c == '\\':
			b.WriteByte('\\')
			b.WriteByte(c)
		case c == '\n':
			b.WriteString(`\n`)
		case c == '\r':
			b.WriteString(`\r`)
		case c == '\t':
			b.WriteString(`\t`)
		case c < 0x20:
			b.WriteString(`\u00`)
			b.WriteByte(hexDigits[c>>4])
			b.WriteByte(hexDigits[c&0xf])
		default:
			b.WriteByte(c)
		}
	}
	b.WriteByte('"')
}

// Link is one entry of the chain as stored.
type Link struct {
	Seq      int64
	EventID  int64
	PrevHash []byte
	Hash     []byte
}

// Head is a link's position and hash (hex): what operators anchor.
type Head struct {
	Seq  int64  `json:"seq"`
	Hash string `json:"hash"`
}

// String returns "seq:hash", the form ParseHead reads.
func (h Head) String() string { return strconv.FormatInt(h.Seq, 10) + ":" + h.Hash }

// ParseHead reads "seq:hash" (hash in hex), as Head.String writes it.
func ParseHead(s string) (Head, error) {
	seqText, hashText, ok := strings.Cut(s, ":")
	if !ok {
		return Head{}, fmt.Errorf("anchor %q: want SEQ:HASH", s)
	}
	seq, err := strconv.ParseInt(seqText, 10, 64)
	if err != nil || seq < 1 {
		return Head{}, fmt.Errorf("anchor %q: seq must be a positive integer", s)
	}
	h, err := hex.DecodeString(hashText)
	if err != nil || len(h) != HashSize {
		return Head{}, fmt.Errorf("anchor %q: hash must be %d hex digits", s, 2*HashSize)
	}
	return Head{Seq: seq, Hash: hex.EncodeToString(h)}, nil
}

// Kind classifies a problem found by verification.
type Kind string

// The kinds of problems.
const (
	// Changed: the recomputed hash differs from the stored one; the event
	// (or the link's hash) was altered.
	Changed Kind = "changed"
	// Deleted: a link whose event is gone, or an event deleted while
	// queued for sealing.
	Deleted Kind = "deleted"
	// Missing: links are missing (a gap in seq).
	Missing Kind = "missing"
	// BrokenLink: a link's prev_hash is not the previous link's hash: links
	// were reordered, replaced or rewritten.
	BrokenLink Kind = "broken_link"
	// AnchorMismatch: an anchored link differs or is gone.
	AnchorMismatch Kind = "anchor_mismatch"
)

// Problem is one finding of verification.
type Problem struct {
	Kind    Kind   `json:"kind"`
	Seq     int64  `json:"seq,omitempty"`
	EventID int64  `json:"event_id,omitempty"`
	Message string `json:"message"`
}

func (p Problem) String() string { return string(p.Kind) + ": " + p.Message }

// MaxProblems bounds how many problems a Report lists; more are counted.
const MaxProblems = 1000

// Report is the result of verifying a chain.
type Report struct {
	// Events is how many sealed events were present and rehashed.
	Events int64 `json:"events"`
	// Head is the last link; seq 0 and the Genesis hash for an empty chain.
	Head Head `json:"head"`
	// Problems lists what is wrong, at most MaxProblems of them;
	// MoreProblems counts the rest.
	Problems     []Problem `json:"problems"`
	MoreProblems int       `json:"more_problems,omitempty"`
	// Unsealed counts events older than UnsealedBefore that are not in the
	// chain: events written around the sealer (triggers disabled) or whose
	// place in the sealing queue was removed. A warning, not a failure:
	// such events are not protected.
	Unsealed         int64     `json:"unsealed"`
	OldestUnsealedID int64     `json:"oldest_unsealed_id,omitempty"`
	UnsealedBefore   time.Time `json:"unsealed_before"`
}

// OK reports whether the chain verified without problems.
func (r *Report) OK() bool { return len(r.Problems) == 0 && r.MoreProblems == 0 }

// Verifier checks links fed to it in seq order. The zero value is not
// usable; call NewVerifier.
type Verifier struct {
	report  Report
	last    []byte // hash of the last link seen
	anchors []Head // sorted by seq
}

// NewVerifier returns a Verifier that also checks that each anchor (a head
// recorded earlier) is still in the chain unchanged.
func NewVerifier(anchors ...Head) *Verifier {
	v := &Verifier{last: Genesis(), anchors: append([]Head{}, anchors...)}
	v.report.Head = Head{Hash: hex.EncodeToString(v.last)}
	v.report.Problems = []Problem{}
	sort.Slice(v.anchors, func(i, j int) bool { return v.anchors[i].Seq < v.anchors[j].Seq })
	return v
}

// Check verifies the next link l and its event e, nil when the event is
// gone. Links must come in increasing seq order.
func (v *Verifier) Check(l Link, e *Event) {
	want := v.report.Head.Seq + 1
	switch {
	case l.Seq > want:
		// The gap explains the broken link too: report it once.
		msg := fmt.Sprintf("chain links %d to %d are missing", want, l.Seq-1)
		if l.Seq == want+1 {
			msg = fmt.Sprintf("chain link %d is missing", want)
		}
		v.add(Problem{Kind: Missing, Seq: want, Message: msg})
	case !bytes.Equal(l.PrevHash, v.last):
		v.add(Problem{Kind: BrokenLink, Seq: l.Seq, EventID: l.EventID,
			Message: fmt.Sprintf("link %d (event %d) does not chain from link %d", l.Seq, l.EventID, l.Seq-1)})
	}
	if e == nil {
		v.add(Problem{Kind: Deleted, Seq: l.Seq, EventID: l.EventID,
			Message: fmt.Sprintf("event %d (link %d) was deleted", l.EventID, l.Seq)})
	} else {
		v.report.Events++
		// Rehash from the stored prev_hash so that one altered event is one
		// problem, not a cascade over every later link.
		h, err := Hash(l.PrevHash, *e)
		switch {
		case err != nil:
			v.add(Problem{Kind: Changed, Seq: l.Seq, EventID: l.EventID,
				Message: fmt.Sprintf("event %d (link %d) was changed: %v", l.EventID, l.Seq, err)})
		case !bytes.Equal(h, l.Hash):
			v.add(Problem{Kind: Changed, Seq: l.Seq, EventID: l.EventID,
				Message: fmt.Sprintf("event %d (link %d) was changed: its hash does not match", l.EventID, l.Seq)})
		}
	}
	hash := hex.EncodeToString(l.Hash)
	for len(v.anchors) > 0 && v.anchors[0].Seq <= l.Seq {
		a := v.anchors[0]
		v.anchors = v.anchors[1:]
		switch {
		case a.Seq < l.Seq:
			v.add(Problem{Kind: AnchorMismatch, Seq: a.Seq,
				Message: fmt.Sprintf("anchored link %d is gone", a.Seq)})
		case !strings.EqualFold(a.Hash, hash):
			v.add(Problem{Kind: AnchorMismatch, Seq: l.Seq, EventID: l.EventID,
				Message: fmt.Sprintf("link %d has hash %s, anchored as %s", l.Seq, hash, a.Hash)})
		}
	}
	v.report.Head = Head{Seq: l.Seq, Hash: hash}
	v.last = l.Hash
}

// DeletedBeforeSealing reports an event that was queued for sealing and is
// gone.
func (v *Verifier) DeletedBeforeSealing(eventID int64) {
	v.add(Problem{Kind: Deleted, EventID: eventID,
		Message: fmt.Sprintf("event %d was deleted before it was sealed", eventID)})
}

// Report returns the findings after the last link.
func (v *Verifier) Report() Report {
	r := v.report
	r.Problems = append([]Problem{}, v.report.Problems...)
	// Anchors not reached lie beyond the head.
	for _, a := range v.anchors {
		p := Problem{Kind: AnchorMismatch, Seq: a.Seq,
			Message: fmt.Sprintf("anchored link %d is beyond the head %d: the chain was cut", a.Seq, r.Head.Seq)}
		if len(r.Problems) < MaxProblems {
			r.Problems = append(r.Problems, p)
		} else {
			r.MoreProblems++
		}
	}
	return r
}

func (v *Verifier) add(p Problem) {
	if len(v.report.Problems) < MaxProblems {
		v.report.Problems = append(v.report.Problems, p)
		return
	}
	v.report.MoreProblems++
}
