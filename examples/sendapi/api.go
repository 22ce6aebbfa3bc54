package main

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/json"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"log/slog"
	"mime"
	"net"
	"net/http"
	"net/netip"
	"strings"
	"sync"
	"time"

	"github.com/emersion/go-smtp"

	"github.com/mtakit/mta/auth/dkim"
	"github.com/mtakit/mta/event"
	"github.com/mtakit/mta/queue"
)

// maxRequest bounds a request body, and each rendered part of a message.
const maxRequest = 10 << 20

// api serves the HTTP endpoints. Its methods are safe for concurrent use.
type api struct {
	q        *queue.Queue
	status   *statusStore
	ring     *dkim.KeyRing // nil: no signing
	hostname string
	apiKey   string // "": loopback clients only, no key
	now      func() time.Time
	log      *slog.Logger

	// idem serialises requests with the same Idempotency-Key (by hash,
	// in 64 stripes), so that the request whose message the queue stored
	// is the one that records its submission first; see send.
	idem [64]sync.Mutex
}

func (a *api) handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("POST /v1/messages", a.send)
	mux.HandleFunc("GET /v1/messages/{id}", a.get)
	mux.HandleFunc("/v1/messages", methodNotAllowed(http.MethodPost))
	mux.HandleFunc("/v1/messages/{id}", methodNotAllowed(http.MethodGet))
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		writeError(w, &apiError{Status: http.StatusNotFound, Msg: "no such endpoint: " + r.URL.Path})
	})
	return a.authenticate(mux)
}

func methodNotAllowed(allow string) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Allow", allow)
		writeError(w, &apiError{Status: http.StatusMethodNotAllowed, Msg: r.Method + " is not allowed here; use " + allow})
	}
}

// authenticate checks the bearer token or, without an API key, that the
// client is on loopback.
//
// Without a key, loopback alone is not quite enough: a web page in a
// browser on the same machine can reach 127.0.0.1 too. Two checks keep it
// out: send requires Content-Type application/json, which a page cannot
// send cross-origin without a CORS preflight (never granted here), and the
// Host header must be an IP address or localhost, which defeats DNS
// rebinding (a page on a name that its DNS later points at 127.0.0.1).
func (a *api) authenticate(next http.Handler) http.Handler {
	want := sha256.Sum256([]byte(a.apiKey))
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if a.apiKey != "" {
			token, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
			// Comparing hashes keeps the comparison constant-time even
			// for tokens of another length.
			got := sha256.Sum256([]byte(token))
			if !ok || subtle.ConstantTimeCompare(got[:], want[:]) != 1 {
				w.Header().Set("WWW-Authenticate", `Bearer realm="sendapi"`)
				writeError(w, &apiError{Status: http.StatusUnauthorized, Msg: "missing or wrong API key (Authorization: Bearer KEY)"})
				return
			}
			next.ServeHTTP(w, r)
			return
		}
		if !loopbackClient(r.RemoteAddr) {
			writeError(w, &apiError{Status: http.StatusForbidden, Msg: "no API key is configured, so only loopback clients are served"})
			return
		}
		if !localHost(r.Host) {
			writeError(w, &apiError{Status: http.StatusForbidden, Msg: "without an API key the Host header must be an IP address or localhost"})
			return
		}
		next.ServeHTTP(w, r)
	})
}

func loopbackClient(remote string) bool {
	ap, err := netip.ParseAddrPort(remote)
	return err == nil && ap.Addr().Unmap().IsLoopback()
}

func localHost(host string) bool {
	if h, _, err := net.SplitHostPort(host); err == nil {
		host = h
	}
	host = strings.TrimSuffix(strings.TrimPrefix(host, "["), "]")
	if _, err := netip.ParseAddr(host); err == nil {
		return true
	}
	return strings.EqualFold(host, "localhost")
}

// sendReply is the 202 answer to POST /v1/messages.
type sendReply struct {
	ID         string `json:"id"`
	MessageID  string `json:"message_id"`
	Recipients int    `json:"recipients"`
}

