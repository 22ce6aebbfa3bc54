package main

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestRun(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "store")
	var out bytes.Buffer
	res, err := run([]string{"-dir", dir, "-n", "200", "-size", "2048", "-producers", "8"}, &out)
	t.Log(out.String())
	if err != nil {
		t.Fatal(err)
	}
	if res.Enqueued != 200 || res.Recovered != 200 || res.Bytes != 200*2048 {
		t.Fatalf("result %+v, want 200 enqueued and recovered, %d bytes", res, 200*2048)
	}
	for _, want := range []string{
		"enqueue:  200 messages, 409600 body bytes",
		"msgs/s", "MB/s", "VmRSS", "VmHWM",
		"recovery: logstore.Open took",
		"verify:   200 messages, 409600 body bytes",
		"ok:       every enqueued message recovered",
	} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("output lacks %q", want)
		}
	}
	if _, err := os.Stat(dir); !os.IsNotExist(err) {
		t.Errorf("directory not removed without -keep: %v", err)
	}
}

func TestRunKeep(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "store")
	var out bytes.Buffer
	if _, err := run([]string{"-dir", dir, "-n", "20", "-size", "100", "-producers", "3", "-keep"}, &out); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(dir, "LOCK")); err != nil {
		t.Errorf("directory not kept with -keep: %v", err)
	}
	// A non-empty directory is refused.
	if _, err := run([]string{"-dir", dir, "-n", "20"}, &out); err == nil || !strings.Contains(err.Error(), "not empty") {
		t.Errorf("second run on a used directory: err %v, want not empty", err)
	}
}

func TestBody(t *testing.T) {
	var g bodyGen
	for _, size := range []int{0, 300, 377, 378, 379, 380, 381, 1000, 10240} {
		for i := range 3 {
			_, b := g.message(i, size)
			hdr := bytes.Index(b, []byte("\r\n\r\n")) + 4
			if size >= headerLen && len(b) != size {
				t.Errorf("size %d: body is %d bytes", size, len(b))
			}
			if size < hdr && len(b) != hdr {
				t.Errorf("size %d: body is %d bytes, want the %d-byte header", size, len(b), hdr)
			}
			if !bytes.HasSuffix(b, []byte("\r\n")) {
				t.Errorf("size %d: body does not end with CRLF", size)
			}
			for _, line := range strings.Split(strings.TrimSuffix(string(b), "\r\n"), "\r\n") {
				if len(line) > 78 || strings.ContainsAny(line, "\r\n") {
					t.Errorf("size %d: bad line %q", size, line)
				}
			}
		}
	}
}
