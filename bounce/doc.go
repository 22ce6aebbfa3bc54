// Package bounce handles everything that happens after a delivery attempt
// fails: it classifies SMTP replies, builds and parses delivery status
// notifications, parses feedback-loop complaints, signs return paths and
// keeps a suppression list.
//
// The package imports nothing else of this module. It speaks go-smtp's
// vocabulary: a remote reply is a *smtp.SMTPError, so [Classify] reads what a
// transport returned unchanged.
//
// # Building DSNs
//
// [NewDSN] writes a complete RFC 3464 delivery status notification: an
// RFC 5322 header (with Auto-Submitted: auto-replied, RFC 3834 §5), and a
// multipart/report; report-type=delivery-status body (RFC 6522) holding a
// human-readable text/plain part, the message/delivery-status part and, on
// request, the original message (message/rfc822, RET=FULL) or its header
// (text/rfc822-headers, RET=HDRS, the default). The original is streamed,
// never loaded whole. Values taken from outside (remote reply text,
// addresses, host names) are stripped of control characters and capped in
// length before they are written. When an address or a reply is not ASCII,
// the status part becomes message/global-delivery-status and addresses use
// the "utf-8" address type (RFC 6533 §3, §6).
//
// # Classifying replies
//
// [Classify] (and [Classifier] for user rules) turns a reply into a
// [Classification]: permanent or transient, a stable [Category], and
// whether the recipient address itself is bad (the only verdict that should
// suppress an address). Rules look at the RFC 3463 enhanced status code
// first, then the basic reply code, then text patterns used by large mailbox
// providers. The default rules are data (rules.txt, embedded) in the format
// described at [ParseRules].
//
// # Parsing bounces and complaints
//
// [Parse] reads an incoming bounce: RFC 3464 multipart/report DSNs and the
// plain-text formats of Postfix, Exim, Sendmail, qmail, Courier, Exchange,
// Gmail and others, by recognising their generic structures rather than
// individual senders. It also recognises auto-replies (RFC 3834) and ARF
// complaints (RFC 5965, [ParseARF]). Input is bounded: header size, MIME
// depth, part count and bytes read are capped by [Parser] and
// exceeding them returns an error wrapping [ErrTooLarge] or [ErrTooComplex].
//
// The MIME walker is the package's own: it bounds every header section,
// the nesting depth and the number of entities, and tolerates the broken
// boundaries and line endings common in bounces. go-message is used by the
// tests to check that generated DSNs parse with a general MIME library.
//
// # Signed return paths
//
// [VERP] encodes a message ID and recipient in the envelope sender's local
// part, authenticated by a truncated HMAC-SHA256 with a day number for
// expiry, and verifies them when a bounce arrives.
//
// # Suppression
//
// [SuppressionList] stores addresses that must not be mailed again; there is
// an in-memory implementation and a durable file-backed one. [Decide] says
// which entry, if any, a classification or complaint yields.
package bounce
