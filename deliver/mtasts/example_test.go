package mtasts_test

import (
	"fmt"

	"github.com/mtakit/mta/deliver/mtasts"
)

func ExampleParse() {
	p, err := mtasts.Parse("version: STSv1\r\nmode: enforce\r\nmx: mail.example.com\r\nmx: *.example.net\r\nmax_age: 604800\r\n")
	if err != nil {
		panic(err)
	}
	fmt.Println(p.Mode, p.MaxAge, p.Match("mx1.example.net"), p.Match("example.net"))
	// Output: enforce 168h0m0s true false
}
