//go:build !(openssl && cgo)

package main

import "crypto"

// signingKey returns k: without the build tag "openssl" the relay signs
// with Go's crypto (see signkey_openssl.go).
func signingKey(k crypto.Signer) (crypto.Signer, string, error) {
	return k, "Go crypto", nil
}
