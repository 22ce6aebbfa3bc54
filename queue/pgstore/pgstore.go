package pgstore

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"embed"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/mtakit/mta/queue"
)

// Errors returned by Open and by a closed Store.
var (
	// ErrConfig: Open was given an unusable Config.
	ErrConfig = errors.New("pgstore: invalid config")
	// ErrSchemaVersion: the database schema is newer than this binary
	// knows (a newer version of the package migrated it).
	ErrSchemaVersion = errors.New("pgstore: schema version is newer than this binary")
	// ErrClosed: the Store was closed.
	ErrClosed = errors.New("pgstore: store is closed")
)

// Defaults of Config's zero values.
const (
	// DefaultSchema is the schema used when Config.Schema is empty.
	DefaultSchema = "mta_queue"
	// DefaultChunkSize is the body chunk size used when Config.ChunkSize
	// is zero.
	DefaultChunkSize = 256 << 10
	// DefaultApplicationName is the application_name of the store's
	// connections when neither the DSN nor the pool config sets one.
	DefaultApplicationName = "mta-pgstore"
)

// Config configures Open. The zero value is not usable: DSN or Pool is
// required.
type Config struct {
	// DSN is a PostgreSQL connection string (URL or key=value), as
	// pgxpool.ParseConfig accepts it, pool settings (pool_max_conns, ...)
	// included. Ignored when Pool is set.
	DSN string

	// Pool, if set, is the pool configuration to use (copied; Open does
	// not modify it). Its ConnConfig's search_path is replaced by Schema.
	Pool *pgxpool.Config

	// Schema is the PostgreSQL schema holding the store's tables; Open
	// creates it and migrates it. Several stores (tests, tenants) can
	// share a database with different schemas. Zero: DefaultSchema. At
	// most 63 bytes.
	Schema string

	// ChunkSize is the size of the body chunks stored for new messages.
	// Zero: DefaultChunkSize (256 KiB). Bodies are streamed chunk by chunk
	// in both directions, so memory use per enqueue or read is a few
	// chunks whatever the message size.
	ChunkSize int

	// ReconnectDelay is the wait between attempts to re-establish the
	// LISTEN connection used by Ready. Zero: 1s.
	ReconnectDelay time.Duration

	// Logger receives operational logs (listener reconnects). Nil: discard.
	Logger *slog.Logger
}

//go:embed migrations/*.sql
var migrationFiles embed.FS

// Store is a queue.Store on PostgreSQL, shared by any number of processes.
// It also implements queue.IdempotentStore, queue.Notifier and Renew. It is
// safe for concurrent use. Create it with Open; Close it when done.
type Store struct {
	pool      *pgxpool.Pool
	schema    string
	chunkSize int
	channel   string
	log       *slog.Logger
	ready     chan struct{}
	idemCount atomic.Uint64

	closeOnce sync.Once
	closed    atomic.Bool
	stop      context.CancelFunc
	listener  sync.WaitGroup
}

var (
	_ queue.Store           = (*Store)(nil)
	_ queue.IdempotentStore = (*Store)(nil)
	_ queue.Notifier        = (*Store)(nil)
)

// Open connects to PostgreSQL, creates or migrates the schema (holding an
// advisory lock, so nodes starting together migrate once) and starts the
// LISTEN connection behind Ready. It fails with a wrapped error when the
// database is unreachable (the connection is checked), when cfg is invalid
// (ErrConfig) or when the schema is newer than this package
// (ErrSchemaVersion). ctx bounds only the opening.
func Open(ctx context.Context, cfg Config) (*Store, error) {
	var pcfg *pgxpool.Config
	switch {
	case cfg.Pool != nil:
		pcfg = cfg.Pool.Copy()
	case cfg.DSN != "":
		var err error
		if pcfg, err = pgxpool.ParseConfig(cfg.DSN); err != nil {
			return nil, fmt.Errorf("%w: DSN: %v", ErrConfig, err)
		}
	default:
		return nil, fmt.Errorf("%w: DSN or Pool is required", ErrConfig)
	}
	schema := cfg.Schema
	if schema == "" {
		schema = DefaultSchema
	}
	if len(schema) > 63 || strings.ContainsRune(schema, 0) {
		return nil, fmt.Errorf("%w: schema name %q", ErrConfig, schema)
	}
	chunk := cfg.ChunkSize
	if chunk == 0 {
		chunk = DefaultChunkSize
	}
	if chunk < 0 || chunk > 64<<20 {
		return nil, fmt.Errorf("%w: ChunkSize %d", ErrConfig, chunk)
	}
	if cfg.ReconnectDelay <= 0 {
		cfg.ReconnectDelay = time.Second
	}
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	rp := pcfg.ConnConfig.RuntimeParams
	rp["search_path"] = pgx.Identifier{schema}.Sanitize()
	if rp["application_name"] == "" {
		rp["application_name"] = DefaultApplicationName
	}
	pool, err := pgxpool.NewWithConfig(ctx, pcfg)
	if err != nil {
		return nil, fmt.Errorf("pgstore: connecting: %w", err)
	}
	if err := pool.Ping(ctx); err != nil {
		pool.Close()
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		return nil, fmt.Errorf("pgstore: connecting to %s:%d: %w", pcfg.ConnConfig.Host, pcfg.ConnConfig.Port, err)
	}
	if err := migrate(ctx, pool, schema); err != nil {
		pool.Close()
		return nil, err
	}
	sum := sha256.Sum256([]byte(schema))
	s := &Store{
		pool:      pool,
		schema:    schema,
		chunkSize: chunk,
		channel:   "mta_pgstore_" + hex.EncodeToString(sum[:8]),
		log:       log,
		ready:     make(chan struct{}, 1),
	}
	lctx, stop := context.WithCancel(context.Background())
	s.stop = stop
	s.listener.Add(1)
	go s.listen(lctx, pcfg.ConnConfig.Copy(), cfg.ReconnectDelay)
	return s, nil
}

