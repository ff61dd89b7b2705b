package daemon

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"syscall"
	"testing"
	"time"

	"github.com/sockfactory/sockfactory/internal/config"
	"github.com/sockfactory/sockfactory/internal/wire"
)

// scrape fetches path from the metrics UNIX socket at sock; "" while it
// does not answer.
func scrape(sock, path string) (int, string) {
	c := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
		var d net.Dialer
		return d.DialContext(ctx, "unix", sock)
	}}}
	resp, err := c.Get("http://sockfactoryd" + path)
	if err != nil {
		return 0, ""
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// sample returns the value of the series line (name and labels, as
// exposed) in a scrape, or -1.
func sample(body, series string) float64 {
	m := regexp.MustCompile(`(?m)^` + regexp.QuoteMeta(series) + ` (\S+)$`).FindStringSubmatch(body)
	if m == nil {
		return -1
	}
	v, _ := strconv.ParseFloat(m[1], 64)
	return v
}

// waitSample scrapes until series has value want.
func waitSample(t *testing.T, sock, series string, want float64) string {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	var body string
	for {
		_, body = scrape(sock, "/metrics")
		if sample(body, series) == want {
			return body
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: got %v; want %v", series, sample(body, series), want)
		}
		time.Sleep(5 * time.Millisecond) // polling: a scrape has no event to wait on
	}
}

// TestMetricsDaemon runs the daemon in process with [metrics] listen on a
// UNIX socket: it serves /metrics and /healthz, counts a native request
// and each reload by its result, reports the connections of both front
// doors, and removes the socket when it stops.
func TestMetricsDaemon(t *testing.T) {
	for _, env := range []string{"NOTIFY_SOCKET", "LISTEN_FDS", "LISTEN_PID", "FDSTORE", "WATCHDOG_USEC"} {
		t.Setenv(env, "")
		os.Unsetenv(env)
	}
	dir := t.TempDir()
	native, msock, cwsock := filepath.Join(dir, "sf.sock"), filepath.Join(dir, "metrics.sock"), filepath.Join(dir, "cw.sock")
	doc := fmt.Sprintf("[daemon]\nsocket = %q\nsocket_mode = \"0600\"\n[metrics]\nlisten = %q\n[[rule]]\nname = \"me\"\nusers = [%d]\nconnect = [\"127.0.0.1:*\"]\n"+
		"[[clearwater]]\nsocket = %q\nallowed_hosts = [\"127.0.0.1\"]\nusers = [%d]\n", native, msock, os.Getuid(), cwsock, os.Getuid())
	cfg, err := config.Parse("test.toml", []byte(doc))
	if err != nil {
		t.Fatal(err)
	}
	loads := make(chan error, 2)
	sigs := make(chan os.Signal, 1)
	rc := make(chan int, 1)
	go func() {
		rc <- Run(Options{
			Config: cfg,
			Load: func() (*config.Config, error) {
				if err := <-loads; err != nil {
					return nil, err
				}
				return config.Parse("test.toml", []byte(doc))
			},
			Logger:  slog.New(slog.DiscardHandler),
			Signals: sigs,
		})
	}()
	stopped := false
	defer func() {
		if !stopped {
			sigs <- syscall.SIGTERM
			<-rc
		}
	}()

	body := waitSample(t, msock, `sockfactory_last_reload_successful`, 1)
	if code, h := scrape(msock, "/healthz"); code != http.StatusOK || h != "ok\n" {
		t.Errorf("/healthz: %d %q; want 200 ok", code, h)
	}
	if !regexp.MustCompile(`(?m)^sockfactory_build_info\{.*version=".+"\} 1$`).MatchString(body) {
		t.Errorf("no sockfactory_build_info line with a version in\n%.2000s", body)
	}

	nc, err := net.Dial("unixpacket", native)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := nc.Write([]byte(`{"v":1,"id":1,"op":"hello","hello":{"app":"metrics-test"}}`)); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, wire.MaxMessageSize)
	n, err := nc.Read(buf)
	if err != nil {
		t.Fatal(err)
	}
	if rep, err := wire.DecodeReply(buf[:n]); err != nil || !rep.OK {
		t.Fatalf("hello: %q, %v", buf[:n], err)
	}
	waitSample(t, msock, `sockfactory_requests_total{code="ok",door="native",op="hello"}`, 1)
	waitSample(t, msock, `sockfactory_connections{door="native"}`, 1)
	nc.Close()
	waitSample(t, msock, `sockfactory_connections{door="native"}`, 0)

	// A Clearwater client that has not sent its request yet is a
	// connection being served; it counts until it goes away.
	waitSample(t, msock, `sockfactory_connections{door="clearwater"}`, 0)
	cw, err := net.Dial("unix", cwsock)
	if err != nil {
		t.Fatal(err)
	}
	waitSample(t, msock, `sockfactory_connections{door="clearwater"}`, 1)
	cw.Close()
	waitSample(t, msock, `sockfactory_connections{door="clearwater"}`, 0)

	loads <- errors.New("broken file")
	sigs <- syscall.SIGHUP
	waitSample(t, msock, `sockfactory_reloads_total{result="failure"}`, 1)
	waitSample(t, msock, `sockfactory_last_reload_successful`, 0)
	loads <- nil
	sigs <- syscall.SIGHUP
	waitSample(t, msock, `sockfactory_reloads_total{result="success"}`, 1)
	waitSample(t, msock, `sockfactory_last_reload_successful`, 1)

	sigs <- syscall.SIGTERM
	stopped = true
	if code := <-rc; code != 0 {
		t.Fatalf("Run returned %d; want 0", code)
	}
	if _, err := os.Lstat(msock); !os.IsNotExist(err) {
		t.Errorf("metrics socket after the stop: %v; want it removed", err)
	}
}

// TestRestartNeededMetrics: a reload that moves the metrics listener says
// it takes a restart.
func TestRestartNeededMetrics(t *testing.T) {
	old, c := config.Default(), config.Default()
	c.MetricsListen = "127.0.0.1:9477"
	if got := restartNeeded(old, c); len(got) != 1 || got[0] != "metrics.listen" {
		t.Fatalf("restartNeeded = %q; want [metrics.listen]", got)
	}
}
