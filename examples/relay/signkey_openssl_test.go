//go:build openssl && cgo

package main

func init() {
	buildFlags = []string{"-tags=openssl"}
	rsaSigner = "OpenSSL libcrypto"
}
