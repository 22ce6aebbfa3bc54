// Package dkim signs and verifies DomainKeys Identified Mail (RFC 6376)
// with RSA (rsa-sha256, RFC 8301) and Ed25519 (ed25519-sha256, RFC 8463)
// keys, on top of github.com/emersion/go-msgauth.
//
// # Signing
//
// A [Signer] adds one DKIM-Signature per [SignKey], so an RSA and an
// Ed25519 signature can be made side by side. [Signer.Sign] reads the
// message once and returns only the signature field(s): a message stored
// on disk is signed without being copied, and the caller writes the
// signature followed by the original file. Relaxed/relaxed
// canonicalization is the default; relaxed/simple and the others are one
// field away.
//
// The h= list holds each configured field once per instance present, and
// the over-signed fields (From, To, Cc, Subject, Date, Message-ID,
// Reply-To, Sender, the MIME fields, List-Unsubscribe) once more, so that a
// field of that name added in transit breaks the signature (RFC 6376
// §5.4.2, §8.15). A [KeyRing] picks the keys of many sending domains by the
// envelope sender's or the From field's domain, falling back to the
// nearest parent domain.
//
// # Keys
//
// [GenerateKey] makes RSA-2048 or Ed25519 keys, [MarshalPrivateKeyPEM]
// writes them as PKCS#8 PEM, [ParsePrivateKeyPEM] reads PKCS#8 and PKCS#1,
// and [KeyTXT] prints the exact zone-file record to publish, split into
// character-strings of at most 255 octets. [ParseKeyRecord] reads a
// published record and [PublicKeyRecord.Matches] compares it with a
// private key.
//
// # Verifying
//
// A [Verifier] reports one [Result] per signature: pass, fail with a
// reason, temperror (DNS trouble: try later) or permerror, with d=, s=, a=,
// i= and c= for DMARC and Authentication-Results. Keys are fetched through
// the project's resolver (go-msgauth's LookupTXT hook, bridged with a
// closure over ctx) and kept in a key cache for their TTL.
//
// Body length limits: a signature with l= never passes. RFC 6376 §8.2
// lets anyone append text after the signed length, so such a signature
// says nothing about what the reader sees; it is reported as fail, with
// [Result.BodyLength] set and [Result.BodyAppended] telling whether
// content follows the signed part ("body length limit ... does not cover
// the whole body").
//
// # Hostile input
//
// The header section is read by this package first, with a byte cap and a
// field-count cap ([ErrHeaderTooLarge], [ErrTooManyFields]), before
// go-msgauth (whose header reading is quadratic on pathological folding)
// sees it. At most VerifierConfig.MaxSignatures signatures are verified
// per message; the others are reported as permerror without DNS queries.
// Domain, selector and identifier values that could break the signature
// field (controls, ";", "=", spaces, backslashes) are refused when signing.
package dkim
