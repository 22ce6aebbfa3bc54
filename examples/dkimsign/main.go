// Command dkimsign signs a message with DKIM, or makes a signing key.
//
// Signing reads the message from standard input and writes it to standard
// output with a DKIM-Signature field prepended:
//
//	dkimsign -domain example.com -selector mail2026 -key mail2026.pem < msg.eml > signed.eml
//
// The message is spooled to a temporary file and read once for signing,
// then copied out behind the signature, the way an MTA signs a message it
// has on disk. Line endings (CRLF or LF) are kept.
//
// Making a key writes a new private key (PKCS#8 PEM, mode 0600; an
// existing file is never overwritten) and prints the DNS record to publish:
//
//	dkimsign -genkey ed25519 -domain example.com -selector mail2026 -key mail2026.pem
//	mail2026._domainkey.example.com. IN TXT "v=DKIM1; k=ed25519; p=..."
//
// Flags:
//
//	-domain d        signing domain (d=), required
//	-selector s      selector (s=), required
//	-key file        private key: PKCS#8 or PKCS#1 PEM (RSA 2048+ or Ed25519)
//	-canon h/b       canonicalization, default relaxed/relaxed (e.g. relaxed/simple)
//	-genkey alg      make a key instead of signing: rsa (2048 bits) or ed25519
//
// Exit status: 0 on success, 1 on errors, 2 on bad flags.
package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"

	"github.com/mtakit/mta/auth/dkim"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	os.Exit(realMain(ctx, os.Args[1:], os.Stdin, os.Stdout, os.Stderr))
}

func realMain(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("dkimsign", flag.ContinueOnError)
	fs.SetOutput(stderr)
	domain := fs.String("domain", "", "signing domain (d=)")
	selector := fs.String("selector", "", "selector (s=)")
	keyFile := fs.String("key", "", "private key file (PEM)")
	canon := fs.String("canon", "relaxed/relaxed", "canonicalization header/body")
	genkey := fs.String("genkey", "", "make a key (rsa or ed25519) instead of signing")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if *domain == "" || *selector == "" || *keyFile == "" || fs.NArg() != 0 {
		fmt.Fprintln(stderr, "dkimsign: -domain, -selector and -key are required")
		fs.Usage()
		return 2
	}
	if *genkey != "" {
		return makeKey(dkim.Algorithm(*genkey), *domain, *selector, *keyFile, stdout, stderr)
	}
	hc, bc, err := dkim.ParseCanonicalization(*canon)
	if err != nil {
		fmt.Fprintln(stderr, "dkimsign:", err)
		return 2
	}
	pemData, err := os.ReadFile(*keyFile)
	if err != nil {
		fmt.Fprintln(stderr, "dkimsign:", err)
		return 1
	}
	key, err := dkim.ParsePrivateKeyPEM(pemData)
	if err != nil {
		fmt.Fprintln(stderr, "dkimsign:", err)
		return 1
	}
	signer, err := dkim.NewSigner(dkim.SignerConfig{
		Keys:                   []dkim.SignKey{{Domain: *domain, Selector: *selector, Key: key}},
		HeaderCanonicalization: hc,
		BodyCanonicalization:   bc,
	})
	if err != nil {
		fmt.Fprintln(stderr, "dkimsign:", err)
		return 1
	}
	if err := sign(ctx, signer, stdin, stdout); err != nil {
		fmt.Fprintln(stderr, "dkimsign:", err)
		return 1
	}
	return 0
}

// sign spools stdin to a temporary file, signs it in one pass and writes
// signature + message.
func sign(ctx context.Context, signer *dkim.Signer, stdin io.Reader, stdout io.Writer) error {
	f, err := os.CreateTemp("", "dkimsign-*.eml")
	if err != nil {
		return err
	}
	defer os.Remove(f.Name())
	defer f.Close()
	if _, err := io.Copy(f, stdin); err != nil {
		return err
	}
	if _, err := f.Seek(0, io.SeekStart); err != nil {
		return err
	}
	sig, err := signer.Sign(ctx, f)
	if err != nil {
		return err
	}
	if _, err := f.Seek(0, io.SeekStart); err != nil {
		return err
	}
	if _, err := io.WriteString(stdout, sig); err != nil {
		return err
	}
	_, err = io.Copy(stdout, f)
	return err
}

func makeKey(alg dkim.Algorithm, domain, selector, keyFile string, stdout, stderr io.Writer) int {
	key, err := dkim.GenerateKey(alg, nil)
	if err != nil {
		fmt.Fprintln(stderr, "dkimsign:", err)
		return 2
	}
	pemData, err := dkim.MarshalPrivateKeyPEM(key)
	if err != nil {
		fmt.Fprintln(stderr, "dkimsign:", err)
		return 1
	}
	f, err := os.OpenFile(keyFile, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		fmt.Fprintln(stderr, "dkimsign:", err)
		return 1
	}
	if _, err := f.Write(pemData); err != nil {
		f.Close()
		fmt.Fprintln(stderr, "dkimsign:", err)
		return 1
	}
	if err := f.Sync(); err != nil {
		f.Close()
		fmt.Fprintln(stderr, "dkimsign:", err)
		return 1
	}
	if err := f.Close(); err != nil {
		fmt.Fprintln(stderr, "dkimsign:", err)
		return 1
	}
	line, err := dkim.KeyTXT(selector, domain, key.Public())
	if err != nil {
		fmt.Fprintln(stderr, "dkimsign:", err)
		return 1
	}
	fmt.Fprintln(stdout, line)
	return 0
}