// send handles POST /v1/messages: decode, validate and build the message,
// sign it, enqueue it and answer 202 once the queue has it on disk.
func (a *api) send(w http.ResponseWriter, r *http.Request) {
	if mt, _, err := mime.ParseMediaType(r.Header.Get("Content-Type")); err != nil || mt != "application/json" {
		writeError(w, &apiError{Status: http.StatusUnsupportedMediaType, Msg: "Content-Type must be application/json"})
		return
	}
	idemKey := r.Header.Get("Idempotency-Key")
	if len(idemKey) > maxIdemKeyLen || strings.ContainsFunc(idemKey, func(r rune) bool { return r < '!' || r > '~' }) {
		writeError(w, invalid("Idempotency-Key", "at most %d printable ASCII characters without spaces", maxIdemKeyLen))
		return
	}
	var req request
	if err := decodeRequest(http.MaxBytesReader(w, r.Body, maxRequest), &req); err != nil {
		writeError(w, err)
		return
	}
	msg, err := build(&req, buildConfig{Hostname: a.hostname, Now: a.now(), Rand: rand.Reader, MaxOutput: maxRequest})
	if err != nil {
		writeError(w, err)
		return
	}
	ctx := r.Context()
	data := msg.Data
	if a.ring != nil && a.ring.SignerFor(msg.FromDomain) != nil {
		sig, err := a.ring.Sign(ctx, msg.FromDomain, bytes.NewReader(data))
		if err != nil {
			a.log.Error("dkim signing failed", "domain", msg.FromDomain, "err", err)
			writeError(w, &apiError{Status: http.StatusInternalServerError, Msg: "DKIM signing failed: " + err.Error()})
			return
		}
		data = append([]byte(sig), data...)
	}
	if idemKey != "" {
		mu := &a.idem[crc32.ChecksumIEEE([]byte(idemKey))%uint32(len(a.idem))]
		mu.Lock()
		defer mu.Unlock()
	}
	id, err := a.q.Enqueue(ctx, &queue.NewMessage{
		From:           msg.From,
		Recipients:     msg.Recipients,
		Tags:           req.Tags,
		Metadata:       req.Metadata,
		Priority:       msg.Priority,
		NotBefore:      msg.NotBefore,
		IdempotencyKey: idemKey,
	}, bytes.NewReader(data))
	if err != nil {
		ae := enqueueError(err)
		if ae.Status >= 500 {
			a.log.Error("enqueue failed", "err", err)
		}
		writeError(w, ae)
		return
	}
	sub := &submission{ID: id, MessageID: msg.MessageID, Time: a.now()}
	for _, r := range msg.Recipients {
		sub.Recipients = append(sub.Recipients, r.Address)
	}
	// With an idempotency key the queue may have returned the ID of an
	// earlier message: then the earlier submission is the one to report.
	if prev := a.status.submit(sub); prev != nil {
		sub = prev
	} else {
		a.log.Info("accepted", "id", id, "message_id", msg.MessageID, "from", msg.From, "recipients", len(sub.Recipients), "size", len(data))
	}
	w.Header().Set("Location", "/v1/messages/"+sub.ID)
	writeJSON(w, http.StatusAccepted, sendReply{ID: sub.ID, MessageID: sub.MessageID, Recipients: len(sub.Recipients)})
}

// decodeRequest reads exactly one JSON object with known fields only.
func decodeRequest(body io.Reader, req *request) error {
	dec := json.NewDecoder(body)
	dec.DisallowUnknownFields()
	// Numbers in variables stay as written: as float64, an order number
	// such as 12345678901 would print as 1.2345678901e+10.
	dec.UseNumber()
	err := dec.Decode(req)
	if err == nil {
		// Anything after the object but white space is an error too.
		_, err = dec.Token()
		if err == io.EOF {
			return nil
		}
		if err == nil || errors.As(err, new(*json.SyntaxError)) {
			return &apiError{Status: http.StatusBadRequest, Msg: "trailing data after the JSON object"}
		}
	}
	var (
		tooBig  *http.MaxBytesError
		typeErr *json.UnmarshalTypeError
		synErr  *json.SyntaxError
	)
	switch {
	case errors.As(err, &tooBig):
		return &apiError{Status: http.StatusRequestEntityTooLarge, Msg: fmt.Sprintf("request body larger than %d bytes", tooBig.Limit)}
	case errors.As(err, &typeErr) && typeErr.Field == "":
		return &apiError{Status: http.StatusBadRequest, Msg: "the request body must be a JSON object"}
	case errors.As(err, &typeErr):
		return &apiError{Status: http.StatusBadRequest, Field: typeErr.Field, Msg: fmt.Sprintf("wrong type: %s where %s was expected", typeErr.Value, typeErr.Type)}
	case errors.As(err, &synErr):
		return &apiError{Status: http.StatusBadRequest, Msg: fmt.Sprintf("invalid JSON at byte %d: %v", synErr.Offset, synErr)}
	case err == io.EOF:
		return &apiError{Status: http.StatusBadRequest, Msg: "empty request body"}
	case errors.Is(err, io.ErrUnexpectedEOF):
		return &apiError{Status: http.StatusBadRequest, Msg: "truncated JSON"}
	}
	// encoding/json has no error type for unknown fields; its message is
	// `json: unknown field "name"`.
	if name, ok := strings.CutPrefix(err.Error(), "json: unknown field "); ok {
		return &apiError{Status: http.StatusBadRequest, Field: strings.Trim(name, `"`), Msg: "unknown field"}
	}
	return &apiError{Status: http.StatusBadRequest, Msg: "invalid request: " + err.Error()}
}

