package dkim

import (
	"bytes"
	"context"
	"crypto"
	"io"
	"strings"
	"syscall"
	"testing"
	"time"

	msgdkim "github.com/emersion/go-msgauth/dkim"
)

// benchMessage is a ~10 KB message, the size the relay benchmark uses.
func benchMessage() []byte {
	var b bytes.Buffer
	b.WriteString(strings.ReplaceAll(testMessage[:strings.Index(testMessage, "\r\n\r\n")+4], "Interop test", "Benchmark"))
	line := "The quick brown fox jumps over the lazy dog, again and again and again.\r\n"
	for b.Len() < 10*1024 {
		b.WriteString(line)
	}
	return b.Bytes()
}

func benchKey(b *testing.B, alg Algorithm) crypto.Signer {
	rsaKey, edKey := testKeys(b)
	if alg == RSA {
		return rsaKey
	}
	return edKey
}

// BenchmarkSign compares our Signer with calling go-msgauth directly on
// the same 10 KB message, key and h= list (relaxed/simple, as the relay
// signs). Run: go test -run=^$ -bench=Sign -benchmem ./auth/dkim
func BenchmarkSign(b *testing.B) {
	msg := benchMessage()
	for _, alg := range []Algorithm{RSA, Ed25519} {
		key := benchKey(b, alg)
		cfg := SignerConfig{
			Keys:                   []SignKey{{Domain: "example.test", Selector: "s", Key: key}},
			HeaderCanonicalization: Relaxed, BodyCanonicalization: Simple,
		}
		s, err := NewSigner(cfg)
		if err != nil {
			b.Fatal(err)
		}
		br := bytes.NewReader(msg)
		h, _ := readHeader(br, s.limits, nil)
		keys := s.headerKeys(h)
		b.Run(string(alg)+"/ours", func(b *testing.B) {
			b.SetBytes(int64(len(msg)))
			b.ReportAllocs()
			b.RunParallel(func(pb *testing.PB) {
				ctx := context.Background()
				for pb.Next() {
					if _, err := s.Sign(ctx, bytes.NewReader(msg)); err != nil {
						b.Fatal(err)
					}
				}
			})
		})
		b.Run(string(alg)+"/go-msgauth", func(b *testing.B) {
			b.SetBytes(int64(len(msg)))
			b.ReportAllocs()
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					sg, err := msgdkim.NewSigner(&msgdkim.SignOptions{
						Domain: "example.test", Selector: "s", Signer: key,
						HeaderCanonicalization: msgdkim.CanonicalizationRelaxed,
						BodyCanonicalization:   msgdkim.CanonicalizationSimple,
						HeaderKeys:             keys,
					})
					if err != nil {
						b.Fatal(err)
					}
					if _, err := io.Copy(sg, bytes.NewReader(msg)); err != nil {
						b.Fatal(err)
					}
					if err := sg.Close(); err != nil {
						b.Fatal(err)
					}
					_ = sg.Signature()
				}
			})
		})
	}
}

// BenchmarkVerify measures verification with a warm key cache (keys served
// by dnstest through the real resolver, fetched once).
// Run: go test -run=^$ -bench=Verify -benchmem ./auth/dkim
func BenchmarkVerify(b *testing.B) {
	msg := benchMessage()
	for _, alg := range []Algorithm{RSA, Ed25519} {
		key := benchKey(b, alg)
		line, _ := KeyTXT("s", "example.test", key.Public())
		v, _ := newTestVerifier(b, line, VerifierConfig{})
		s, _ := NewSigner(SignerConfig{Keys: []SignKey{{Domain: "example.test", Selector: "s", Key: key}}})
		sig, err := s.Sign(context.Background(), bytes.NewReader(msg))
		if err != nil {
			b.Fatal(err)
		}
		signed := append([]byte(sig), msg...)
		if res, err := v.Verify(context.Background(), bytes.NewReader(signed)); err != nil || res[0].Status != StatusPass {
			b.Fatalf("warm-up: %v %v", res, err)
		}
		b.Run(string(alg), func(b *testing.B) {
			b.SetBytes(int64(len(signed)))
			b.ReportAllocs()
			b.RunParallel(func(pb *testing.PB) {
				ctx := context.Background()
				for pb.Next() {
					res, err := v.Verify(ctx, bytes.NewReader(signed))
					if err != nil || res[0].Status != StatusPass {
						b.Fatalf("%v %v", res, err)
					}
				}
			})
		})
	}
}

// BenchmarkSignOverhead compares the CPU cost of our Signer with a direct
// go-msgauth call (same 10 KB message, key and h= list, relaxed/simple),
// alternating between the two so load changes on a shared machine hit
// both equally, and reports our overhead in percent. One iteration is 50
// signatures each way.
// Run: go test -run=^$ -bench=SignOverhead -benchtime=40x -count=5 ./auth/dkim
func BenchmarkSignOverhead(b *testing.B) {
	msg := benchMessage()
	for _, alg := range []Algorithm{RSA, Ed25519} {
		key := benchKey(b, alg)
		s, err := NewSigner(SignerConfig{
			Keys:                   []SignKey{{Domain: "example.test", Selector: "s", Key: key}},
			HeaderCanonicalization: Relaxed, BodyCanonicalization: Simple,
		})
		if err != nil {
			b.Fatal(err)
		}
		h, _ := readHeader(bytes.NewReader(msg), s.limits, nil)
		keys := s.headerKeys(h)
		direct := func() {
			sg, err := msgdkim.NewSigner(&msgdkim.SignOptions{
				Domain: "example.test", Selector: "s", Signer: key,
				HeaderCanonicalization: msgdkim.CanonicalizationRelaxed,
				BodyCanonicalization:   msgdkim.CanonicalizationSimple,
				HeaderKeys:             keys,
			})
			if err != nil {
				b.Fatal(err)
			}
			if _, err := io.Copy(sg, bytes.NewReader(msg)); err != nil {
				b.Fatal(err)
			}
			if err := sg.Close(); err != nil {
				b.Fatal(err)
			}
			_ = sg.Signature()
		}
		ours := func() {
			if _, err := s.Sign(context.Background(), bytes.NewReader(msg)); err != nil {
				b.Fatal(err)
			}
		}
		b.Run(string(alg), func(b *testing.B) {
			// Blocks of 50 signatures each way, alternating; time is the
			// process CPU time (user+system, all threads: go-msgauth signs
			// on its own goroutine), which a loaded machine disturbs far
			// less than wall-clock time.
			const block = 50
			var tOurs, tDirect time.Duration
			var n int
			for i := 0; b.Loop(); i++ {
				c0 := cpuTime(b)
				for range block {
					if i%2 == 0 {
						ours()
					} else {
						direct()
					}
				}
				c1 := cpuTime(b)
				for range block {
					if i%2 == 0 {
						direct()
					} else {
						ours()
					}
				}
				c2 := cpuTime(b)
				if i%2 == 0 {
					tOurs += c1 - c0
					tDirect += c2 - c1
				} else {
					tDirect += c1 - c0
					tOurs += c2 - c1
				}
				n += block
			}
			b.ReportMetric(float64(tOurs.Nanoseconds())/float64(n), "ours-cpu-ns/sig")
			b.ReportMetric(float64(tDirect.Nanoseconds())/float64(n), "go-msgauth-cpu-ns/sig")
			b.ReportMetric(100*(float64(tOurs)/float64(tDirect)-1), "overhead-%")
		})
	}
}

// cpuTime returns the CPU time (user+system) the process has used.
func cpuTime(b *testing.B) time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		b.Fatal(err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
