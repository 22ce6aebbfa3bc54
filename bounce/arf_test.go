package bounce

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestParseARF(t *testing.T) {
	f, err := os.Open("testdata/arf-example.eml")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	c, err := ParseARF(f)
	if err != nil {
		t.Fatal(err)
	}
	want := &Complaint{
		FeedbackType:     "abuse",
		UserAgent:        "SomeGenerator/1.0",
		Version:          "1",
		OriginalMailFrom: "somespammer@example.net",
		SourceIP:         "192.0.2.1",
		ReportedDomain:   []string{"example.net"},
	}
	if c.FeedbackType != want.FeedbackType || c.UserAgent != want.UserAgent || c.Version != want.Version ||
		c.OriginalMailFrom != want.OriginalMailFrom || c.SourceIP != want.SourceIP ||
		strings.Join(c.ReportedDomain, ",") != "example.net" {
		t.Errorf("got %+v", c)
	}
	// Original-Rcpt-To and Removal-Recipient name the same address: once.
	if strings.Join(c.OriginalRcptTo, ",") != "user@example.com" {
		t.Errorf("OriginalRcptTo = %v", c.OriginalRcptTo)
	}
	if strings.Join(c.ReportedURI, " ") != "http://example.net/earn_money.html mailto:user@example.com" {
		t.Errorf("ReportedURI = %v", c.ReportedURI)
	}
	if c.ArrivalDate.IsZero() || c.ArrivalDate.UTC() != time.Date(2005, 3, 8, 18, 0, 0, 0, time.UTC) {
		t.Errorf("ArrivalDate = %v", c.ArrivalDate)
	}
	if c.OriginalMessageID != "8787KJKJ3K4J3K4J3K4J3.mail@example.net" {
		t.Errorf("OriginalMessageID = %q", c.OriginalMessageID)
	}
	if got := c.OriginalHeader["Subject"]; len(got) != 1 || got[0] != "Earn money" {
		t.Errorf("OriginalHeader[Subject] = %v", got)
	}
}

func TestParseARFNotARF(t *testing.T) {
	_, err := ParseARF(strings.NewReader(testOriginal))
	if !errors.Is(err, ErrNotARF) {
		t.Fatalf("err = %v, want ErrNotARF", err)
	}
}

func TestParseARFCorpus(t *testing.T) {
	emlDir, entries := loadCorpus(t)
	n := 0
	for _, e := range entries {
		if e.Source != "arf" {
			continue
		}
		f, err := os.Open(filepath.Join(emlDir, e.File))
		if err != nil {
			t.Fatal(err)
		}
		rep, err := Parse(f)
		f.Close()
		if err != nil {
			t.Errorf("%s: %v", e.File, err)
			continue
		}
		if rep.Kind != KindARF || rep.Complaint == nil {
			t.Errorf("%s: kind %s", e.File, rep.Kind)
			continue
		}
		if rep.Complaint.FeedbackType != e.Expect[0].FeedbackType {
			t.Errorf("%s: feedback type %q, want %q", e.File, rep.Complaint.FeedbackType, e.Expect[0].FeedbackType)
		}
		n++
	}
	if n < 10 {
		t.Errorf("only %d ARF samples parsed", n)
	}
}

func TestParseARFVariants(t *testing.T) {
	jmrp := "From: staff@hotmail.com\nSubject: complaint about message from 192.0.2.1\nContent-Type: multipart/mixed; boundary=b\n\n--b\nContent-Type: text/plain\n\nThis is a complaint.\n--b\nContent-Type: message/rfc822\n\nX-HmXmrOriginalRecipient: <user@hotmail.com>\nMessage-ID: <m1@example.com>\nSubject: offer\n\nbuy\n--b--\n"
	c, err := ParseARF(strings.NewReader(jmrp))
	if err != nil {
		t.Fatal(err)
	}
	if c.FeedbackType != "abuse" || len(c.OriginalRcptTo) != 1 || c.OriginalRcptTo[0] != "user@hotmail.com" || c.OriginalMessageID != "m1@example.com" {
		t.Errorf("JMRP: %+v", c)
	}
	plain := "From: fbl@example.net\nSubject: FW: report\n\nFeedback-Type: abuse\nUser-Agent: Example-FBL/1.0\nVersion: 1\nOriginal-Rcpt-To: u@example.net\n"
	c, err = ParseARF(strings.NewReader(plain))
	if err != nil {
		t.Fatal(err)
	}
	if c.FeedbackType != "abuse" || c.UserAgent != "Example-FBL/1.0" || len(c.OriginalRcptTo) != 1 {
		t.Errorf("plain fields: %+v", c)
	}
}
