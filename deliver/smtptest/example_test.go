package smtptest_test

import (
	"fmt"
	"net/smtp"

	"github.com/mtakit/mta/deliver/smtptest"
)

// A server that greylists: the first attempt for a recipient gets 451,
// the second is accepted.
func ExampleGreylist() {
	srv, err := smtptest.Start(smtptest.Config{OnRcpt: smtptest.Greylist()})
	if err != nil {
		panic(err)
	}
	defer srv.Close()
	send := func() error {
		return smtp.SendMail(srv.Addr(), nil, "a@example.test", []string{"b@example.test"}, []byte("Subject: x\r\n\r\nhi\r\n"))
	}
	fmt.Println(send())
	fmt.Println(send(), len(srv.Messages()))
	// Output:
	// 451 "4.7.1 greylisted, try again later"
	// <nil> 1
}
