package bounce

import (
	"bytes"
	"errors"
	"io"
	"strings"
	"testing"
	"time"

	"github.com/emersion/go-message"
	"github.com/emersion/go-smtp"
)

const testOriginal = "Return-Path: <sender@example.com>\n" +
	"From: Sender <sender@example.com>\n" +
	"To: rcpt@example.net\n" +
	"Subject: hello\n" +
	"Message-ID: <orig-1@example.com>\n" +
	"\n" +
	"Body line one.\n" +
	"Body line two.\n"

func testDSN() *DSN {
	return &DSN{
		ReportingMTA: "mx.example.com",
		To:           "sender@example.com",
		EnvelopeID:   "env-42",
		ArrivalDate:  time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC),
		Date:         time.Date(2026, 1, 3, 3, 4, 5, 0, time.UTC),
		MessageID:    "dsn-1@mx.example.com",
		Recipients: []DSNRecipient{{
			OriginalRecipient: "rfc822;Rcpt@example.net",
			FinalRecipient:    "rcpt@example.net",
			Action:            ActionFailed,
			RemoteMTA:         "mx1.example.net",
			Diagnostic: &smtp.SMTPError{Code: 550, EnhancedCode: smtp.EnhancedCode{5, 1, 1},
				Message: "The email account that you tried to reach does not exist.\r\nInjected: header"},
			LastAttempt: time.Date(2026, 1, 3, 3, 4, 0, 0, time.UTC),
		}, {
			FinalRecipient: "slow@example.org",
			Action:         ActionDelayed,
			Status:         smtp.EnhancedCode{4, 4, 1},
			WillRetryUntil: time.Date(2026, 1, 7, 3, 4, 5, 0, time.UTC),
		}},
		Original: strings.NewReader(testOriginal),
	}
}

func TestNewDSNStructure(t *testing.T) {
	for _, ret := range []smtp.DSNReturn{"", smtp.DSNReturnHeaders, smtp.DSNReturnFull} {
		t.Run("RET="+string(ret), func(t *testing.T) {
			d := testDSN()
			d.Return = ret
			var buf bytes.Buffer
			if err := NewDSN(&buf, d); err != nil {
				t.Fatal(err)
			}
			raw := buf.Bytes()
			if bytes.Contains(bytes.ReplaceAll(raw, []byte("\r\n"), nil), []byte("\n")) {
				t.Fatal("bare LF in output")
			}
			if bytes.Contains(raw, []byte("\r\nInjected: header")) {
				t.Fatal("CRLF from diagnostic text reached the output")
			}
			m, err := message.Read(bytes.NewReader(raw))
			if err != nil {
				t.Fatal(err)
			}
			if got := m.Header.Get("Auto-Submitted"); got != "auto-replied" {
				t.Errorf("Auto-Submitted = %q", got)
			}
			if got := m.Header.Get("Subject"); got != "Undelivered Mail Returned to Sender" {
				t.Errorf("Subject = %q", got)
			}
			mt, params, _ := m.Header.ContentType()
			if mt != "multipart/report" || params["report-type"] != "delivery-status" {
				t.Fatalf("Content-Type = %s %v", mt, params)
			}
			mr := m.MultipartReader()
			var types []string
			var status, third string
			for {
				p, err := mr.NextPart()
				if err == io.EOF {
					break
				}
				if err != nil {
					t.Fatal(err)
				}
				ct, _, _ := p.Header.ContentType()
				types = append(types, ct)
				b, _ := io.ReadAll(p.Body)
				switch ct {
				case "message/delivery-status":
					status = string(b)
				case "message/rfc822", "text/rfc822-headers":
					third = string(b)
				}
			}
			want := []string{"text/plain", "message/delivery-status", "text/rfc822-headers"}
			if ret == smtp.DSNReturnFull {
				want[2] = "message/rfc822"
			}
			if strings.Join(types, ",") != strings.Join(want, ",") {
				t.Fatalf("parts = %v, want %v", types, want)
			}
			for _, s := range []string{
				"Reporting-MTA: dns; mx.example.com\r\n",
				"Original-Envelope-Id: env-42\r\n",
				"Original-Recipient: rfc822; Rcpt@example.net\r\n",
				"Final-Recipient: rfc822; rcpt@example.net\r\n",
				"Action: failed\r\n",
				"Status: 5.1.1\r\n",
				"Remote-MTA: dns; mx1.example.net\r\n",
				"Diagnostic-Code: smtp; 550 5.1.1 The email account that you tried to reach",
				"Action: delayed\r\n",
				"Status: 4.4.1\r\n",
				"Will-Retry-Until: Wed, 07 Jan 2026 03:04:05 +0000\r\n",
			} {
				if !strings.Contains(status, s) {
					t.Errorf("delivery-status lacks %q:\n%s", s, status)
				}
			}
			if !strings.Contains(third, "Message-ID: <orig-1@example.com>\r\n") {
				t.Errorf("third part lacks the original header:\n%s", third)
			}
			hasBody := strings.Contains(third, "Body line two.")
			if hasBody != (ret == smtp.DSNReturnFull) {
				t.Errorf("RET=%q: body included = %v", ret, hasBody)
			}
			// Deterministic: the same input gives the same bytes.
			d2 := testDSN()
			d2.Return = ret
			var buf2 bytes.Buffer
			if err := NewDSN(&buf2, d2); err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(raw, buf2.Bytes()) {
				t.Error("output not deterministic")
			}
		})
	}
}

