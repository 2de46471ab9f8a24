// Command sc-echo is a small backend for trying stream-conductor out: it
// echoes every TCP connection and UDP datagram it gets, and answers HTTP
// requests with a line naming itself, so that curl through a stream shows
// where the bytes went.
package main

import (
	"bufio"
	"context"
	"flag"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"os/signal"
	"strings"
	"syscall"
)

func main() {
	listen := flag.String("listen", "127.0.0.1:2000", "address to listen on, for TCP and UDP")
	name := flag.String("name", "", "name to answer with (default: the listen address)")
	flag.Parse()
	if *name == "" {
		*name = *listen
	}
	ln, err := net.Listen("tcp", *listen)
	if err != nil {
		log.Fatalf("sc-echo: %v", err)
	}
	pc, err := net.ListenPacket("udp", *listen)
	if err != nil {
		log.Fatalf("sc-echo: %v", err)
	}
	log.Printf("sc-echo %s listening on %s (tcp and udp)", *name, *listen)
	go serveUDP(pc)
	go serveTCP(ln, *name)
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	<-ctx.Done()
}

// serveTCP echoes each connection, or answers it as HTTP if it starts with
// an HTTP method.
func serveTCP(ln net.Listener, name string) {
	for {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		go serveConn(c, name)
	}
}

func serveConn(c net.Conn, name string) {
	defer c.Close()
	r := bufio.NewReader(c)
	if looksLikeHTTP(r) {
		answerHTTP(c, r, name)
		return
	}
	io.Copy(c, r)
}

// looksLikeHTTP peeks at the first bytes for an HTTP method.
func looksLikeHTTP(r *bufio.Reader) bool {
	head, _ := r.Peek(4)
	switch string(head) {
	case "GET ", "HEAD", "POST", "PUT ":
		return true
	}
	return false
}

func answerHTTP(c net.Conn, r *bufio.Reader, name string) {
	for {
		req, err := http.ReadRequest(r)
		if err != nil {
			return
		}
		io.Copy(io.Discard, req.Body)
		body := fmt.Sprintf("hello from sc-echo %s: %s %s\n", name, req.Method, req.URL.RequestURI())
		resp := &http.Response{StatusCode: http.StatusOK, ProtoMajor: 1, ProtoMinor: 1, Request: req,
			Header:        http.Header{"Content-Type": {"text/plain; charset=utf-8"}},
			ContentLength: int64(len(body)), Body: io.NopCloser(strings.NewReader(body))}
		if err := resp.Write(c); err != nil || req.Close {
			return
		}
	}
}

func serveUDP(pc net.PacketConn) {
	buf := make([]byte, 65535)
	for {
		n, addr, err := pc.ReadFrom(buf)
		if err != nil {
			return
		}
		pc.WriteTo(buf[:n], addr)
	}
}
