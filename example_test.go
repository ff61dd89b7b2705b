package sockfactory_test

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"time"

	"github.com/sockfactory/sockfactory"
)

// A Dialer plugs into http.Transport: every connection the HTTP client
// makes comes from the daemon.
func ExampleDialer() {
	// A web server on loopback, standing in for the service to reach.
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprint(w, "hello through sockfactory")
	}))
	defer srv.Close()

	// The zero Dialer talks to the daemon at DefaultSocketPath().
	d := &sockfactory.Dialer{Timeout: 5 * time.Second}
	defer d.Close()
	tr := &http.Transport{DialContext: d.DialContext}
	defer tr.CloseIdleConnections()
	client := &http.Client{Transport: tr}

	resp, err := client.Get(srv.URL)
	if err != nil {
		log.Fatal(err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println(resp.Status)
	fmt.Println(string(body))
	// Output:
	// 200 OK
	// hello through sockfactory
}

func ExampleClient_DialContext() {
	// A line-upcasing service on loopback, standing in for the one to reach.
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		log.Fatal(err)
	}
	defer l.Close()
	go func() {
		conn, err := l.Accept()
		if err != nil {
			return
		}
		defer conn.Close()
		line, _ := bufio.NewReader(conn).ReadString('\n')
		io.WriteString(conn, strings.ToUpper(line))
	}()

	// One Client serves any number of goroutines; the zero value talks to
	// the daemon at DefaultSocketPath().
	c := &sockfactory.Client{}
	defer c.Close()

	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	conn, err := c.DialContext(ctx, "tcp", l.Addr().String())
	if err != nil {
		log.Fatal(err)
	}
	defer conn.Close()
	// A native socket, as net.Dial would return: no proxy in between.
	fmt.Printf("%T\n", conn)

	fmt.Fprintln(conn, "hello")
	reply, err := bufio.NewReader(conn).ReadString('\n')
	if err != nil {
		log.Fatal(err)
	}
	fmt.Print(reply)
	// Output:
	// *net.TCPConn
	// HELLO
}

// Errors from the daemon match the package's sentinels with errors.Is.
func ExampleClient_DialContext_denied() {
	c := &sockfactory.Client{}
	defer c.Close()

	// An address the daemon's policy does not grant this user.
	conn, err := c.DialContext(context.Background(), "tcp", "203.0.113.10:443")
	switch {
	case errors.Is(err, sockfactory.ErrDenied):
		fmt.Println("denied by the daemon's policy")
	case err != nil:
		log.Fatal(err)
	default:
		conn.Close()
		log.Fatal("connected to an address the policy does not grant")
	}

	// The daemon's own words are in an *Error, for people.
	var e *sockfactory.Error
	if errors.As(err, &e) {
		fmt.Println("code:", e.Code)
	}
	// Output:
	// denied by the daemon's policy
	// code: denied
}
