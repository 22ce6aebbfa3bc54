//go:build openssl && cgo

package openssl

/*
#cgo LDFLAGS: -lcrypto
#include <openssl/evp.h>
#include <openssl/rsa.h>
#include <openssl/err.h>
#include <stdio.h>

// Every wrapper reports a failure in err (at most errn bytes) from the
// OpenSSL error queue of the thread it ran on: the queue is per thread,
// and a goroutine may change threads between two cgo calls. The setters
// are macros in OpenSSL 1.1 and functions in 3.x; the wrappers compile
// against both.
static void mta_error(char *err, size_t errn) {
	unsigned long e = ERR_get_error();
	ERR_clear_error();
	if (e == 0) {
		snprintf(err, errn, "no OpenSSL error code");
		return;
	}
	ERR_error_string_n(e, err, errn);
}

static EVP_PKEY *mta_load(const unsigned char *der, long n, int *size, char *err, size_t errn) {
	const unsigned char *p = der;
	EVP_PKEY *k = d2i_AutoPrivateKey(NULL, &p, n);
	if (k == NULL) {
		mta_error(err, errn);
		return NULL;
	}
	*size = EVP_PKEY_size(k);
	return k;
}

static EVP_PKEY_CTX *mta_new_ctx(EVP_PKEY *k, char *err, size_t errn) {
	EVP_PKEY_CTX *ctx = EVP_PKEY_CTX_new(k, NULL);
	if (ctx == NULL) {
		mta_error(err, errn);
		return NULL;
	}
	if (EVP_PKEY_sign_init(ctx) <= 0 ||
	    EVP_PKEY_CTX_set_rsa_padding(ctx, RSA_PKCS1_PADDING) <= 0 ||
	    EVP_PKEY_CTX_set_signature_md(ctx, EVP_sha256()) <= 0) {
		mta_error(err, errn);
		EVP_PKEY_CTX_free(ctx);
		return NULL;
	}
	return ctx;
}

static int mta_sign(EVP_PKEY_CTX *ctx, unsigned char *sig, size_t *n,
		const unsigned char *digest, size_t dn, char *err, size_t errn) {
	if (EVP_PKEY_sign(ctx, sig, n, digest, dn) <= 0) {
		mta_error(err, errn);
		return 0;
	}
	return 1;
}
*/
import "C"

import (
	"crypto"
	"crypto/rsa"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"runtime"
	"sync"
	"unsafe"
)

// Key is an RSA private key held by OpenSSL. It is safe for concurrent use.
type Key struct {
	goKey *rsa.PrivateKey
	st    *state
}

// state is what the cleanup frees: the OpenSSL key and a free list of
// signing contexts, each initialised for PKCS#1 v1.5 with SHA-256, so that
// a signature costs no algorithm lookup (OpenSSL 3 fetches algorithms
// under a lock whenever a context is initialised).
type state struct {
	pkey *C.EVP_PKEY
	mu   sync.Mutex
	free []*C.EVP_PKEY_CTX
}

// ErrKey is wrapped by the errors of Wrap.
var ErrKey = errors.New("openssl: unusable key")

// errBuf holds an OpenSSL error message.
type errBuf [256]C.char

func (b *errBuf) String() string { return C.GoString(&b[0]) }

// Wrap returns an OpenSSL-backed signer for key. It signs PKCS#1 v1.5 with
// SHA-256 in libcrypto; other hashes and PSS go to crypto/rsa, with the
// same result. The key material is copied into OpenSSL's memory, which is
// freed when the returned Key is no longer reachable.
func Wrap(key *rsa.PrivateKey) (*Key, error) {
	if key == nil {
		return nil, fmt.Errorf("%w: nil key", ErrKey)
	}
	if err := key.Validate(); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrKey, err)
	}
	der, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrKey, err)
	}
	var eb errBuf
	var size C.int
	pkey := C.mta_load((*C.uchar)(unsafe.Pointer(&der[0])), C.long(len(der)), &size, &eb[0], C.size_t(len(eb)))
	clear(der)
	if pkey == nil {
		return nil, fmt.Errorf("%w: OpenSSL cannot load it: %s", ErrKey, eb.String())
	}
	if int(size) != key.Size() {
		C.EVP_PKEY_free(pkey)
		return nil, fmt.Errorf("%w: OpenSSL sees a %d-byte key, Go a %d-byte one", ErrKey, int(size), key.Size())
	}
	k := &Key{goKey: key, st: &state{pkey: pkey}}
	runtime.AddCleanup(k, func(s *state) { s.release() }, k.st)
	return k, nil
}

// Public returns the *rsa.PublicKey.
func (k *Key) Public() crypto.PublicKey { return &k.goKey.PublicKey }

// Sign signs digest, which must be the hash of the message under
// opts.HashFunc(), exactly as crypto/rsa's SignPKCS1v15 would. rand is not
// used for SHA-256: PKCS#1 v1.5 signatures are deterministic, and OpenSSL
// blinds the private-key operation with its own random source.
func (k *Key) Sign(rand io.Reader, digest []byte, opts crypto.SignerOpts) ([]byte, error) {
	if opts == nil {
		return nil, errors.New("openssl: sign: nil SignerOpts")
	}
	if _, pss := opts.(*rsa.PSSOptions); pss || opts.HashFunc() != crypto.SHA256 {
		return k.goKey.Sign(rand, digest, opts)
	}
	if len(digest) != crypto.SHA256.Size() {
		return nil, fmt.Errorf("openssl: digest is %d bytes, SHA-256 needs 32", len(digest))
	}
	defer runtime.KeepAlive(k)
	var eb errBuf
	ctx, err := k.st.get(&eb)
	if err != nil {
		return nil, err
	}
	sig := make([]byte, k.goKey.Size())
	n := C.size_t(len(sig))
	if C.mta_sign(ctx, (*C.uchar)(unsafe.Pointer(&sig[0])), &n,
		(*C.uchar)(unsafe.Pointer(&digest[0])), C.size_t(len(digest)), &eb[0], C.size_t(len(eb))) == 0 {
		C.EVP_PKEY_CTX_free(ctx)
		return nil, fmt.Errorf("openssl: sign: %s", eb.String())
	}
	k.st.put(ctx)
	return sig[:n], nil
}

func (s *state) get(eb *errBuf) (*C.EVP_PKEY_CTX, error) {
	s.mu.Lock()
	if n := len(s.free); n > 0 {
		ctx := s.free[n-1]
		s.free = s.free[:n-1]
		s.mu.Unlock()
		return ctx, nil
	}
	s.mu.Unlock()
	ctx := C.mta_new_ctx(s.pkey, &eb[0], C.size_t(len(eb)))
	if ctx == nil {
		return nil, fmt.Errorf("openssl: signing context: %s", eb.String())
	}
	return ctx, nil
}

// maxIdle bounds the contexts kept for reuse: more than the signatures
// made at once would be waste.
const maxIdle = 64

func (s *state) put(ctx *C.EVP_PKEY_CTX) {
	s.mu.Lock()
	if len(s.free) < maxIdle {
		s.free = append(s.free, ctx)
		ctx = nil
	}
	s.mu.Unlock()
	if ctx != nil {
		C.EVP_PKEY_CTX_free(ctx)
	}
}

func (s *state) release() {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, ctx := range s.free {
		C.EVP_PKEY_CTX_free(ctx)
	}
	s.free = nil
	C.EVP_PKEY_free(s.pkey)
	s.pkey = nil
}