// Close stops the listener and closes the pool. Leases are not released
// (they expire). Later calls fail with ErrClosed or a pool error. Close is
// idempotent.
func (s *Store) Close() error {
	s.closeOnce.Do(func() {
		s.closed.Store(true)
		s.stop()
		s.listener.Wait()
		s.pool.Close()
	})
	return nil
}

// Schema returns the schema name the store uses.
func (s *Store) Schema() string { return s.schema }

// Pool returns the store's connection pool, for inspection queries and
// monitoring. Do not close it; Close the Store.
func (s *Store) Pool() *pgxpool.Pool { return s.pool }

// Ready implements queue.Notifier: the channel receives after an Enqueue,
// Release, Reschedule or SetHeld(false) by any process on the same database
// and schema (PostgreSQL NOTIFY), and whenever the LISTEN connection is
// re-established (notifications may have been missed meanwhile).
func (s *Store) Ready() <-chan struct{} { return s.ready }

func (s *Store) signal() {
	select {
	case s.ready <- struct{}{}:
	default:
	}
}

// migration is one embedded .sql file.
type migration struct {
	version int
	name    string
	sql     string
}

var migrationName = regexp.MustCompile(`^([0-9]+)_[a-z0-9_]+\.sql$`)

func migrations() ([]migration, error) {
	ents, err := fs.ReadDir(migrationFiles, "migrations")
	if err != nil {
		return nil, err
	}
	var out []migration
	for _, e := range ents {
		m := migrationName.FindStringSubmatch(e.Name())
		if m == nil {
			return nil, fmt.Errorf("pgstore: bad migration file name %q", e.Name())
		}
		v, _ := strconv.Atoi(m[1])
		b, err := migrationFiles.ReadFile("migrations/" + e.Name())
		if err != nil {
			return nil, err
		}
		out = append(out, migration{version: v, name: e.Name(), sql: string(b)})
	}
	slices.SortFunc(out, func(a, b migration) int { return a.version - b.version })
	return out, nil
}

// migrate creates the schema and applies the migrations it lacks, in one
// transaction holding an advisory lock keyed by the schema name, so that
// nodes starting at once wait for each other instead of racing.
func migrate(ctx context.Context, pool *pgxpool.Pool, schema string) error {
	ms, err := migrations()
	if err != nil {
		return err
	}
	err = pgx.BeginFunc(ctx, pool, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, `SELECT pg_advisory_xact_lock(hashtextextended($1, 0))`, "mta/pgstore/"+schema); err != nil {
			return err
		}
		qs := pgx.Identifier{schema}.Sanitize()
		if _, err := tx.Exec(ctx, `CREATE SCHEMA IF NOT EXISTS `+qs); err != nil {
			return err
		}
		if _, err := tx.Exec(ctx, `SET LOCAL search_path TO `+qs); err != nil {
			return err
		}
		if _, err := tx.Exec(ctx, `CREATE TABLE IF NOT EXISTS schema_migrations (
			version integer PRIMARY KEY,
			name text NOT NULL,
			applied timestamptz NOT NULL DEFAULT now())`); err != nil {
			return err
		}
		var cur int
		if err := tx.QueryRow(ctx, `SELECT coalesce(max(version), 0) FROM schema_migrations`).Scan(&cur); err != nil {
			return err
		}
		if last := ms[len(ms)-1].version; cur > last {
			return fmt.Errorf("%w: schema %s is at version %d, this binary knows %d", ErrSchemaVersion, schema, cur, last)
		}
		for _, m := range ms {
			if m.version <= cur {
				continue
			}
			if _, err := tx.Exec(ctx, m.sql); err != nil {
				return fmt.Errorf("pgstore: migration %s: %w", m.name, err)
			}
			if _, err := tx.Exec(ctx, `INSERT INTO schema_migrations (version, name) VALUES ($1, $2)`, m.version, m.name); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		if errors.Is(err, ErrSchemaVersion) {
			return err
		}
		return fmt.Errorf("pgstore: migrating schema %s: %w", schema, err)
	}
	return nil
}

// listen keeps a dedicated connection LISTENing on the store's channel and
// turns notifications into signals on s.ready, reconnecting after errors
// until ctx ends.
func (s *Store) listen(ctx context.Context, cc *pgx.ConnConfig, delay time.Duration) {
	defer s.listener.Done()
	for ctx.Err() == nil {
		err := s.listenOnce(ctx, cc)
		if ctx.Err() != nil {
			return
		}
		s.log.Warn("pgstore: LISTEN connection lost; reconnecting", "err", err, "delay", delay)
		t := time.NewTimer(delay)
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-t.C:
		}
	}
}

func (s *Store) listenOnce(ctx context.Context, cc *pgx.ConnConfig) error {
	conn, err := pgx.ConnectConfig(ctx, cc)
	if err != nil {
		return err
	}
	defer conn.Close(context.WithoutCancel(ctx))
	if _, err := conn.Exec(ctx, "LISTEN "+pgx.Identifier{s.channel}.Sanitize()); err != nil {
		return err
	}
	// Anything may have happened while we were not listening.
	s.signal()
	for {
		if _, err := conn.WaitForNotification(ctx); err != nil {
			return err
		}
		s.signal()
	}
}

// newToken returns a random lease token.
func newToken() (string, error) {
	var b [16]byte
	if _, err := rand.Read(b[:]); err != nil {
		return "", fmt.Errorf("pgstore: lease token: %w", err)
	}
	return hex.EncodeToString(b[:]), nil
}
