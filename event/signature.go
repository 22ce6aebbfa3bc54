package event

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"
)

// Webhook HTTP header names.
const (
	// SignatureHeader carries "t=<unix seconds>,v1=<hex>" where the hex is
	// HMAC-SHA256 keyed with the endpoint's secret over the decimal
	// timestamp, a full stop, and the exact request body.
	SignatureHeader = "Mta-Signature"
	// BatchIDHeader carries the batch ID: the same for every retry of the
	// same batch.
	BatchIDHeader = "Mta-Event-Batch-Id"
)

// DefaultWindow is the replay window [Verify] uses when given zero.
const DefaultWindow = 5 * time.Minute

// Signature verification errors. Verify wraps them with detail; test with
// errors.Is.
var (
	// ErrSignatureMalformed: the header is not "t=<unix>,v1=<hex>[,...]".
	ErrSignatureMalformed = errors.New("event: malformed signature header")
	// ErrSignatureExpired: the timestamp is outside the replay window.
	ErrSignatureExpired = errors.New("event: signature timestamp outside the replay window")
	// ErrSignatureMismatch: no v1 value matches the body and secret.
	ErrSignatureMismatch = errors.New("event: signature mismatch")
)

// Sign returns the SignatureHeader value for body sent at time t.
func Sign(secret []byte, body []byte, t time.Time) string {
	ts := strconv.FormatInt(t.Unix(), 10)
	return "t=" + ts + ",v1=" + hex.EncodeToString(mac(secret, ts, body))
}

func mac(secret []byte, ts string, body []byte) []byte {
	h := hmac.New(sha256.New, secret)
	h.Write([]byte(ts))
	h.Write([]byte{'.'})
	h.Write(body)
	return h.Sum(nil)
}

// Verify checks a SignatureHeader value against body for a receiver that
// shares secret with the sender. The header is a comma-separated list of
// key=value pairs: exactly one "t" (Unix seconds) and one or more "v1"
// (so a sender can sign with an old and a new secret while rotating);
// unknown keys are ignored for forward compatibility. The timestamp must be
// within window of now, in either direction (zero window means
// [DefaultWindow]); receivers that also remember the batch IDs or event
// IDs seen within the window are safe from replays.
//
// The error wraps ErrSignatureMalformed, ErrSignatureExpired or
// ErrSignatureMismatch. The comparison is constant-time.
func Verify(secret []byte, header string, body []byte, now time.Time, window time.Duration) error {
	if window <= 0 {
		window = DefaultWindow
	}
	var ts string
	var sigs [][]byte
	if len(header) > 4096 {
		return fmt.Errorf("%w: too long", ErrSignatureMalformed)
	}
	for part := range strings.SplitSeq(header, ",") {
		k, v, ok := strings.Cut(strings.TrimSpace(part), "=")
		if !ok {
			return fmt.Errorf("%w: %q is not key=value", ErrSignatureMalformed, part)
		}
		switch k {
		case "t":
			if ts != "" {
				return fmt.Errorf("%w: two timestamps", ErrSignatureMalformed)
			}
			if v == "" {
				return fmt.Errorf("%w: empty timestamp", ErrSignatureMalformed)
			}
			ts = v
		case "v1":
			s, err := hex.DecodeString(v)
			if err != nil || len(s) != sha256.Size {
				return fmt.Errorf("%w: bad v1 value", ErrSignatureMalformed)
			}
			sigs = append(sigs, s)
		}
	}
	if ts == "" || len(sigs) == 0 {
		return fmt.Errorf("%w: need t and v1", ErrSignatureMalformed)
	}
	for _, c := range ts {
		if c < '0' || c > '9' {
			return fmt.Errorf("%w: timestamp %q", ErrSignatureMalformed, ts)
		}
	}
	unix, err := strconv.ParseInt(ts, 10, 64)
	if err != nil {
		return fmt.Errorf("%w: timestamp %q", ErrSignatureMalformed, ts)
	}
	d := now.Unix() - unix
	if d < 0 {
		d = -d
	}
	if d < 0 || time.Duration(d) > window/time.Second {
		return fmt.Errorf("%w: signed at %d, now %d", ErrSignatureExpired, unix, now.Unix())
	}
	want := mac(secret, ts, body)
	for _, s := range sigs {
		if hmac.Equal(s, want) {
			return nil
		}
	}
	return ErrSignatureMismatch
}
