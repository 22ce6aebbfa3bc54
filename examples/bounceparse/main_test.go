package main

import (
	"bufio"
	"bytes"
	"encoding/json"
	"path/filepath"
	"testing"

	"github.com/mtakit/mta/bounce"
	"github.com/mtakit/mta/internal/sharedtest"
)

func corpusFile(t *testing.T, name string) string {
	t.Helper()
	return sharedtest.Require(t, "corpus", "bounce", "eml", name)
}

func TestRun(t *testing.T) {
	files := []string{
		corpusFile(t, "lhost-postfix-36.eml"),
		corpusFile(t, "arf-01.eml"),
		filepath.Join(t.TempDir(), "missing.eml"),
	}
	var out bytes.Buffer
	if err := run(&bounce.Parser{}, files, &out); err != nil {
		t.Fatal(err)
	}
	var lines []resultJSON
	sc := bufio.NewScanner(&out)
	for sc.Scan() {
		var r resultJSON
		if err := json.Unmarshal(sc.Bytes(), &r); err != nil {
			t.Fatalf("bad JSON line %q: %v", sc.Text(), err)
		}
		lines = append(lines, r)
	}
	if len(lines) != 3 {
		t.Fatalf("%d lines, want 3", len(lines))
	}
	dsn := lines[0]
	if dsn.Kind != "dsn" || len(dsn.Recipients) != 1 || dsn.Error != "" {
		t.Fatalf("dsn line: %+v", dsn)
	}
	r := dsn.Recipients[0]
	if r.Recipient != "otsu-sakaba-hunter-neko-nyaaaaaaan@ezweb.ne.jp" || r.ReplyCode != 550 || r.Status != "5.0.0" ||
		r.Category != "bad_mailbox" || !r.BadAddress || !r.Permanent || r.Action != "failed" {
		t.Errorf("recipient: %+v", r)
	}
	if lines[1].Kind != "arf" || lines[1].Complaint == nil || lines[1].Complaint.FeedbackType != "abuse" {
		t.Errorf("arf line: %+v", lines[1])
	}
	if lines[2].Error == "" || lines[2].Kind != "unknown" {
		t.Errorf("missing file line: %+v", lines[2])
	}
}
