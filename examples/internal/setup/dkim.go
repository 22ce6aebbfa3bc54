package setup

import (
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"

	"github.com/mtakit/mta/auth/dkim"
)

// DKIMConfig is what the -dkim-* flags give.
type DKIMConfig struct {
	// Domains, Selectors and Keys (PEM files) are paired by position. A
	// missing selector is the last one given, or "default"; a domain
	// without a key file gets, with KeyDir, a key generated there on first
	// use.
	Domains, Selectors, Keys []string
	// Canonicalization is "header/body"; empty: relaxed/simple.
	Canonicalization string
	// KeyDir, when set, receives generated keys
	// (<selector>._domainkey.<domain>.pem).
	KeyDir string
	// Program prefixes what is printed ("relay", "sendapi").
	Program string
}

// LoadDKIM builds the key ring and prints, for each domain, which code
// signs (Go's crypto, or OpenSSL with the build tag openssl) and the DNS
// record to publish. No domain: nil, nothing is signed.
func LoadDKIM(cfg DKIMConfig, stdout io.Writer) (*dkim.KeyRing, error) {
	if len(cfg.Domains) == 0 {
		if len(cfg.Keys) > 0 {
			return nil, errors.New("-dkim-key needs -dkim-domain")
		}
		return nil, nil
	}
	canon := cfg.Canonicalization
	if canon == "" {
		canon = "relaxed/simple"
	}
	hc, bc, err := dkim.ParseCanonicalization(canon)
	if err != nil {
		return nil, fmt.Errorf("-dkim-canon: %w", err)
	}
	ring := dkim.NewKeyRing(dkim.SignerConfig{HeaderCanonicalization: hc, BodyCanonicalization: bc})
	for i, domain := range cfg.Domains {
		sel := pick(cfg.Selectors, i, "default")
		file := pick(cfg.Keys, i, "")
		if file == "" {
			if cfg.KeyDir == "" {
				return nil, fmt.Errorf("-dkim-key: no key file for %s", domain)
			}
			file = filepath.Join(cfg.KeyDir, sel+"._domainkey."+domain+".pem")
			made, err := generateKey(file)
			if err != nil {
				return nil, err
			}
			if made {
				fmt.Fprintf(stdout, "%s: generated DKIM key %s\n", cfg.Program, file)
			}
		}
		data, err := os.ReadFile(file)
		if err != nil {
			return nil, fmt.Errorf("-dkim-key: %w", err)
		}
		k, err := dkim.ParsePrivateKeyPEM(data)
		if err != nil {
			return nil, fmt.Errorf("-dkim-key %s: %w", file, err)
		}
		sk, backend, err := signingKey(k)
		if err != nil {
			return nil, fmt.Errorf("-dkim-key %s: %w", file, err)
		}
		if err := ring.Set(domain, dkim.SignKey{Domain: domain, Selector: sel, Key: sk}); err != nil {
			return nil, fmt.Errorf("dkim %s: %w", domain, err)
		}
		if txt, err := dkim.KeyTXT(sel, domain, k.Public()); err == nil {
			fmt.Fprintf(stdout, "%s: DKIM signing for %s with %s; publish in DNS:\n%s\n", cfg.Program, domain, backend, txt)
		}
	}
	return ring, nil
}

// generateKey writes a new RSA-2048 key to file unless the file exists.
func generateKey(file string) (bool, error) {
	if _, err := os.Stat(file); !errors.Is(err, os.ErrNotExist) {
		return false, err
	}
	k, err := dkim.GenerateKey(dkim.RSA, nil)
	if err != nil {
		return false, err
	}
	pem, err := dkim.MarshalPrivateKeyPEM(k)
	if err != nil {
		return false, err
	}
	if err := os.MkdirAll(filepath.Dir(file), 0o700); err != nil {
		return false, err
	}
	return true, os.WriteFile(file, pem, 0o600)
}

// pick is vals[i]; past the end, the last value when there is a default
// (selectors), else def (key files: none).
func pick(vals []string, i int, def string) string {
	switch {
	case i < len(vals):
		return vals[i]
	case len(vals) > 0 && def != "":
		return vals[len(vals)-1]
	}
	return def
}