// enqueueError maps an Enqueue error to an API error. The request was
// checked before, so a refusal here is rare; anything but a validation
// error means the queue could not store the message.
func enqueueError(err error) *apiError {
	var sup *queue.SuppressedError
	switch {
	case errors.As(err, &sup):
		return invalid("to", "every recipient is on the suppression list: %s", strings.Join(sup.Recipients, ", "))
	case errors.Is(err, queue.ErrInvalidSender):
		return invalid("from", "%v", err)
	case errors.Is(err, queue.ErrInvalidRecipient), errors.Is(err, queue.ErrNoRecipients):
		return invalid("to", "%v", err)
	case errors.Is(err, queue.ErrTooBig):
		return &apiError{Status: http.StatusRequestEntityTooLarge, Msg: err.Error()}
	case errors.Is(err, context.Canceled), errors.Is(err, context.DeadlineExceeded):
		return &apiError{Status: http.StatusServiceUnavailable, Msg: "request cancelled; the message was not queued"}
	}
	return &apiError{Status: http.StatusServiceUnavailable, Msg: "the queue cannot take the message now; nothing was queued, try again: " + err.Error()}
}

// statusReply is the answer to GET /v1/messages/{id}.
type statusReply struct {
	ID         string            `json:"id"`
	MessageID  string            `json:"message_id,omitempty"`
	State      string            `json:"state"`
	Created    string            `json:"created,omitempty"`
	Tags       []string          `json:"tags,omitempty"`
	Metadata   map[string]string `json:"metadata,omitempty"`
	Recipients []rcptReply       `json:"recipients"`
	Events     []event.Event     `json:"events"`
}

type rcptReply struct {
	Address     string     `json:"address"`
	State       string     `json:"state"`
	Reply       *replyJSON `json:"reply,omitempty"`
	Attempts    int        `json:"attempts"`
	Updated     string     `json:"updated,omitempty"`
	NextAttempt string     `json:"next_attempt,omitempty"`
}

type replyJSON struct {
	Code     int    `json:"code"`
	Enhanced string `json:"enhanced,omitempty"`
	Text     string `json:"text"`
}

func toReplyJSON(r *smtp.SMTPError) *replyJSON {
	if r == nil {
		return nil
	}
	j := &replyJSON{Code: r.Code, Text: r.Message}
	if c := r.EnhancedCode; c[0] > 0 {
		j.Enhanced = fmt.Sprintf("%d.%d.%d", c[0], c[1], c[2])
	}
	return j
}

func wireTime(t time.Time) string {
	if t.IsZero() {
		return ""
	}
	return t.UTC().Format(event.TimeFormat)
}

// get handles GET /v1/messages/{id}.
func (a *api) get(w http.ResponseWriter, r *http.Request) {
	id := r.PathValue("id")
	notFound := &apiError{Status: http.StatusNotFound, Field: "id", Msg: "no message with this ID (never accepted, or forgotten after the status retention)"}
	if len(id) > 64 {
		writeError(w, notFound)
		return
	}
	qm, err := a.q.Get(r.Context(), id)
	if err != nil && !errors.Is(err, queue.ErrNotFound) {
		writeError(w, &apiError{Status: http.StatusServiceUnavailable, Msg: "cannot read the queue: " + err.Error()})
		return
	}
	v, known := a.status.view(id)
	if qm == nil && !known {
		writeError(w, notFound)
		return
	}
	writeJSON(w, http.StatusOK, describe(id, qm, v, a.now()))
}

