// Command bounceparse reads bounce messages and prints one JSON line per
// file: what kind of message it is and, for bounces, the outcome and
// classification of each recipient.
//
//	go run ./examples/bounceparse FILE...
package main

import (
	"encoding/json"
	"fmt"
	"io"
	"os"

	"github.com/mtakit/mta/bounce"
)

type recipientJSON struct {
	Recipient  string `json:"recipient"`
	Action     string `json:"action"`
	Status     string `json:"status"`
	ReplyCode  int    `json:"reply_code,omitempty"`
	Diagnostic string `json:"diagnostic,omitempty"`
	RemoteMTA  string `json:"remote_mta,omitempty"`
	Permanent  bool   `json:"permanent"`
	Category   string `json:"category"`
	BadAddress bool   `json:"bad_address"`
}

type complaintJSON struct {
	FeedbackType string   `json:"feedback_type"`
	UserAgent    string   `json:"user_agent,omitempty"`
	SourceIP     string   `json:"source_ip,omitempty"`
	OriginalFrom string   `json:"original_mail_from,omitempty"`
	OriginalTo   []string `json:"original_rcpt_to,omitempty"`
}

type resultJSON struct {
	File              string          `json:"file"`
	Kind              string          `json:"kind"`
	Recipients        []recipientJSON `json:"recipients,omitempty"`
	Complaint         *complaintJSON  `json:"complaint,omitempty"`
	OriginalMessageID string          `json:"original_message_id,omitempty"`
	Error             string          `json:"error,omitempty"`
}

// run parses each file with p and writes one JSON line per file to w. A
// file that cannot be read or parsed gets a line with "error" set; run
// returns an error only when writing fails.
func run(p *bounce.Parser, files []string, w io.Writer) error {
	enc := json.NewEncoder(w)
	for _, name := range files {
		res := resultJSON{File: name, Kind: string(bounce.KindUnknown)}
		rep, err := parseFile(p, name)
		if err != nil {
			res.Error = err.Error()
		} else {
			res.Kind = string(rep.Kind)
			res.OriginalMessageID = rep.OriginalMessageID
			for _, r := range rep.Recipients {
				res.Recipients = append(res.Recipients, recipientJSON{
					Recipient:  r.Recipient,
					Action:     string(r.Action),
					Status:     fmt.Sprintf("%d.%d.%d", r.Status[0], r.Status[1], r.Status[2]),
					ReplyCode:  r.ReplyCode,
					Diagnostic: r.Diagnostic,
					RemoteMTA:  r.RemoteMTA,
					Permanent:  r.Classification.Permanent,
					Category:   string(r.Classification.Category),
					BadAddress: r.Classification.BadAddress,
				})
			}
			if c := rep.Complaint; c != nil {
				res.Complaint = &complaintJSON{FeedbackType: c.FeedbackType, UserAgent: c.UserAgent,
					SourceIP: c.SourceIP, OriginalFrom: c.OriginalMailFrom, OriginalTo: c.OriginalRcptTo}
			}
		}
		if err := enc.Encode(res); err != nil {
			return err
		}
	}
	return nil
}

func parseFile(p *bounce.Parser, name string) (*bounce.Report, error) {
	f, err := os.Open(name)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	return p.Parse(f)
}

func main() {
	if len(os.Args) < 2 {
		fmt.Fprintln(os.Stderr, "usage: bounceparse FILE...")
		os.Exit(2)
	}
	if err := run(&bounce.Parser{}, os.Args[1:], os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, "bounceparse:", err)
		os.Exit(1)
	}
}