func TestNewDSNSubjects(t *testing.T) {
	for _, tc := range []struct {
		actions []Action
		want    string
	}{
		{[]Action{ActionDelayed}, "Delayed Mail (still being retried)"},
		{[]Action{ActionDelivered, ActionRelayed}, "Successful Mail Delivery Report"},
		{[]Action{ActionDelayed, ActionFailed}, "Undelivered Mail Returned to Sender"},
	} {
		d := testDSN()
		d.Recipients = nil
		for _, a := range tc.actions {
			d.Recipients = append(d.Recipients, DSNRecipient{FinalRecipient: "a@example.net", Action: a})
		}
		var buf bytes.Buffer
		if err := NewDSN(&buf, d); err != nil {
			t.Fatal(err)
		}
		m, err := message.Read(&buf)
		if err != nil {
			t.Fatal(err)
		}
		if got := m.Header.Get("Subject"); got != tc.want {
			t.Errorf("%v: Subject = %q, want %q", tc.actions, got, tc.want)
		}
	}
}

func TestNewDSNErrors(t *testing.T) {
	for name, mod := range map[string]func(*DSN){
		"no reporting MTA": func(d *DSN) { d.ReportingMTA = "" },
		"no To":            func(d *DSN) { d.To = "" },
		"null sender":      func(d *DSN) { d.To = "<>" },
		"no Date":          func(d *DSN) { d.Date = time.Time{} },
		"no recipients":    func(d *DSN) { d.Recipients = nil },
		"no final rcpt":    func(d *DSN) { d.Recipients[0].FinalRecipient = "\r\n" },
		"bad action":       func(d *DSN) { d.Recipients[0].Action = "bounced" },
		"bad status":       func(d *DSN) { d.Recipients[0].Status = smtp.EnhancedCode{3, 1, 1} },
		"bad return":       func(d *DSN) { d.Return = "BODY" },
	} {
		t.Run(name, func(t *testing.T) {
			d := testDSN()
			mod(d)
			err := NewDSN(io.Discard, d)
			if !errors.Is(err, ErrInvalidDSN) {
				t.Fatalf("err = %v, want ErrInvalidDSN", err)
			}
		})
	}
}

func TestNewDSNUTF8(t *testing.T) {
	d := testDSN()
	d.Recipients = []DSNRecipient{{FinalRecipient: "usér@exämple.net", OriginalRecipient: "usér@exämple.net",
		Diagnostic: &smtp.SMTPError{Code: 550, EnhancedCode: smtp.EnhancedCode{5, 1, 1}, Message: "unknown"}}}
	var buf bytes.Buffer
	if err := NewDSN(&buf, d); err != nil {
		t.Fatal(err)
	}
	s := buf.String()
	for _, want := range []string{"Content-Type: message/global-delivery-status", "Final-Recipient: utf-8; usér@exämple.net", "Original-Recipient: utf-8; usér@exämple.net", "Action: failed"} {
		if !strings.Contains(s, want) {
			t.Errorf("missing %q", want)
		}
	}
}

