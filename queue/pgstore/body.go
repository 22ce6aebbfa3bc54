package pgstore

import (
	"context"
	"errors"
	"fmt"
	"io"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/mtakit/mta/queue"
)

// bodyWriter reads a body chunk by chunk. It is the pgx.CopyFromSource that
// streams every chunk after the first into the bodies table, so that no more
// than one chunk is in memory at a time.
type bodyWriter struct {
	ctx  context.Context
	r    io.Reader
	id   string
	buf  []byte
	seq  int
	size int64
	eof  bool
	err  error // the reader's (or ctx's) error, wrapped
	cur  []byte
}

// next reads the next chunk; it returns nil at the end of the body.
func (w *bodyWriter) next() ([]byte, error) {
	if w.eof {
		return nil, nil
	}
	if err := w.ctx.Err(); err != nil {
		w.err = err
		return nil, err
	}
	n, err := io.ReadFull(ctxReader{w.ctx, w.r}, w.buf)
	switch {
	case errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF):
		w.eof = true
	case err != nil:
		if w.ctx.Err() != nil {
			w.err = w.ctx.Err()
		} else {
			w.err = fmt.Errorf("pgstore: reading body: %w", err)
		}
		return nil, w.err
	}
	w.size += int64(n)
	if n == 0 {
		return nil, nil
	}
	return w.buf[:n], nil
}

// Next implements pgx.CopyFromSource.
func (w *bodyWriter) Next() bool {
	chunk, err := w.next()
	if err != nil || chunk == nil {
		return false
	}
	w.seq++
	w.cur = chunk
	return true
}

// Values implements pgx.CopyFromSource. pgx encodes the values before it
// calls Next again, so the chunk buffer can be reused.
func (w *bodyWriter) Values() ([]any, error) { return []any{w.id, int32(w.seq), w.cur}, nil }

// Err implements pgx.CopyFromSource.
func (w *bodyWriter) Err() error { return w.err }

// ctxReader stops reading once ctx is done.
type ctxReader struct {
	ctx context.Context
	r   io.Reader
}

func (c ctxReader) Read(p []byte) (int, error) {
	if err := c.ctx.Err(); err != nil {
		return 0, err
	}
	return c.r.Read(p)
}

// bodyFetchTimeout bounds the fetch of one chunk by Body.ReadAt, which has
// no context of its own.
const bodyFetchTimeout = time.Minute

// bodyCacheChunks is how many chunks a Body keeps: enough for a few
// concurrent sequential readers (a transport writing the body while a DSN
// quotes its headers).
const bodyCacheChunks = 4

// OpenBody implements queue.Store. The returned Body fetches the chunks a
// ReadAt needs from the bodies table, keeping the last few in memory; reads
// fail with ErrNotFound once the message is removed. It is safe for
// concurrent use.
func (s *Store) OpenBody(ctx context.Context, id string) (queue.Body, error) {
	if err := s.begin(ctx); err != nil {
		return nil, err
	}
	b := &body{s: s, id: id, ctx: context.WithoutCancel(ctx)}
	err := s.pool.QueryRow(ctx, `SELECT size, chunk_size FROM messages WHERE id = $1`, id).Scan(&b.size, &b.chunk)
	if errors.Is(err, pgx.ErrNoRows) {
		return nil, fmt.Errorf("%w: %s", queue.ErrNotFound, id)
	}
	if err != nil {
		return nil, s.err(ctx, "open body", err)
	}
	return b, nil
}

type body struct {
	s     *Store
	id    string
	ctx   context.Context
	size  int64
	chunk int64

	mu     sync.Mutex
	closed bool
	cache  []cachedChunk // most recently used last
}

type cachedChunk struct {
	seq  int64
	data []byte
}

func (b *body) Size() int64 { return b.size }

func (b *body) Close() error {
	b.mu.Lock()
	b.closed = true
	b.cache = nil
	b.mu.Unlock()
	return nil
}

// get returns chunk seq, from the cache or the database.
func (b *body) get(seq int64) ([]byte, error) {
	b.mu.Lock()
	if b.closed {
		b.mu.Unlock()
		return nil, fmt.Errorf("pgstore: body of %s: %w", b.id, io.ErrClosedPipe)
	}
	for i, c := range b.cache {
		if c.seq == seq {
			b.cache = append(append(b.cache[:i:i], b.cache[i+1:]...), c)
			b.mu.Unlock()
			return c.data, nil
		}
	}
	b.mu.Unlock()
	ctx, cancel := context.WithTimeout(b.ctx, bodyFetchTimeout)
	defer cancel()
	var data []byte
	err := b.s.pool.QueryRow(ctx, `SELECT data FROM bodies WHERE message_id = $1 AND seq = $2`, b.id, int32(seq)).Scan(&data)
	if errors.Is(err, pgx.ErrNoRows) {
		return nil, fmt.Errorf("pgstore: body of %s, chunk %d: %w", b.id, seq, queue.ErrNotFound)
	}
	if err != nil {
		return nil, fmt.Errorf("pgstore: body of %s, chunk %d: %w", b.id, seq, err)
	}
	want := min(b.chunk, b.size-seq*b.chunk)
	if int64(len(data)) != want {
		return nil, fmt.Errorf("pgstore: body of %s, chunk %d: %d bytes, want %d", b.id, seq, len(data), want)
	}
	b.mu.Lock()
	if !b.closed {
		if len(b.cache) >= bodyCacheChunks {
			b.cache = b.cache[1:]
		}
		b.cache = append(b.cache, cachedChunk{seq, data})
	}
	b.mu.Unlock()
	return data, nil
}

// ReadAt implements io.ReaderAt.
func (b *body) ReadAt(p []byte, off int64) (int, error) {
	if off < 0 {
		return 0, fmt.Errorf("pgstore: body of %s: negative offset", b.id)
	}
	n := 0
	for n < len(p) && off < b.size {
		seq := off / b.chunk
		data, err := b.get(seq)
		if err != nil {
			return n, err
		}
		k := copy(p[n:], data[off-seq*b.chunk:])
		n += k
		off += int64(k)
	}
	if n < len(p) {
		return n, io.EOF
	}
	return n, nil
}
