package bounce

import (
	"bytes"
	"os"
	"path/filepath"
	"testing"

	"github.com/emersion/go-smtp"
)

func BenchmarkClassify(b *testing.B) {
	c := DefaultClassifier()
	replies := make([]*smtp.SMTPError, len(classifyCases))
	for i, tc := range classifyCases {
		replies[i] = &smtp.SMTPError{Code: tc.code, EnhancedCode: tc.status, Message: tc.text}
	}
	b.ReportAllocs()
	b.ResetTimer()
	cpu0 := cpuTime()
	for i := 0; i < b.N; i++ {
		c.Classify(replies[i%len(replies)])
	}
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "classifications/s")
	if cpu := cpuTime() - cpu0; cpu > 0 {
		b.ReportMetric(float64(b.N)/cpu.Seconds(), "classifications/cpu-s")
	}
}

func BenchmarkParseCorpus(b *testing.B) {
	dir := filepath.Join(corpusDir(b), "eml")
	entries, err := os.ReadDir(dir)
	if err != nil {
		b.Fatal(err)
	}
	var msgs [][]byte
	var total int64
	for _, e := range entries {
		m, err := os.ReadFile(filepath.Join(dir, e.Name()))
		if err != nil {
			b.Fatal(err)
		}
		msgs = append(msgs, m)
		total += int64(len(m))
	}
	var p Parser
	b.SetBytes(total / int64(len(msgs)))
	b.ReportAllocs()
	b.ResetTimer()
	cpu0 := cpuTime()
	for i := 0; i < b.N; i++ {
		if _, err := p.Parse(bytes.NewReader(msgs[i%len(msgs)])); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "messages/s")
	if cpu := cpuTime() - cpu0; cpu > 0 {
		b.ReportMetric(float64(b.N)/cpu.Seconds(), "messages/cpu-s")
	}
}
