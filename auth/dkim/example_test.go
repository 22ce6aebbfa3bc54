package dkim_test

import (
	"context"
	"fmt"
	"log"
	"strings"
	"time"

	"github.com/mtakit/mta/auth/dkim"
	"github.com/mtakit/mta/resolver"
	"github.com/mtakit/mta/resolver/dnstest"
)

// Sign a message with an Ed25519 key and print what to publish in DNS.
func Example() {
	key, err := dkim.GenerateKey(dkim.Ed25519, nil)
	if err != nil {
		log.Fatal(err)
	}
	signer, err := dkim.NewSigner(dkim.SignerConfig{
		Keys: []dkim.SignKey{{Domain: "example.com", Selector: "mail2026", Key: key}},
		// Relaxed/relaxed is the default; the relay uses relaxed/simple.
		BodyCanonicalization: dkim.Simple,
	})
	if err != nil {
		log.Fatal(err)
	}
	msg := "From: alice@example.com\r\nTo: bob@example.org\r\nSubject: hi\r\n\r\nHello.\r\n"
	// Sign reads the message once; prepend the result to the stored message.
	sig, err := signer.Sign(context.Background(), strings.NewReader(msg))
	if err != nil {
		log.Fatal(err)
	}
	signed := sig + msg
	fmt.Println(strings.HasPrefix(signed, "DKIM-Signature:"))

	txt, err := dkim.KeyTXT("mail2026", "example.com", key.Public())
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println(txt[:strings.Index(txt, "p=")+2] + "...")
	// Output:
	// true
	// mail2026._domainkey.example.com. IN TXT "v=DKIM1; k=ed25519; p=...
}

// Verify a signed message; keys come from DNS (here a loopback test server).
func ExampleVerifier() {
	key, err := dkim.GenerateKey(dkim.Ed25519, nil)
	if err != nil {
		log.Fatal(err)
	}
	record, err := dkim.KeyTXT("sel", "example.com", key.Public())
	if err != nil {
		log.Fatal(err)
	}
	srv, err := dnstest.NewServer(record)
	if err != nil {
		log.Fatal(err)
	}
	defer srv.Close()
	res, err := resolver.New(resolver.Config{Servers: []string{srv.Addr}, Timeout: 2 * time.Second})
	if err != nil {
		log.Fatal(err)
	}
	verifier, err := dkim.NewVerifier(dkim.VerifierConfig{Resolver: res})
	if err != nil {
		log.Fatal(err)
	}
	signer, err := dkim.NewSigner(dkim.SignerConfig{Keys: []dkim.SignKey{{Domain: "example.com", Selector: "sel", Key: key}}})
	if err != nil {
		log.Fatal(err)
	}
	msg := "From: alice@example.com\r\nSubject: hi\r\n\r\nHello.\r\n"
	sig, err := signer.Sign(context.Background(), strings.NewReader(msg))
	if err != nil {
		log.Fatal(err)
	}
	for _, tampered := range []bool{false, true} {
		m := sig + msg
		if tampered {
			m = strings.Replace(m, "Hello.", "Hello!", 1)
		}
		results, err := verifier.Verify(context.Background(), strings.NewReader(m))
		if err != nil {
			log.Fatal(err)
		}
		for _, r := range results {
			line := fmt.Sprintf("%s d=%s s=%s a=%s", r.Status, r.Domain, r.Selector, r.Algorithm)
			if r.Reason != "" {
				line += ": " + r.Reason
			}
			fmt.Println(line)
		}
	}
	// Output:
	// pass d=example.com s=sel a=ed25519-sha256
	// fail d=example.com s=sel a=ed25519-sha256: body hash did not verify
}
