package bounce

import (
	"bufio"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"testing"

	"github.com/mtakit/mta/internal/sharedtest"
)

// corpusDir returns the shared bounce corpus directory, skipping the test
// when it is absent.
func corpusDir(t testing.TB) string {
	t.Helper()
	dir := sharedtest.Require(t, "corpus", "bounce")
	if _, err := os.Stat(filepath.Join(dir, "expected.jsonl")); err != nil {
		t.Skipf("bounce corpus incomplete at %s: %v", dir, err)
	}
	return dir
}

type corpusExpect struct {
	Index        int    `json:"index"`
	Status       string `json:"status"`
	ReplyCode    string `json:"replycode"`
	Reason       string `json:"reason"`
	HardBounce   bool   `json:"hardbounce"`
	FeedbackType string `json:"feedbacktype"`
}

type corpusEntry struct {
	File   string         `json:"file"`
	Source string         `json:"source"`
	Expect []corpusExpect `json:"expect"`
}

func loadCorpus(t testing.TB) (string, []corpusEntry) {
	dir := corpusDir(t)
	f, err := os.Open(filepath.Join(dir, "expected.jsonl"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var entries []corpusEntry
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		var e corpusEntry
		if err := json.Unmarshal(sc.Bytes(), &e); err != nil {
			t.Fatal(err)
		}
		entries = append(entries, e)
	}
	return filepath.Join(dir, "eml"), entries
}

// SisimaiReasons maps Sisimai's reason names onto our categories; it
// documents how the corpus expectations relate to Category. Several
// Sisimai reasons share one category.
var sisimaiReasons = map[string]Category{
	"userunknown":     CategoryBadMailbox,
	"hasmoved":        CategoryBadMailbox,
	"hostunknown":     CategoryBadDomain,
	"notaccept":       CategoryBadDomain,
	"suspend":         CategoryMailboxDisabled,
	"mailboxfull":     CategoryMailboxFull,
	"exceedlimit":     CategoryMessageTooLarge,
	"mesgtoobig":      CategoryMessageTooLarge,
	"spamdetected":    CategoryContentRejected,
	"virusdetected":   CategoryContentRejected,
	"contenterror":    CategoryContentRejected,
	"filtered":        CategoryPolicy,
	"policyviolation": CategoryPolicy,
	"blocked":         CategoryReputation,
	"badreputation":   CategoryReputation,
	"requireptr":      CategoryReputation,
	"speeding":        CategoryRateLimited,
	"toomanyconn":     CategoryRateLimited,
	"authfailure":     CategoryAuthFailure,
	"securityerror":   CategoryTLSRequired,
	"failedstarttls":  CategoryTLSRequired,
	"norelaying":      CategoryRelayDenied,
	"rejected":        CategorySenderRejected,
	"networkerror":    CategoryNetwork,
	"syntaxerror":     CategoryProtocol,
	"notcompliantrfc": CategoryProtocol,
	"systemerror":     CategorySystem,
	"systemfull":      CategorySystem,
	"mailererror":     CategorySystem,
	"expired":         CategoryExpired,
	"vacation":        CategoryAutoReply,
	"delivered":       CategoryDelivered,
	"feedback":        "complaint",
	"onhold":          CategoryUnclassified,
	"undefined":       CategoryUnclassified,
	"suppressed":      CategoryUnclassified,
}

// matchStatus compares our status with an expected one; Sisimai's made-up
// X.0.9NN codes count by class only.
func matchStatus(want, got string) bool {
	if strings.HasPrefix(want[1:], ".0.9") && len(want) == 7 {
		return got != "" && got[0] == want[0]
	}
	return want == got
}

func TestCorpusScore(t *testing.T) {
	emlDir, entries := loadCorpus(t)
	total, matched := 0, 0
	reasonHits := map[string]int{}
	reasonTotal := map[string]int{}
	confusion := map[string]map[string]int{}
	var misses []string
	for _, e := range entries {
		f, err := os.Open(filepath.Join(emlDir, e.File))
		if err != nil {
			t.Fatal(err)
		}
		rep, err := Parse(f)
		f.Close()
		for i, x := range e.Expect {
			total++
			reasonTotal[x.Reason]++
			if err != nil {
				misses = append(misses, fmt.Sprintf("%s #%d: error %v", e.File, i+1, err))
				continue
			}
			if x.Reason == "feedback" {
				ok := rep.Kind == KindARF && rep.Complaint != nil && rep.Complaint.FeedbackType == x.FeedbackType
				cat := string(rep.Kind)
				if ok {
					cat = "complaint"
				}
				if confusion[x.Reason] == nil {
					confusion[x.Reason] = map[string]int{}
				}
				confusion[x.Reason][cat]++
				if ok {
					matched++
					reasonHits[x.Reason]++
				} else {
					misses = append(misses, fmt.Sprintf("%s #%d: kind %s, want arf/%s", e.File, i+1, rep.Kind, x.FeedbackType))
				}
				continue
			}
			if i >= len(rep.Recipients) {
				misses = append(misses, fmt.Sprintf("%s #%d: missing recipient (kind %s, %d found) want %s %s %s hard=%v",
					e.File, i+1, rep.Kind, len(rep.Recipients), x.Status, x.ReplyCode, x.Reason, x.HardBounce))
				if confusion[x.Reason] == nil {
					confusion[x.Reason] = map[string]int{}
				}
				confusion[x.Reason]["(missing)"]++
				continue
			}
			r := rep.Recipients[i]
			if confusion[x.Reason] == nil {
				confusion[x.Reason] = map[string]int{}
			}
			confusion[x.Reason][string(r.Classification.Category)]++
			st := formatStatus(r.Status)
			ok := matchStatus(x.Status, st) && r.Classification.BadAddress == x.HardBounce
			if x.ReplyCode != "" {
				want, _ := strconv.Atoi(x.ReplyCode)
				ok = ok && want == r.ReplyCode
			}
			if ok {
				matched++
				reasonHits[x.Reason]++
			} else {
				misses = append(misses, fmt.Sprintf("%s #%d: got %s %d %s hard=%v rule=%s cmd=%s | want %s %s %s hard=%v | %.160s",
					e.File, i+1, st, r.ReplyCode, r.Classification.Category, r.Classification.BadAddress, r.Classification.Rule, r.Command,
					x.Status, x.ReplyCode, x.Reason, x.HardBounce, r.Diagnostic))
			}
		}
	}
	agree, compared := 0, 0
	for reason, cats := range confusion {
		want, ok := sisimaiReasons[reason]
		if !ok {
			t.Errorf("reason %q has no mapping", reason)
			continue
		}
		for cat, n := range cats {
			if cat == "(missing)" {
				continue
			}
			compared += n
			if Category(cat) == want {
				agree += n
			}
		}
	}
	t.Logf("category agreement with the reason mapping: %d/%d = %.1f%%", agree, compared, 100*float64(agree)/float64(compared))
	score := float64(matched) / float64(total)
	t.Logf("corpus score: %d/%d = %.1f%% of expected results matched (status, reply code, hard bounce)", matched, total, 100*score)
	var reasons []string
	for r := range confusion {
		reasons = append(reasons, r)
	}
	sort.Slice(reasons, func(i, j int) bool { return reasonTotal[reasons[i]] > reasonTotal[reasons[j]] })
	var b strings.Builder
	fmt.Fprintf(&b, "confusion (sisimai reason -> our category: count), matched/total:\n")
	for _, r := range reasons {
		var cats []string
		for c, n := range confusion[r] {
			cats = append(cats, fmt.Sprintf("%s:%d", c, n))
		}
		sort.Strings(cats)
		fmt.Fprintf(&b, "  %-16s %3d/%-3d  %s\n", r, reasonHits[r], reasonTotal[r], strings.Join(cats, " "))
	}
	t.Log(b.String())
	if os.Getenv("BOUNCE_CORPUS_VERBOSE") != "" {
		for _, m := range misses {
			t.Log(m)
		}
	}
	if score < 0.95 {
		for _, m := range misses {
			t.Log(m)
		}
		t.Errorf("corpus score %.1f%% is below the required 95%%", 100*score)
	}
}
