// Package openssl is an RSA signing key for DKIM backed by OpenSSL's
// libcrypto, for hosts where DKIM signing is the bottleneck.
//
// Go's crypto/rsa is portable and constant-time but, on x86-64 with
// AVX-512 IFMA, three times slower than OpenSSL 3 for RSA-2048 private-key
// operations (0.71 ms against 0.22 ms per signature on this project's
// benchmark machine). A relay that signs every message spends most of its
// CPU there; OpenDKIM, the usual signer beside Postfix, uses OpenSSL. [Wrap]
// turns an *rsa.PrivateKey into a crypto.Signer that computes the same
// signatures (RSASSA-PKCS1-v1_5 is deterministic, so they are byte for byte
// those of crypto/rsa) with libcrypto, and plugs into [dkim.SignKey] like
// any other key.
//
// The package needs cgo and OpenSSL's headers (Debian: libssl-dev), so it
// is built only with the build tag "openssl":
//
//	go build -tags openssl ./examples/relay
//
// Without the tag the package is empty and nothing in the module links
// OpenSSL; examples/relay and examples/sendapi then sign with crypto/rsa.
//
// [dkim.SignKey]: https://pkg.go.dev/github.com/mtakit/mta/auth/dkim#SignKey
package openssl
