package dkim

import (
	"context"
	"io"
	"strings"
)

// Header is a message's header section, read by [ReadHeader] with size and
// field-count caps. It lets a caller (the auth package) read the header
// once, look at its fields and then verify DKIM without reading it again.
type Header struct{ h *header }

// Field is one header field as written in the message.
type Field struct {
	// Name is the text before the colon, unchanged (so "From " with a
	// space before the colon stays visible).
	Name string
	// Value is the text after the colon, folding and line endings kept.
	Value string
}

// ReadHeader reads the header section from r, up to and including the
// blank line. It may read some body octets too; they are kept in the
// Header, so pass the same r, unread otherwise, to VerifyHeader. maxBytes
// and maxFields cap the header (zero: DefaultMaxHeaderBytes,
// DefaultMaxHeaderFields). Errors: ErrHeaderTooLarge, ErrTooManyFields,
// ErrHeaderSyntax or the reader's error.
func ReadHeader(r io.Reader, maxBytes, maxFields int) (*Header, error) {
	h, err := readHeader(r, limits{maxBytes, maxFields}.orDefault(), nil)
	if err != nil {
		return nil, err
	}
	return &Header{h: h}, nil
}

// Fields returns the fields in order.
func (h *Header) Fields() []Field {
	out := make([]Field, h.h.len())
	for i := range out {
		name, value, _ := strings.Cut(h.h.field(i), ":")
		out[i] = Field{Name: name, Value: strings.TrimRight(value, "\r\n")}
	}
	return out
}

// Bytes returns the header section as read (do not modify it).
func (h *Header) Bytes() []byte { return h.h.raw }

// VerifyHeader is Verify for a message whose header was already read with
// ReadHeader; body is the reader ReadHeader read from (the body octets it
// read ahead are taken from h first).
func (v *Verifier) VerifyHeader(ctx context.Context, h *Header, body io.Reader) ([]Result, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	return v.verify(ctx, h.h, body)
}