// describe merges the queue's view of a message (qm, nil once the message
// is finished and removed) with the events recorded about it (v).
//
// Recipient states: scheduled (send_at not reached), queued, sending
// (an attempt is running), deferred (a transient failure, to be retried),
// held, delivered, bounced (permanent failure), expired (still failing at
// the end of the lifetime), suppressed, and deleted (an operator deleted
// the message). The message's state is delivered, bounced or
// partially_delivered once every recipient is final; before that, the
// first of deleted, held, sending, deferred, queued and scheduled that a
// recipient is in. It is "unknown" when no recipient is known (the status
// file lost them).
func describe(id string, qm *queue.Message, v msgView, now time.Time) statusReply {
	rep := statusReply{
		ID: id, MessageID: v.MessageID, Created: wireTime(v.Created),
		Tags: v.Tags, Metadata: v.Metadata, Events: v.Events,
	}
	if rep.Events == nil {
		rep.Events = []event.Event{}
	}
	fromEvents := map[string]rcptStatus{}
	for _, r := range v.Rcpts {
		fromEvents[r.Address] = r
	}
	var rcpts []rcptReply
	if qm != nil {
		rep.Created = wireTime(qm.Created)
		rep.Tags, rep.Metadata = qm.Tags, qm.Metadata
		for i := range qm.Deliveries {
			d := &qm.Deliveries[i]
			for _, r := range d.Recipients {
				rr := rcptReply{Address: r.Address, Reply: toReplyJSON(r.LastReply), Attempts: r.Attempts, Updated: wireTime(r.LastAttempt)}
				ev, seen := fromEvents[r.Address]
				switch r.State {
				case queue.RecipientPending:
					rr.State = pendingState(qm, d, now)
					if rr.State == "deferred" {
						rr.NextAttempt = wireTime(d.NextAttempt)
					}
				case queue.RecipientDelivered:
					rr.State = "delivered"
				case queue.RecipientSuppressed:
					rr.State = "suppressed"
				default:
					// The store says failed; the events tell a bounce
					// from an expiry.
					rr.State = "bounced"
					if seen && ev.Final {
						rr.State = ev.State
					}
				}
				if rr.Updated == "" {
					rr.Updated = wireTime(qm.Created)
				}
				rcpts = append(rcpts, rr)
			}
		}
	} else {
		for _, r := range v.Rcpts {
			rr := rcptReply{Address: r.Address, State: r.State, Reply: toReplyJSON(r.Reply), Attempts: r.Attempts, Updated: wireTime(r.Updated)}
			switch {
			case !r.Final && v.Deleted:
				rr.State = "deleted"
			case r.State == "deferred":
				rr.NextAttempt = wireTime(r.Next)
			}
			if rr.Updated == "" {
				rr.Updated = rep.Created
			}
			rcpts = append(rcpts, rr)
		}
	}
	if rcpts == nil {
		rcpts = []rcptReply{}
	}
	rep.Recipients = rcpts
	rep.State = messageState(rcpts)
	return rep
}

// pendingState names where a pending recipient of delivery d stands.
func pendingState(m *queue.Message, d *queue.Delivery, now time.Time) string {
	switch d.State(now) {
	case queue.StateHeld:
		return "held"
	case queue.StateActive:
		return "sending"
	case queue.StateDeferred:
		return "deferred"
	}
	if m.NotBefore.After(now) {
		return "scheduled"
	}
	return "queued"
}

var finalStates = map[string]bool{"delivered": true, "bounced": true, "expired": true, "suppressed": true}

// messageState sums up the recipients' states; see describe.
func messageState(rcpts []rcptReply) string {
	if len(rcpts) == 0 {
		return "unknown"
	}
	delivered := 0
	present := map[string]bool{}
	for _, r := range rcpts {
		present[r.State] = true
		if r.State == "delivered" {
			delivered++
		}
	}
	for _, s := range []string{"deleted", "held", "sending", "deferred", "queued", "scheduled"} {
		if present[s] {
			return s
		}
	}
	for s := range present {
		if !finalStates[s] {
			return s
		}
	}
	switch delivered {
	case len(rcpts):
		return "delivered"
	case 0:
		return "bounced"
	}
	return "partially_delivered"
}

// errorReply is the body of every error answer.
type errorReply struct {
	Error string `json:"error"`
	Field string `json:"field,omitempty"`
}

func writeError(w http.ResponseWriter, err error) {
	var ae *apiError
	if !errors.As(err, &ae) {
		ae = &apiError{Status: http.StatusInternalServerError, Msg: err.Error()}
	}
	writeJSON(w, ae.Status, errorReply{Error: ae.Msg, Field: ae.Field})
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	var b bytes.Buffer
	enc := json.NewEncoder(&b)
	enc.SetEscapeHTML(false) // Message-IDs have angle brackets
	enc.SetIndent("", "  ")
	if err := enc.Encode(v); err != nil {
		status = http.StatusInternalServerError
		b.Reset()
		enc.Encode(errorReply{Error: "encoding the answer: " + err.Error()})
	}
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(status)
	w.Write(b.Bytes())
}
