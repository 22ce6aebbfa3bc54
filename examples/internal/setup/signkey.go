//go:build !(openssl && cgo)

package setup

import "crypto"

// signingKey returns k: without the build tag "openssl" the programs sign
// with Go's crypto (see signkey_openssl.go).
func signingKey(k crypto.Signer) (crypto.Signer, string, error) {
	return k, "Go crypto", nil
}
