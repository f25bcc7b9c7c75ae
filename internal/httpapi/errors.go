// Package httpapi is rotatord's HTTP server (chi): the admin API under /v1
// with scoped bearer tokens, the account resolver under /jwt/v1, and the
// health, readiness and metrics endpoints. The contract is api/openapi.yaml.
package httpapi

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime"
	"net/http"
	"strings"

	"github.com/rotatord/rotatord"
)

// statusOf maps error codes to HTTP statuses; anything else is a 500.
var statusOf = map[string]int{
	rotatord.EINVALID:        http.StatusBadRequest,
	rotatord.EUNAUTHORIZED:   http.StatusUnauthorized,
	rotatord.EFORBIDDEN:      http.StatusForbidden,
	rotatord.ENOTFOUND:       http.StatusNotFound,
	rotatord.ECONFLICT:       http.StatusConflict,
	rotatord.ETOOLARGE:       http.StatusRequestEntityTooLarge,
	rotatord.EUNSUPPORTED:    http.StatusUnprocessableEntity,
	rotatord.EUNAVAILABLE:    http.StatusServiceUnavailable,
	rotatord.EINTERNAL:       http.StatusInternalServerError,
	"unsupported_media_type": http.StatusUnsupportedMediaType,
	"method_not_allowed":     http.StatusMethodNotAllowed,
	codeHeaderTooLarge:       http.StatusRequestHeaderFieldsTooLarge,
	// The agent API's.
	rotatord.ETOOMANYREQUESTS:  http.StatusTooManyRequests,
	rotatord.EDELIVERYMISMATCH: http.StatusConflict,
	rotatord.ECREDEXPIRED:      http.StatusUnauthorized,
	// The account JWT size guard's.
	rotatord.EJWTFULL: http.StatusConflict,
}

type errorBody struct {
	Error string `json:"error"`
	Code  string `json:"code"`
	// Rotation is the rotation in flight that a conflict is about.
	Rotation string `json:"rotation,omitempty"`
}

// writeError answers with the JSON error body. Only 5xx are logged, with the
// full error; the caller sees a generic message for them.
func (s *Server) writeError(w http.ResponseWriter, r *http.Request, err error) {
	code := rotatord.ErrorCode(err)
	status, ok := statusOf[code]
	if !ok {
		status = http.StatusInternalServerError
	}
	// Messages may quote what the caller sent; never a seed.
	msg := redactSeeds(rotatord.ErrorMessage(err))
	if status >= 500 {
		s.log.Error("request failed", "method", r.Method, "path", logPath(r), "status", status, "err", err)
		if code == rotatord.EINTERNAL {
			msg = "internal error"
		}
	}
	if status == http.StatusUnauthorized {
		scheme := "Bearer"
		if strings.HasSuffix(r.URL.Path, "/creds") {
			scheme = rotatord.ProofScheme
		}
		w.Header().Set("WWW-Authenticate", scheme+` realm="rotatord"`)
	}
	setRetryAfter(w, err)
	body := errorBody{Error: msg, Code: code}
	var inFlight *rotatord.RotationInFlightError
	if errors.As(err, &inFlight) {
		body.Rotation = inFlight.Rotation
	}
	writeJSON(w, status, body)
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	enc := json.NewEncoder(w)
	enc.SetEscapeHTML(false)
	enc.Encode(v) //nolint:errcheck // the client went away
}

// decode reads one JSON object from the body into v: at most maxBody bytes,
// Content-Type application/json, no unknown fields, nothing after it.
func (s *Server) decode(w http.ResponseWriter, r *http.Request, v any) error {
	if ct := r.Header.Get("Content-Type"); ct != "" {
		mt, _, err := mime.ParseMediaType(ct)
		if err != nil || mt != "application/json" {
			return &rotatord.Error{Code: "unsupported_media_type", Message: "Content-Type must be application/json"}
		}
	}
	raw, err := io.ReadAll(http.MaxBytesReader(w, r.Body, s.maxBody))
	if err != nil {
		return decodeError(err, s.maxBody)
	}
	return decodeJSON(raw, v, s.maxBody)
}

// decodeJSON reads one JSON object from raw (a body read in full, at most
// limit bytes) into v, with the rules of decode: UTF-8 without NUL
// characters, no unknown fields, nothing after the object. Handlers that
// need the raw body too (to hash it) read it themselves and call this
// (through decodeBody).
func decodeJSON(raw []byte, v any, limit int64) error {
	if err := checkJSONText(raw); err != nil {
		return err
	}
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return decodeError(err, limit)
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		if err != nil {
			return decodeError(err, limit)
		}
		return rotatord.Errorf(rotatord.EINVALID, "body must hold a single JSON object")
	}
	return nil
}

func decodeError(err error, limit int64) error {
	var (
		tooBig *http.MaxBytesError
		syn    *json.SyntaxError
		typ    *json.UnmarshalTypeError
	)
	switch {
	case errors.As(err, &tooBig):
		return rotatord.Errorf(rotatord.ETOOLARGE, "body is larger than %d bytes", limit)
	case errors.Is(err, io.EOF):
		return rotatord.Errorf(rotatord.EINVALID, "body is empty: send a JSON object")
	case errors.As(err, &syn), errors.Is(err, io.ErrUnexpectedEOF):
		return rotatord.Errorf(rotatord.EINVALID, "body is not valid JSON")
	case errors.As(err, &typ):
		if typ.Field == "" {
			return rotatord.Errorf(rotatord.EINVALID, "body must be a JSON object")
		}
		return rotatord.Errorf(rotatord.EINVALID, "field %q must be %s", typ.Field, jsonKind(typ.Type.Kind().String()))
	default:
		// json reports unknown fields as `json: unknown field "x"`.
		var msg = err.Error()
		const prefix = "json: unknown field "
		if len(msg) > len(prefix) && msg[:len(prefix)] == prefix {
			return rotatord.Errorf(rotatord.EINVALID, "unknown field %s", msg[len(prefix):])
		}
		return rotatord.Errorf(rotatord.EINVALID, "cannot read body: %s", msg)
	}
}

func jsonKind(k string) string {
	switch k {
	case "string":
		return "a string"
	case "slice":
		return "an array"
	case "struct", "map", "ptr":
		return "an object"
	case "bool":
		return "a boolean"
	}
	return fmt.Sprintf("a %s", k)
}
