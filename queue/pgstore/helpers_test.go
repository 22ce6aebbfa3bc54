package pgstore

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"net/url"
	"os"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
)

// testDSN returns MTA_TEST_POSTGRES or skips the test.
func testDSN(t testing.TB) string {
	t.Helper()
	dsn := os.Getenv("MTA_TEST_POSTGRES")
	if dsn == "" {
		t.Skip("MTA_TEST_POSTGRES is not set (e.g. postgres://postgres@127.0.0.1:5432/test?sslmode=disable); skipping the PostgreSQL tests")
	}
	return dsn
}

func randomHex(n int) string {
	b := make([]byte, n)
	rand.Read(b)
	return hex.EncodeToString(b)
}

// withAppName returns dsn with application_name set.
func withAppName(t testing.TB, dsn, app string) string {
	t.Helper()
	u, err := url.Parse(dsn)
	if err != nil || u.Scheme == "" {
		t.Fatalf("MTA_TEST_POSTGRES must be a URL: %q", dsn)
	}
	q := u.Query()
	q.Set("application_name", app)
	u.RawQuery = q.Encode()
	return u.String()
}

// testSchema returns a fresh schema name that is dropped when the test ends.
func testSchema(t testing.TB, dsn string) string {
	t.Helper()
	schema := "pgstore_test_" + randomHex(6)
	t.Cleanup(func() { dropSchema(t, dsn, schema) })
	return schema
}

func dropSchema(t testing.TB, dsn, schema string) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, dsn)
	if err != nil {
		t.Errorf("dropping schema %s: %v", schema, err)
		return
	}
	defer conn.Close(ctx)
	if _, err := conn.Exec(ctx, "DROP SCHEMA IF EXISTS "+pgx.Identifier{schema}.Sanitize()+" CASCADE"); err != nil {
		t.Errorf("dropping schema %s: %v", schema, err)
	}
}

// openTest opens a store on a fresh schema, closed at cleanup.
func openTest(t testing.TB, cfg Config) *Store {
	t.Helper()
	dsn := testDSN(t)
	if cfg.DSN == "" && cfg.Pool == nil {
		cfg.DSN = dsn
	}
	if cfg.Schema == "" {
		cfg.Schema = testSchema(t, dsn)
	}
	s, err := Open(context.Background(), cfg)
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}
