package bounce

import (
	"fmt"
	"io"
	"net/mail"
	"slices"
	"strings"
	"time"
)

// Complaint is an RFC 5965 feedback report.
type Complaint struct {
	// FeedbackType is the Feedback-Type field (RFC 5965 §3.5: abuse,
	// fraud, other, virus, not-spam; RFC 6650, RFC 6591: auth-failure;
	// opt-out from common practice), lower case.
	FeedbackType string
	// UserAgent and Version identify the generator (RFC 5965 §3.1).
	UserAgent string
	Version   string
	// OriginalMailFrom is the envelope sender of the reported message.
	OriginalMailFrom string
	// OriginalRcptTo lists the envelope recipients of the reported message.
	OriginalRcptTo []string
	// SourceIP is the IP address the reported message came from.
	SourceIP string
	// ArrivalDate is when the reported message arrived.
	ArrivalDate time.Time
	// ReportedDomain lists Reported-Domain fields.
	ReportedDomain []string
	// ReportedURI lists Reported-URI fields.
	ReportedURI []string
	// Incidents is the Incidents count, 0 when absent (meaning one).
	Incidents int
	// OriginalMessageID is the Message-ID of the reported message (from
	// the third part), without angle brackets.
	OriginalMessageID string
	// OriginalHeader holds the reported message's header fields.
	OriginalHeader map[string][]string
}

// ParseARF parses an RFC 5965 feedback report with a zero [Parser].
func ParseARF(r io.Reader) (*Complaint, error) {
	var p Parser
	return p.ParseARF(r)
}

// ErrNotARF is returned by [Parser.ParseARF] for messages without a
// message/feedback-report part.
var ErrNotARF = fmt.Errorf("%w: not a feedback report", ErrMalformed)

// ParseARF parses an RFC 5965 feedback report. A message without a
// message/feedback-report part returns an error wrapping [ErrNotARF].
func (p *Parser) ParseARF(r io.Reader) (*Complaint, error) {
	rep, err := p.Parse(r)
	if err != nil {
		return nil, err
	}
	if rep.Complaint == nil {
		return nil, ErrNotARF
	}
	return rep.Complaint, nil
}

// parseFeedback reads the fields of a message/feedback-report part
// (RFC 5965 §3.1-3.2).
func parseFeedback(body []byte) *Complaint {
	c := &Complaint{}
	text := strings.ReplaceAll(string(body), "\r\n", "\n")
	var fields []field
	for _, line := range strings.Split(text, "\n") {
		if strings.TrimSpace(line) == "" {
			continue
		}
		if (line[0] == ' ' || line[0] == '\t') && len(fields) > 0 {
			fields[len(fields)-1].value += " " + strings.TrimSpace(line)
			continue
		}
		k, v, ok := strings.Cut(line, ":")
		if !ok {
			continue
		}
		fields = append(fields, field{strings.ToLower(strings.TrimSpace(k)), strings.TrimSpace(v)})
	}
	for _, f := range fields {
		switch f.name {
		case "feedback-type":
			c.FeedbackType = strings.ToLower(clean(f.value, 64))
		case "user-agent":
			c.UserAgent = clean(f.value, 200)
		case "version":
			c.Version = clean(f.value, 20)
		case "original-mail-from":
			c.OriginalMailFrom = cleanAddr(f.value)
		case "original-rcpt-to", "removal-recipient":
			// The same address may come as both Original-Rcpt-To and
			// Removal-Recipient (RFC 5965 §3.2, §3.3): list it once.
			if a := cleanAddr(f.value); a != "" && len(c.OriginalRcptTo) < 1000 &&
				!slices.ContainsFunc(c.OriginalRcptTo, func(b string) bool { return strings.EqualFold(a, b) }) {
				c.OriginalRcptTo = append(c.OriginalRcptTo, a)
			}
		case "source-ip":
			c.SourceIP = clean(f.value, 64)
		case "arrival-date", "received-date":
			if t, ok := parseDate(f.value); ok {
				c.ArrivalDate = t
			}
		case "reported-domain":
			if len(c.ReportedDomain) < 100 {
				c.ReportedDomain = append(c.ReportedDomain, clean(f.value, maxHostLen))
			}
		case "reported-uri":
			if len(c.ReportedURI) < 100 {
				c.ReportedURI = append(c.ReportedURI, clean(f.value, maxTextLen))
			}
		case "incidents":
			fmt.Sscanf(f.value, "%d", &c.Incidents)
		}
	}
	return c
}

// obsZones are the obsolete zone names of RFC 5322 §4.3.
var obsZones = map[string]string{"UT": "+0000", "GMT": "+0000", "EST": "-0500", "EDT": "-0400",
	"CST": "-0600", "CDT": "-0500", "MST": "-0700", "MDT": "-0600", "PST": "-0800", "PDT": "-0700"}

// parseDate parses an RFC 5322 date, including the obsolete zone names
// (RFC 5322 §4.3) that net/mail reads as unknown zones at offset zero.
func parseDate(s string) (time.Time, bool) {
	s = strings.TrimSpace(s)
	if i := strings.LastIndexByte(s, ' '); i > 0 {
		if z, ok := obsZones[strings.ToUpper(strings.Trim(s[i+1:], "()"))]; ok {
			s = s[:i+1] + z
		}
	}
	t, err := mail.ParseDate(s)
	return t, err == nil
}
