package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"

	"golang.org/x/crypto/bcrypt"

	"github.com/mtakit/mta/submit"
)

type userEntry struct {
	hash []byte
	user submit.User
}

// userDB is the -users file: "name:bcrypt-hash[:sender,sender...]" per
// line, "#" comments.
type userDB map[string]userEntry

// dummyHash is compared against for unknown users, so that a wrong name
// costs as much time as a wrong password.
var dummyHash = []byte("$2a$10$7EqJtq98hPqEX7fNZaFWoOhi5BWX4Z6J2hG8Rj2Uo4bI1i2c6G0kS")

func (db userDB) Authenticate(ctx context.Context, name, password string) (*submit.User, error) {
	e, ok := db[name]
	if !ok {
		_ = bcrypt.CompareHashAndPassword(dummyHash, []byte(password))
		return nil, submit.ErrBadCredentials
	}
	if err := bcrypt.CompareHashAndPassword(e.hash, []byte(password)); err != nil {
		return nil, submit.ErrBadCredentials
	}
	u := e.user
	return &u, nil
}

func loadUsers(file string) (userDB, error) {
	f, err := os.Open(file)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	db := userDB{}
	sc := bufio.NewScanner(f)
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		parts := strings.SplitN(line, ":", 3)
		if len(parts) < 2 || parts[0] == "" {
			return nil, fmt.Errorf("%s:%d: want name:bcrypt-hash[:senders]", file, n)
		}
		if _, err := bcrypt.Cost([]byte(parts[1])); err != nil {
			return nil, fmt.Errorf("%s:%d: not a bcrypt hash: %v", file, n, err)
		}
		u := submit.User{Name: parts[0]}
		if len(parts) == 3 {
			for _, s := range strings.Split(parts[2], ",") {
				if s = strings.TrimSpace(s); s != "" {
					u.Senders = append(u.Senders, s)
				}
			}
		}
		db[parts[0]] = userEntry{hash: []byte(parts[1]), user: u}
	}
	return db, sc.Err()
}

// hashPassword reads a password (first line of stdin) and prints its
// bcrypt hash.
func hashPassword(stdin io.Reader, stdout io.Writer) error {
	line, err := bufio.NewReader(stdin).ReadString('\n')
	if err != nil && !errors.Is(err, io.EOF) {
		return err
	}
	pw := strings.TrimRight(line, "\r\n")
	if pw == "" {
		return errors.New("hash-password: empty password on standard input")
	}
	h, err := bcrypt.GenerateFromPassword([]byte(pw), bcrypt.DefaultCost)
	if err != nil {
		return err
	}
	_, err = fmt.Fprintln(stdout, string(h))
	return err
}
