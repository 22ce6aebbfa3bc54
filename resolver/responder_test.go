package resolver

import (
	"context"
	"encoding/binary"
	"io"
	"net"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/miekg/dns"
)

// responder is a tiny DNS peer on loopback that answers every query with
// whatever reply returns, as raw bytes (nil: no answer). Unlike dnstest it
// can misbehave in ways a real server would not, to test response checks.
type responder struct {
	Addr    string
	udpHits atomic.Int32
	tcpHits atomic.Int32
	wg      sync.WaitGroup
}

func newResponder(t testing.TB, udpReply, tcpReply func(q *dns.Msg) []byte) *responder {
	t.Helper()
	var (
		pc  net.PacketConn
		l   net.Listener
		err error
	)
	for range 20 {
		pc, err = net.ListenPacket("udp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		if tcpReply == nil {
			break
		}
		l, err = net.Listen("tcp", pc.LocalAddr().String())
		if err == nil {
			break
		}
		pc.Close()
	}
	if err != nil {
		t.Fatal(err)
	}
	rs := &responder{Addr: pc.LocalAddr().String()}
	rs.wg.Go(func() {
		buf := make([]byte, 65535)
		for {
			n, from, err := pc.ReadFrom(buf)
			if err != nil {
				return
			}
			rs.udpHits.Add(1)
			q := new(dns.Msg)
			if q.Unpack(buf[:n]) != nil {
				continue
			}
			if b := udpReply(q); b != nil {
				pc.WriteTo(b, from)
			}
		}
	})
	if l != nil {
		rs.wg.Go(func() {
			for {
				c, err := l.Accept()
				if err != nil {
					return
				}
				rs.tcpHits.Add(1)
				rs.wg.Go(func() {
					defer c.Close()
					c.SetDeadline(time.Now().Add(10 * time.Second))
					var n uint16
					if binary.Read(c, binary.BigEndian, &n) != nil {
						return
					}
					buf := make([]byte, n)
					if _, err := io.ReadFull(c, buf); err != nil {
						return
					}
					q := new(dns.Msg)
					if q.Unpack(buf) != nil {
						return
					}
					if b := tcpReply(q); b != nil {
						c.Write(binary.BigEndian.AppendUint16(nil, uint16(len(b))))
						c.Write(b)
					}
				})
			}
		})
	}
	t.Cleanup(func() {
		pc.Close()
		if l != nil {
			l.Close()
		}
		rs.wg.Wait()
	})
	return rs
}

// reply builds a response to q with edit applied, packed.
func reply(q *dns.Msg, edit func(m *dns.Msg)) []byte {
	m := new(dns.Msg)
	m.SetReply(q)
	if edit != nil {
		edit(m)
	}
	b, err := m.Pack()
	if err != nil {
		panic(err)
	}
	return b
}

func mustRR(s string) dns.RR {
	rr, err := dns.NewRR(s)
	if err != nil {
		panic(err)
	}
	return rr
}

