package resolver

import (
	"context"
	"testing"

	"github.com/mtakit/mta/resolver/dnstest"
)

func BenchmarkLookupMXCached(b *testing.B) {
	srv := dnstest.New(b, zone)
	r := newResolver(b, Config{}, srv)
	ctx := context.Background()
	if _, err := r.LookupMX(ctx, "example.com"); err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	for b.Loop() {
		if _, err := r.LookupMX(ctx, "example.com"); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkLookupMXCachedParallel(b *testing.B) {
	srv := dnstest.New(b, zone)
	r := newResolver(b, Config{}, srv)
	ctx := context.Background()
	if _, err := r.LookupMX(ctx, "example.com"); err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			if _, err := r.LookupMX(ctx, "example.com"); err != nil {
				b.Fatal(err)
			}
		}
	})
}

func BenchmarkLookupNXDomainCached(b *testing.B) {
	srv := dnstest.New(b, zone)
	r := newResolver(b, Config{}, srv)
	ctx := context.Background()
	if _, err := r.LookupMX(ctx, "nowhere.example.com"); !IsNXDomain(err) {
		b.Fatal(err)
	}
	b.ReportAllocs()
	for b.Loop() {
		if _, err := r.LookupMX(ctx, "nowhere.example.com"); !IsNXDomain(err) {
			b.Fatal(err)
		}
	}
}

func BenchmarkLookupMXUncached(b *testing.B) {
	srv := dnstest.New(b, zone)
	r := newResolver(b, Config{CacheSize: -1}, srv)
	ctx := context.Background()
	b.ReportAllocs()
	for b.Loop() {
		if _, err := r.LookupMX(ctx, "example.com"); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkLookupIPUncached(b *testing.B) {
	srv := dnstest.New(b, zone)
	r := newResolver(b, Config{CacheSize: -1}, srv)
	ctx := context.Background()
	b.ReportAllocs()
	for b.Loop() {
		if _, err := r.LookupIP(ctx, "ip", "example.com"); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkLookupIPCached(b *testing.B) {
	srv := dnstest.New(b, zone)
	r := newResolver(b, Config{}, srv)
	ctx := context.Background()
	if _, err := r.LookupIP(ctx, "ip", "example.com"); err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	for b.Loop() {
		if _, err := r.LookupIP(ctx, "ip", "example.com"); err != nil {
			b.Fatal(err)
		}
	}
}
