package traffic

import (
	"net"
	"testing"
	"time"
)

func TestRecordsNginxSessionLines(t *testing.T) {
	c, err := Listen("127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	go c.Run()
	conn, err := net.Dial("udp", c.Addr())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	for _, line := range []string{
		"<190>Nov 24 20:48:00 stream_conductor: 9000 TCP 127.0.0.1 10.0.0.1:2000 120 80 0.010 200",
		"<190>Nov 24 20:48:01 stream_conductor: 9000 TCP 127.0.0.1 10.0.0.2:2000 30 20 0.002 200",
		"<190>Nov 24 20:48:02 stream_conductor: 9000 TCP 127.0.0.1 10.0.0.1:2000, 10.0.0.2:2000 0 0 0.001 502",
		"<190>Nov 24 20:48:03 stream_conductor: 53 UDP 127.0.0.1 10.0.0.53:53 64 32 0.000 200",
		"<190>Nov 24 20:48:03 stream_conductor: garbage",
	} {
		conn.Write([]byte(line))
	}
	deadline := time.Now().Add(5 * time.Second)
	for time.Now().Before(deadline) {
		if s := c.Get("udp/53"); s != nil {
			break
		}
		time.Sleep(5 * time.Millisecond)
	}
	tcp := c.Get("tcp/9000")
	if tcp == nil || tcp.Sessions != 3 || tcp.BytesOut != 150 || tcp.BytesIn != 100 || tcp.ConnectFailures != 1 {
		t.Fatalf("tcp/9000: %+v", tcp)
	}
	if tcp.Backends["10.0.0.1:2000"] != 1 || tcp.Backends["10.0.0.2:2000"] != 2 {
		t.Fatalf("per backend: %v", tcp.Backends)
	}
	if udp := c.Get("udp/53"); udp == nil || udp.Sessions != 1 || udp.BytesIn != 32 {
		t.Fatalf("udp/53: %+v", udp)
	}
	if c.Get("tcp/1") != nil {
		t.Fatal("stats for a stream that carried nothing")
	}
}
