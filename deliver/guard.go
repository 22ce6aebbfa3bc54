package deliver

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"time"
)

// ErrReplyTooLong is returned (wrapped) when a peer sends more than the
// allowed number of bytes without waiting for our next command, for example
// an endless series of "250-" continuation lines.
var ErrReplyTooLong = errors.New("deliver: reply from peer too long")

// ErrTimeout is wrapped by the errors of a phase that ran out of time.
var ErrTimeout = errors.New("deliver: timeout")

// guardConn wraps the network connection of an SMTP session. go-smtp's
// client sets no deadline while the body is written and reads multi-line
// replies without bound; guardConn ignores the deadlines go-smtp (and
// crypto/tls, which forwards its own) sets and applies its own instead:
//
//   - every Write gets a write deadline of the current phase's timeout
//     (RFC 5321 §4.5.3.2.5: a data block must be accepted within 3 minutes);
//   - the first Read after a Write starts the timer for the whole reply,
//     so a peer trickling one byte a minute still runs out of time;
//   - at most maxReply bytes may be read between two writes.
//
// It sits below TLS, so the byte limit counts encrypted bytes when the
// session is encrypted; that is within a few percent of the plain text.
type guardConn struct {
	net.Conn

	mu       sync.Mutex
	timeout  time.Duration
	phase    string
	maxReply int64
	read     int64     // bytes read since the last write
	replyDL  time.Time // deadline of the reply being read; zero: not started
}

func newGuardConn(c net.Conn, maxReply int64) *guardConn {
	if maxReply <= 0 {
		maxReply = defaultMaxReply
	}
	return &guardConn{Conn: c, maxReply: maxReply, timeout: 5 * time.Minute, phase: "connect"}
}

const defaultMaxReply = 64 << 10

// setPhase sets the timeout for the following writes and replies.
func (g *guardConn) setPhase(phase string, d time.Duration) {
	g.mu.Lock()
	g.phase, g.timeout = phase, d
	g.replyDL = time.Time{}
	g.mu.Unlock()
}

// prefixConn returns prefix from Read before reading from the connection.
// It hands go-smtp's client a session whose greeting (and STARTTLS) this
// package already handled: go-smtp reads a greeting before anything else.
type prefixConn struct {
	net.Conn
	prefix []byte
}

func (p *prefixConn) Read(b []byte) (int, error) {
	if len(p.prefix) > 0 {
		n := copy(b, p.prefix)
		p.prefix = p.prefix[n:]
		return n, nil
	}
	return p.Conn.Read(b)
}

func (g *guardConn) Read(p []byte) (int, error) {
	g.mu.Lock()
	if g.read >= g.maxReply {
		phase := g.phase
		g.mu.Unlock()
		return 0, fmt.Errorf("%w: more than %d bytes during %s", ErrReplyTooLong, g.maxReply, phase)
	}
	if g.replyDL.IsZero() {
		g.replyDL = time.Now().Add(g.timeout)
	}
	dl, phase := g.replyDL, g.phase
	limit := g.maxReply - g.read
	g.mu.Unlock()
	if int64(len(p)) > limit {
		p = p[:limit]
	}
	if err := g.Conn.SetReadDeadline(dl); err != nil {
		return 0, err
	}
	n, err := g.Conn.Read(p)
	g.mu.Lock()
	g.read += int64(n)
	g.mu.Unlock()
	if err != nil {
		err = g.wrapTimeout(err, phase)
	}
	return n, err
}

func (g *guardConn) Write(p []byte) (int, error) {
	g.mu.Lock()
	g.read = 0
	g.replyDL = time.Time{}
	d, phase := g.timeout, g.phase
	g.mu.Unlock()
	if err := g.Conn.SetWriteDeadline(time.Now().Add(d)); err != nil {
		return 0, err
	}
	n, err := g.Conn.Write(p)
	if err != nil {
		err = g.wrapTimeout(err, phase)
	}
	return n, err
}

func (g *guardConn) wrapTimeout(err error, phase string) error {
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		return fmt.Errorf("%w during %s: %w", ErrTimeout, phase, err)
	}
	return err
}

// SetDeadline, SetReadDeadline and SetWriteDeadline are ignored: guardConn
// owns the deadlines. (go-smtp resets them to "none" after each command.)
func (g *guardConn) SetDeadline(time.Time) error      { return nil }
func (g *guardConn) SetReadDeadline(time.Time) error  { return nil }
func (g *guardConn) SetWriteDeadline(time.Time) error { return nil }

// crlfWriter normalises line endings on their way to w: bare CR and bare LF
// become CRLF, so that textproto's DotWriter, which only recognises line
// starts after LF, dot-stuffs every line and no "\r.\r\n" or "\n.\n" can
// end the DATA phase early (the "SMTP smuggling" family of bugs). It
// streams: a CR at the end of one Write is held until the next byte is
// seen. Close flushes a held CR (as CRLF) but does not close w.
type crlfWriter struct {
	w   io.Writer
	cr  bool // the last byte written was a CR whose LF has not been seen
	buf []byte
}

func (c *crlfWriter) Write(p []byte) (int, error) {
	// Fast path: nothing to change in p if every CR is followed by LF and
	// every LF preceded by CR (within p or across the held CR).
	if c.clean(p) {
		if c.cr {
			// p starts with '\n' (clean checked), completing the held CR.
			if _, err := c.w.Write(crOnly); err != nil {
				return 0, err
			}
			c.cr = false
		}
		if len(p) > 0 && p[len(p)-1] == '\r' {
			if _, err := c.w.Write(p[:len(p)-1]); err != nil {
				return 0, err
			}
			c.cr = true
			return len(p), nil
		}
		_, err := c.w.Write(p)
		return len(p), err
	}
	buf := c.buf[:0]
	for _, b := range p {
		switch {
		case b == '\n':
			buf = append(buf, '\r', '\n')
			c.cr = false
		case c.cr:
			buf = append(buf, '\r', '\n')
			c.cr = b == '\r'
			if !c.cr {
				buf = append(buf, b)
			}
		case b == '\r':
			c.cr = true
		default:
			buf = append(buf, b)
		}
	}
	c.buf = buf[:0]
	if _, err := c.w.Write(buf); err != nil {
		return 0, err
	}
	return len(p), nil
}

var (
	crOnly = []byte{'\r'}
	crlf   = []byte{'\r', '\n'}
)

// clean reports whether p needs no change: every LF is preceded by a CR
// and every CR (other than a final one) followed by an LF.
func (c *crlfWriter) clean(p []byte) bool {
	if len(p) == 0 {
		return true
	}
	if c.cr != (p[0] == '\n') {
		return false
	}
	i := 0
	for {
		j := bytes.IndexAny(p[i:], "\r\n")
		if j < 0 {
			return true
		}
		k := i + j
		if p[k] == '\n' {
			if k == 0 { // completes the held CR (checked above)
				i = 1
				continue
			}
			return false
		}
		// CR: must be followed by LF, or be the last byte.
		if k+1 == len(p) {
			return true
		}
		if p[k+1] != '\n' {
			return false
		}
		i = k + 2
	}
}

// Close writes a held CR as CRLF.
func (c *crlfWriter) Close() error {
	if c.cr {
		c.cr = false
		_, err := c.w.Write(crlf)
		return err
	}
	return nil
}
