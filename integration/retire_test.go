package integration

import (
	"fmt"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// quitsFromDaemon counts the lines in which an nginx worker logged a
// SIGQUIT sent by the daemon itself (early retirement): the master tells
// its old workers to stop on their channel, which logs no signal.
func quitsFromDaemon(t *testing.T, d *daemon) int {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(d.dataDir, "nginx", "error.log"))
	if err != nil {
		t.Fatal(err)
	}
	re := regexp.MustCompile(`signal 3 \(SIGQUIT\) received from ` + strconv.Itoa(d.cmd.Process.Pid) + `\b`)
	return len(re.FindAll(b, -1))
}

// A DELETE's 204 means the port refuses, with no polling, and the daemon
// retired the old workers itself rather than wait for the master's
// 100 ms sleep. The master may still be first when nginx starts its new
// workers slowly (a loaded machine), so the test deletes up to 20 times
// and requires one early retirement among them; every 204 must mean
// refused.
func TestRetireDeleteRefusedAtOnce(t *testing.T) {
	t.Parallel()
	d := startDaemon(t, 2)
	e := startEcho(t, "A:")
	gone, kept := d.portMin, d.portMin+1
	d.mustPut("tcp", kept, `{"backend":"`+e.addr()+`"}`)
	before := quitsFromDaemon(t, d)
	deletes := 0
	for deletes < 20 && quitsFromDaemon(t, d) == before {
		d.mustPut("tcp", gone, `{"backend":"`+e.addr()+`"}`)
		mustEcho(t, gone, "A:")
		if code, _ := d.api("DELETE", fmt.Sprintf("/v1/streams/tcp/%d", gone), ""); code != 204 {
			t.Fatalf("DELETE: %d", code)
		}
		deletes++
		if c, err := net.DialTimeout("tcp", "127.0.0.1:"+strconv.Itoa(gone), time.Second); err == nil {
			c.Close()
			t.Fatalf("delete %d: the port still accepts connections after DELETE answered", deletes)
		}
		mustEcho(t, kept, "A:")
	}
	if quitsFromDaemon(t, d) == before {
		t.Fatalf("no old worker logged a SIGQUIT from the daemon in %d deletes: the old workers were left to the master", deletes)
	}
	t.Logf("early retirement after delete %d", deletes)
}

// While changes that replace or remove other streams are applied one
// after another (each retiring old workers early), connections on
// unchanged ports keep carrying traffic and new connections to them are
// all served: issue 13's "0 dropped connections, 0 refused new
// connections on unchanged ports".
func TestRetireDropsNothing(t *testing.T) {
	t.Parallel()
	const kept, others, changes = 8, 4, 80
	d := startDaemon(t, kept+others)
	a, b := startEcho(t, "A:"), startEcho(t, "B:")
	for i := 0; i < kept+others; i++ {
		d.mustPut("tcp", d.portMin+i, `{"backend":"`+a.addr()+`"}`)
	}
	before := quitsFromDaemon(t, d)

	stop := make(chan struct{})
	var wg sync.WaitGroup
	halt := sync.OnceFunc(func() { close(stop); wg.Wait() })
	defer halt() // a failed change ends the traffic too
	var trips, dropped, opened, refused atomic.Int64
	var firstErr sync.Once
	var errMsg atomic.Value
	fail := func(c *atomic.Int64, err error) {
		c.Add(1)
		firstErr.Do(func() { errMsg.Store(err.Error()) })
	}
	for i := 0; i < kept; i++ {
		c, err := net.Dial("tcp", "127.0.0.1:"+strconv.Itoa(d.portMin+i))
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		wg.Add(1)
		go func(i int, c net.Conn) {
			defer wg.Done()
			for n := 0; n < 1000000; n++ {
				select {
				case <-stop:
					return
				default:
				}
				msg := fmt.Sprintf("long %d %d\n", i, n)
				if got, err := roundTrip(c, msg); err != nil || got != "A:"+msg {
					fail(&dropped, fmt.Errorf("long-lived connection %d, trip %d: %q %v", i, n, got, err))
					return
				}
				trips.Add(1)
			}
		}(i, c)
	}
	wg.Add(1)
	go func() {
		defer wg.Done()
		for n := 0; n < 200000; n++ {
			select {
			case <-stop:
				return
			default:
			}
			port := d.portMin + n%kept
			msg := fmt.Sprintf("new %d\n", n)
			if got, err := echo(t, port, msg); err != nil || got != "A:"+msg {
				fail(&refused, fmt.Errorf("new connection %d to port %d: %q %v", n, port, got, err))
				continue
			}
			opened.Add(1)
		}
	}()

	// Each other stream in turn: replaced, replaced back, deleted,
	// created again; three of every four changes need retirement.
	retiring := 0
	for i := 0; i < changes; i++ {
		port := d.portMin + kept + i%others
		path := fmt.Sprintf("/v1/streams/tcp/%d", port)
		switch (i / others) % 4 {
		case 0:
			d.mustPut("tcp", port, `{"backend":"`+b.addr()+`"}`)
			retiring++
		case 1:
			d.mustPut("tcp", port, `{"backend":"`+a.addr()+`"}`)
			retiring++
		case 2:
			if code, _ := d.api("DELETE", path, ""); code != 204 {
				t.Errorf("DELETE %s: %d", path, code)
			}
			retiring++
		case 3:
			d.mustPut("tcp", port, `{"backend":"`+a.addr()+`"}`)
		}
	}
	halt()

	t.Logf("%d changes (%d retiring), %d round trips on %d long-lived connections, %d new connections",
		changes, retiring, trips.Load(), kept, opened.Load())
	if dropped.Load() != 0 || refused.Load() != 0 {
		t.Fatalf("%d long-lived connections dropped, %d new connections failed; first: %v",
			dropped.Load(), refused.Load(), errMsg.Load())
	}
	if trips.Load() < kept || opened.Load() == 0 {
		t.Fatalf("too little traffic to tell: %d round trips, %d new connections", trips.Load(), opened.Load())
	}
	early := quitsFromDaemon(t, d) - before
	t.Logf("%d old workers retired early by the daemon", early)
	if early == 0 {
		t.Fatal("no old worker logged a SIGQUIT from the daemon: nothing was retired early")
	}
}