func TestNewDSNLongLinesAndLimit(t *testing.T) {
	long := strings.Repeat("x", 10000)
	orig := "Subject: big\n\n" + long + "\nsecond\n" + strings.Repeat("line\n", 1000)
	d := testDSN()
	d.Return = smtp.DSNReturnFull
	d.Original = strings.NewReader(orig)
	d.MaxOriginalBytes = 10100
	d.Recipients[0].Diagnostic.Message = strings.Repeat("word ", 1000)
	var buf bytes.Buffer
	if err := NewDSN(&buf, d); err != nil {
		t.Fatal(err)
	}
	s := buf.String()
	if !strings.Contains(s, long+"\r\n") {
		t.Error("long line not copied whole")
	}
	if n := strings.Count(s, "line\r\n"); n == 0 || n > 50 {
		t.Error("MaxOriginalBytes not applied")
	}
	// Folded header lines stay short except for unbreakable words.
	for _, l := range strings.Split(s[:strings.Index(s, long)], "\r\n") {
		if len(l) > 998 {
			t.Errorf("line of %d octets", len(l))
		}
	}
}

type failingReader struct{}

func (failingReader) Read([]byte) (int, error) { return 0, errors.New("disk gone") }

func TestNewDSNReadError(t *testing.T) {
	d := testDSN()
	d.Original = failingReader{}
	if err := NewDSN(io.Discard, d); err == nil || !strings.Contains(err.Error(), "disk gone") {
		t.Fatalf("err = %v", err)
	}
}

func TestNewDSNRoundTrip(t *testing.T) {
	for _, ret := range []smtp.DSNReturn{smtp.DSNReturnHeaders, smtp.DSNReturnFull} {
		d := testDSN()
		d.Return = ret
		var buf bytes.Buffer
		if err := NewDSN(&buf, d); err != nil {
			t.Fatal(err)
		}
		rep, err := Parse(&buf)
		if err != nil {
			t.Fatal(err)
		}
		if rep.Kind != KindDSN || rep.ReportingMTA != "mx.example.com" || rep.EnvelopeID != "env-42" ||
			!rep.ArrivalDate.Equal(d.ArrivalDate) {
			t.Fatalf("report: %+v", rep)
		}
		if rep.OriginalMessageID != "orig-1@example.com" || rep.OriginalReturnPath != "sender@example.com" {
			t.Errorf("original: id %q return path %q", rep.OriginalMessageID, rep.OriginalReturnPath)
		}
		if len(rep.Recipients) != 2 {
			t.Fatalf("%d recipients", len(rep.Recipients))
		}
		r := rep.Recipients[0]
		if r.Recipient != "rcpt@example.net" || r.OriginalRecipient != "Rcpt@example.net" || r.Action != ActionFailed ||
			r.Status != (smtp.EnhancedCode{5, 1, 1}) || r.ReplyCode != 550 || r.RemoteMTA != "mx1.example.net" ||
			!strings.HasPrefix(r.Diagnostic, "550 5.1.1 The email account that you tried to reach does not exist.") {
			t.Errorf("recipient 1: %+v", r)
		}
		if r.Classification.Category != CategoryBadMailbox || !r.Classification.BadAddress {
			t.Errorf("recipient 1 classification: %+v", r.Classification)
		}
		r = rep.Recipients[1]
		if r.Recipient != "slow@example.org" || r.Action != ActionDelayed || r.Status != (smtp.EnhancedCode{4, 4, 1}) ||
			r.Classification.Permanent {
			t.Errorf("recipient 2: %+v", r)
		}
	}
}

func TestNewDSNRoundTripUTF8(t *testing.T) {
	d := testDSN()
	d.Recipients = []DSNRecipient{{FinalRecipient: "usér@exämple.net", Action: ActionFailed, Status: smtp.EnhancedCode{5, 1, 1}}}
	var buf bytes.Buffer
	if err := NewDSN(&buf, d); err != nil {
		t.Fatal(err)
	}
	rep, err := Parse(&buf)
	if err != nil {
		t.Fatal(err)
	}
	if len(rep.Recipients) != 1 || rep.Recipients[0].Recipient != "usér@exämple.net" {
		t.Fatalf("recipients: %+v", rep.Recipients)
	}
	if got := decodeAddrField(`utf-8; us\x{E9}r@example.net`); got != "usér@example.net" {
		t.Errorf("utf-8-addr-xtext: %q", got)
	}
}
