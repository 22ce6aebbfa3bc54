package deliver

import (
	"context"
	"crypto/tls"
	"io"
	"strings"
	"testing"

	"github.com/emersion/go-smtp"
	"github.com/mtakit/mta/deliver/smtptest"
)

// sink is a go-smtp server that discards messages (smtptest records them,
// which would measure its memory use instead of ours).
type sinkSession struct{}

func (sinkSession) Reset()                               {}
func (sinkSession) Logout() error                        { return nil }
func (sinkSession) Mail(string, *smtp.MailOptions) error { return nil }
func (sinkSession) Rcpt(string, *smtp.RcptOptions) error { return nil }
func (sinkSession) Data(r io.Reader) error               { _, err := io.Copy(io.Discard, r); return err }

func startSink(b *testing.B, tlsCfg *tls.Config) string {
	b.Helper()
	srv := smtp.NewServer(smtp.BackendFunc(func(*smtp.Conn) (smtp.Session, error) { return sinkSession{}, nil }))
	srv.Domain = "sink.deliver.test"
	srv.TLSConfig = tlsCfg
	srv.Addr = "127.0.0.1:0"
	ln, err := netListen()
	if err != nil {
		b.Fatal(err)
	}
	go srv.Serve(ln)
	b.Cleanup(func() { srv.Close() })
	return ln.Addr().String()
}

func benchStatic(b *testing.B, withTLS bool) {
	var tlsCfg *tls.Config
	route := StaticRoute{Domain: "*", TLS: TLSNone}
	cc := ClientConfig{Hostname: testHost}
	if withTLS {
		ca, err := smtptest.NewCA()
		if err != nil {
			b.Fatal(err)
		}
		tlsCfg, err = ca.ServerConfig("127.0.0.1")
		if err != nil {
			b.Fatal(err)
		}
		route.TLS = TLSRequired
		cc.RootCAs = ca.Pool
	}
	route.Host = startSink(b, tlsCfg)
	cc.Pool.MaxMessages = 1 << 30
	tr, err := NewStatic(StaticConfig{ClientConfig: cc, Routes: []StaticRoute{route}})
	if err != nil {
		b.Fatal(err)
	}
	defer tr.Close()
	line := strings.Repeat("0123456789", 7) + "abcdefgh\r\n"
	msg := testMessage(strings.Repeat(line, 10*1024/len(line)))
	body := bodyOf(msg)
	env := envelope("rcpt@example.test")
	ctx := context.Background()
	b.SetBytes(int64(len(msg)))
	b.ReportAllocs()
	b.ResetTimer()
	b.SetParallelism(4)
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			res := tr.Deliver(ctx, env, body)
			if res[0].Reply.Code != 250 {
				b.Errorf("%+v", res[0])
				return
			}
		}
	})
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "msgs/s")
}

// BenchmarkStatic measures 10 KB messages to a loopback go-smtp sink over
// reused connections.
func BenchmarkStatic(b *testing.B) {
	b.Run("plain", func(b *testing.B) { benchStatic(b, false) })
	b.Run("tls", func(b *testing.B) { benchStatic(b, true) })
}
