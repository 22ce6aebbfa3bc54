// Package submit is the front door of the MTA: a go-smtp server backend
// for message submission (RFC 6409) and trusted relaying, which checks,
// completes, signs and durably enqueues every message before it replies
// 250.
//
// # Who may relay
//
// A client may hand over mail for any recipient only when it is
// authenticated (AUTH PLAIN or LOGIN, RFC 4954, through the host
// application's [Authenticator]) or when its address is in
// Config.TrustedNetworks (Postfix's mynetworks) on a listener that does
// not require AUTH. AUTH is offered only on TLS (STARTTLS or implicit TLS,
// RFC 8314) unless the listener allows it in clear. Everyone else is
// refused: "530 5.7.0 Authentication required" at MAIL when the listener
// offers AUTH, "554 5.7.1 Relay access denied" at RCPT when it does not.
// There is no open-relay configuration.
//
// # Smuggling safety
//
// go-smtp ends DATA only at CRLF "." CRLF, but a message that carries a
// bare LF or CR can still be read differently by the next hop (the "SMTP
// smuggling" attacks of 2023: "<LF>.<LF>" taken as the end of data by a
// lenient receiver). The session therefore refuses, by default, any DATA
// with a bare LF, a bare CR or a NUL (550 5.6.0), lines longer than RFC
// 5321 §4.5.3.1.6 allows (1000 octets with CRLF, 500 5.5.2 by default)
// and a header section over the size or field limits. Config.BareLineEndings
// can normalise bare LF and CR to CRLF instead. MAIL FROM, RCPT TO and the
// EHLO name with control characters are refused (501 5.5.2), so nothing
// unclean reaches the Received field or a DSN.
//
// # Header completion and signing
//
// RFC 6409 §8 lets a submission server complete a message: a missing
// Date and Message-ID are added, and a Received field (RFC 5321 §4.4) is
// prepended with the client's EHLO name and address, the protocol
// (ESMTP, ESMTPS, ESMTPA, ESMTPSA, or UTF8SMTP… with SMTPUTF8, RFC 6531
// §3.7.3), the transaction ID and "for <rcpt>" when there is one
// recipient. A message without exactly one From field is refused (550
// 5.6.0, RFC 5322 §3.6). Messages whose From domain has a key in
// Config.DKIM are signed before they are stored.
//
// # Storage
//
// DATA is spooled once (in memory up to Config.SpoolMemory, then to a
// temporary file), the header section is parsed from the spool, and the
// queue reads the completed message as a stream. The 250 reply is sent
// only after the queue returned, so after the message is durable, and it
// carries the queue ID: "250 2.0.0 OK: queued as <id>". Store failures are
// "451 4.3.0".
package submit