func TestBadResponses(t *testing.T) {
	tests := []struct {
		name string
		udp  func(q *dns.Msg) []byte
		tcp  func(q *dns.Msg) []byte
		want error
	}{
		{"wrong question name", func(q *dns.Msg) []byte {
			return reply(q, func(m *dns.Msg) {
				m.Question[0].Name = "other.test."
				m.Answer = []dns.RR{mustRR("other.test. 300 IN MX 10 mx.other.test.")}
			})
		}, nil, ErrTemporary},
		{"wrong question type", func(q *dns.Msg) []byte {
			return reply(q, func(m *dns.Msg) { m.Question[0].Qtype = dns.TypeA })
		}, nil, ErrTemporary},
		{"no question", func(q *dns.Msg) []byte {
			return reply(q, func(m *dns.Msg) { m.Question = nil })
		}, nil, ErrTemporary},
		{"not a response", func(q *dns.Msg) []byte {
			return reply(q, func(m *dns.Msg) { m.Response = false })
		}, nil, ErrTemporary},
		{"garbage", func(q *dns.Msg) []byte {
			b := reply(q, nil)
			return append(b[:2:2], 0x81, 0x80, 0xff, 0xff, 0xff)
		}, nil, ErrTemporary},
		{"wrong id only", func(q *dns.Msg) []byte {
			return reply(q, func(m *dns.Msg) { m.Id++ })
		}, nil, ErrTemporary},
		{"servfail without question", func(q *dns.Msg) []byte {
			return reply(q, func(m *dns.Msg) { m.Question = nil; m.Rcode = dns.RcodeServerFailure })
		}, nil, ErrTemporary},
		{"truncated over TCP too", func(q *dns.Msg) []byte {
			return reply(q, func(m *dns.Msg) { m.Truncated = true })
		}, func(q *dns.Msg) []byte {
			return reply(q, func(m *dns.Msg) { m.Truncated = true })
		}, ErrTemporary},
		{"truncated, no TCP", func(q *dns.Msg) []byte {
			return reply(q, func(m *dns.Msg) { m.Truncated = true })
		}, nil, ErrTemporary},
		{"injected records ignored", func(q *dns.Msg) []byte {
			return reply(q, func(m *dns.Msg) {
				m.Answer = []dns.RR{mustRR("victim.test. 300 IN MX 10 evil.test.")}
				m.Ns = []dns.RR{mustRR("test. 300 IN SOA ns.test. h.test. 1 2 3 4 5")}
			})
		}, nil, ErrNoData},
		{"CNAME to the root", func(q *dns.Msg) []byte {
			return reply(q, func(m *dns.Msg) {
				m.Answer = []dns.RR{&dns.CNAME{Hdr: dns.RR_Header{Name: q.Question[0].Name, Rrtype: dns.TypeCNAME, Class: dns.ClassINET, Ttl: 5}, Target: "."}}
			})
		}, nil, ErrCNAMEChain},
		{"nxdomain without SOA", func(q *dns.Msg) []byte {
			return reply(q, func(m *dns.Msg) { m.Rcode = dns.RcodeNameError })
		}, nil, ErrNotFound},
		{"record of another class ignored", func(q *dns.Msg) []byte {
			return reply(q, func(m *dns.Msg) {
				m.Answer = []dns.RR{&dns.MX{Hdr: dns.RR_Header{Name: q.Question[0].Name, Rrtype: dns.TypeMX, Class: dns.ClassCHAOS, Ttl: 5}, Mx: "x."}}
			})
		}, nil, ErrNoData},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rs := newResponder(t, tt.udp, tt.tcp)
			timeout := 10 * time.Second // no answer in time would be a bug of the test
			if tt.name == "wrong id only" {
				timeout = 300 * time.Millisecond // the only case that waits for the timeout
			}
			r, err := New(Config{Servers: []string{rs.Addr}, Timeout: timeout, Attempts: 1})
			if err != nil {
				t.Fatal(err)
			}
			for range 2 {
				_, err = r.LookupMX(context.Background(), "example.test")
				checkClass(t, err, tt.want)
			}
			// Nothing here has a SOA with a usable TTL: nothing is cached.
			if tt.want != ErrNoData && rs.udpHits.Load() != 2 {
				t.Errorf("%d UDP queries, want 2 (not cached)", rs.udpHits.Load())
			}
		})
	}
}

func TestUDPResponseFine(t *testing.T) {
	// 0x20-style case changes in the echoed question are accepted.
	rs := newResponder(t, func(q *dns.Msg) []byte {
		return reply(q, func(m *dns.Msg) {
			m.Question[0].Name = "ExAmPlE.TeSt."
			m.Answer = []dns.RR{mustRR("EXAMPLE.test. 300 IN MX 10 MX.Example.Test.")}
		})
	}, nil)
	r, err := New(Config{Servers: []string{rs.Addr}, Timeout: 10 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	res, err := r.LookupMX(context.Background(), "example.test")
	if err != nil || len(res.Records) != 1 || res.Records[0].Host != "mx.example.test" || res.Name != "example.test" {
		t.Fatalf("%+v %v", res, err)
	}
}

func TestNewBadServer(t *testing.T) {
	for _, s := range []string{"", ":53", "[]:53"} {
		if _, err := New(Config{Servers: []string{s}}); err == nil {
			t.Errorf("server %q accepted", s)
		}
	}
}

func TestResolvConf(t *testing.T) {
	dir := t.TempDir()
	write := func(name, text string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(text), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	got, err := resolvConfServers(write("ok", "# comment\nsearch example.test\nnameserver 127.0.0.53\nnameserver ::1\noptions ndots:1\n"))
	if err != nil {
		t.Fatal(err)
	}
	addrs, err := serverAddrs(got)
	if err != nil || !slices.Equal(addrs, []string{"127.0.0.53:53", "[::1]:53"}) {
		t.Errorf("servers %v %v", addrs, err)
	}
	if _, err := resolvConfServers(write("empty", "search example.test\n")); err == nil {
		t.Error("resolv.conf without nameserver accepted")
	}
	if _, err := resolvConfServers(filepath.Join(dir, "missing")); err == nil {
		t.Error("missing resolv.conf accepted")
	}
	if _, err := serverAddrs(nil); err == nil {
		t.Error("no servers accepted")
	}
}

func TestNewNoServers(t *testing.T) {
	r, err := New(Config{})
	if err != nil {
		// No /etc/resolv.conf on this machine: New must say so.
		if r != nil {
			t.Error("non-nil resolver with error")
		}
		return
	}
	if len(r.servers) == 0 {
		t.Error("resolver without servers")
	}
	if r.attempts != DefaultAttempts || r.udp.Timeout != DefaultTimeout || r.maxTTL != DefaultMaxTTL ||
		r.negativeTTL != DefaultNegativeTTL || r.cache == nil || r.cache.max != DefaultCacheSize {
		t.Errorf("defaults not applied: %+v", r)
	}
}
