package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/mtakit/mta/deliver"
	"github.com/mtakit/mta/queue"
	"github.com/mtakit/mta/queue/logstore"
)

// queueCmd runs "relay queue -queue-dir DIR list|show|hold|release|retry|delete".
func queueCmd(ctx context.Context, args []string, stdout io.Writer) error {
	fs := flag.NewFlagSet("relay queue", flag.ContinueOnError)
	dir := fs.String("queue-dir", "", "queue directory")
	fs.StringVar(dir, "queue", "", "alias of -queue-dir")
	domain := fs.String("domain", "", "list: only deliveries to this domain")
	state := fs.String("state", "", "list: only deliveries in this state (queued, deferred, active, held)")
	fs.Usage = func() {
		fmt.Fprintln(fs.Output(), "usage: relay queue -queue-dir DIR [-domain D] [-state S] list\n       relay queue -queue-dir DIR show|hold|release|retry|delete ID...")
	}
	if err := fs.Parse(args); err != nil {
		return errUsage
	}
	if fs.NArg() == 0 {
		fs.Usage()
		return errUsage
	}
	// Flags may also follow the verb: "list -domain D".
	verb := fs.Arg(0)
	if err := fs.Parse(fs.Args()[1:]); err != nil {
		return errUsage
	}
	ids := fs.Args()
	if *dir == "" || verb != "list" && len(ids) == 0 {
		fs.Usage()
		return errUsage
	}
	if _, err := os.Stat(*dir); err != nil {
		return err
	}
	store, err := logstore.Open(*dir, nil)
	if errors.Is(err, logstore.ErrLocked) {
		return fmt.Errorf("queue directory %s is in use: stop the relay first", *dir)
	}
	if err != nil {
		return err
	}
	defer store.Close()
	q, err := queue.New(queue.Config{Store: store})
	if err != nil {
		return err
	}
	switch verb {
	case "list":
		f := queue.Filter{Domain: *domain, Now: time.Now()}
		if *state != "" {
			if f.State, err = parseState(*state); err != nil {
				return err
			}
		}
		ms, err := q.List(ctx, f)
		if err != nil {
			return err
		}
		tw := tabwriter.NewWriter(stdout, 0, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "ID\tCREATED\tSIZE\tFROM\tRECIPIENTS\tSTATE")
		for _, m := range ms {
			fmt.Fprintf(tw, "%s\t%s\t%d\t<%s>\t%d\t%s\n", m.ID, m.Created.Format(time.DateTime), m.Size, m.From, m.Recipients(), states(m))
		}
		if err := tw.Flush(); err != nil {
			return err
		}
		fmt.Fprintf(stdout, "%d message(s)\n", len(ms))
		return nil
	case "show":
		for _, id := range ids {
			m, err := q.Get(ctx, id)
			if err != nil {
				return err
			}
			show(stdout, m)
		}
		return nil
	}
	var op func(context.Context, string) error
	switch verb {
	case "hold":
		op = q.Hold
	case "release":
		op = q.Release
	case "retry":
		op = q.RetryNow
	case "delete":
		op = q.Delete
	default:
		return fmt.Errorf("queue: unknown command %q", verb)
	}
	for _, id := range ids {
		if err := op(ctx, id); err != nil {
			return fmt.Errorf("%s %s: %w", verb, id, err)
		}
		fmt.Fprintf(stdout, "%s: %s\n", id, verb)
	}
	return nil
}

func parseState(s string) (queue.DeliveryState, error) {
	for _, st := range []queue.DeliveryState{queue.StateQueued, queue.StateDeferred, queue.StateActive, queue.StateHeld, queue.StateDone} {
		if st.String() == strings.ToLower(s) {
			return st, nil
		}
	}
	return 0, fmt.Errorf("unknown state %q", s)
}

func states(m *queue.Message) string {
	now := time.Now()
	var parts []string
	for _, d := range m.Deliveries {
		parts = append(parts, d.Domain+":"+d.State(now).String())
	}
	return strings.Join(parts, " ")
}

func show(w io.Writer, m *queue.Message) {
	fmt.Fprintf(w, "ID:       %s\nFrom:     <%s>\nCreated:  %s\nExpires:  %s\nSize:     %d\n", m.ID, m.From, m.Created.Format(time.RFC3339), m.Expires.Format(time.RFC3339), m.Size)
	if m.Tenant != "" {
		fmt.Fprintf(w, "Tenant:   %s\n", m.Tenant)
	}
	now := time.Now()
	for _, d := range m.Deliveries {
		fmt.Fprintf(w, "Delivery %d: %s, %s, %d attempt(s), next %s\n", d.Index, d.Domain, d.State(now), d.Attempts, d.NextAttempt.Format(time.RFC3339))
		for _, r := range d.Recipients {
			line := fmt.Sprintf("  <%s> %s", r.Address, r.State)
			if r.LastReply != nil {
				line += fmt.Sprintf(": %d %d.%d.%d %s", r.LastReply.Code, r.LastReply.EnhancedCode[0], r.LastReply.EnhancedCode[1], r.LastReply.EnhancedCode[2], deliver.CleanText(r.LastReply.Message, 200))
			}
			fmt.Fprintln(w, line)
		}
	}
}
