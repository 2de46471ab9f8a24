package main

import (
	"errors"
	"fmt"
	"io"
	"net"
	"strconv"
	"sync"
	"syscall"
	"time"
)

// earlyWindow is how long after a create's reply a new connection may take
// to get its echo before the reply counts as early (nginx did not serve
// the port yet).
const earlyWindow = 50 * time.Millisecond

// seq creates n streams one after another, then deletes them one after
// another, as a shell loop of curl would: the next request leaves as soon
// as the previous reply arrives. Beside each reply, and without holding
// the loop up, it checks the data plane: after a create, a new connection
// must get its echo within earlyWindow of the reply ("early" otherwise);
// after a delete's 204, a connect must be refused ("not refused"
// otherwise).
func (b *bench) seq(n int) (map[string]any, error) {
	if b.hi-b.lo+1 < n {
		return nil, fmt.Errorf("-ports has fewer than %d ports", n)
	}
	var checks sync.WaitGroup
	var mu sync.Mutex
	var early, notRefused int
	count := func(c *int) {
		mu.Lock()
		*c++
		mu.Unlock()
	}

	creates := make([]time.Duration, 0, n)
	start := time.Now()
	for i := 0; i < n; i++ {
		port := b.lo + i
		t0 := time.Now()
		if _, err := b.put(port, ""); err != nil {
			return nil, err
		}
		replied := time.Now()
		creates = append(creates, replied.Sub(t0))
		checks.Add(1)
		go func() {
			defer checks.Done()
			if !echoBy(port, replied.Add(earlyWindow)) {
				count(&early)
			}
		}()
	}
	createWall := time.Since(start)
	checks.Wait()

	deletes := make([]time.Duration, 0, n)
	start = time.Now()
	for i := 0; i < n; i++ {
		port := b.lo + i
		t0 := time.Now()
		code, raw, err := b.do("DELETE", fmt.Sprintf("/v1/streams/tcp/%d", port), "")
		if err != nil || code != 204 {
			return nil, fmt.Errorf("DELETE %d: %d %s %v", port, code, raw, err)
		}
		deletes = append(deletes, time.Since(t0))
		checks.Add(1)
		go func() {
			defer checks.Done()
			if !refused(port) {
				count(&notRefused)
			}
		}()
	}
	deleteWall := time.Since(start)
	checks.Wait()

	return map[string]any{
		"streams": n, "creates_per_s": float64(n) / createWall.Seconds(), "deletes_per_s": float64(n) / deleteWall.Seconds(),
		"create_p50_ms": ms(pct(creates, 50)), "create_p95_ms": ms(pct(creates, 95)),
		"delete_p50_ms": ms(pct(deletes, 50)), "delete_p95_ms": ms(pct(deletes, 95)),
		"early": early, "not_refused": notRefused,
	}, nil
}

// echoBy reports whether one new connection to port gets its echo before
// deadline.
func echoBy(port int, deadline time.Time) bool {
	d := net.Dialer{Deadline: deadline}
	c, err := d.Dial("tcp", "127.0.0.1:"+strconv.Itoa(port))
	if err != nil {
		return false
	}
	defer c.Close()
	c.SetDeadline(deadline)
	if _, err := c.Write([]byte("ping\n")); err != nil {
		return false
	}
	buf := make([]byte, 5)
	_, err = io.ReadFull(c, buf)
	return err == nil && string(buf) == "ping\n"
}

// refused reports whether a connect to port is refused now (nothing
// listens on it).
func refused(port int) bool {
	c, err := net.DialTimeout("tcp", "127.0.0.1:"+strconv.Itoa(port), time.Second)
	if err == nil {
		c.Close()
		return false
	}
	return errors.Is(err, syscall.ECONNREFUSED)
}
