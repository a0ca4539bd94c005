package testkit

import (
	"io"
	"net"
	"sync"
	"time"
)

// Flood keeps per connections to addr open from each of the local
// addresses sources (any of 127.0.0.0/8 is one on Linux), as a hostile
// process in a pod would: each runs talk (nil: it stays silent) and is
// opened again as soon as the server closes it. Flood returns once every
// connection has been dialled once; stop ends the flood and waits for it.
func Flood(addr string, sources []string, per int, talk func(c net.Conn, closed <-chan struct{})) (stop func()) {
	done := make(chan struct{})
	var wg, dialled sync.WaitGroup
	dialled.Add(len(sources) * per)
	for _, src := range sources {
		for range per {
			wg.Add(1)
			go func() {
				defer wg.Done()
				floodOne(addr, src, talk, done, dialled.Done)
			}()
		}
	}
	dialled.Wait()
	return func() { close(done); wg.Wait() }
}

// floodOne is one connection of a flood, reopened until done; first is
// called after the first dial.
func floodOne(addr, src string, talk func(net.Conn, <-chan struct{}), done <-chan struct{}, first func()) {
	d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(src)}, Timeout: 5 * time.Second}
	for {
		select {
		case <-done:
			return
		default:
		}
		c, err := d.Dial("tcp", addr)
		if first != nil {
			first()
			first = nil
		}
		if err != nil {
			select {
			case <-done:
				return
			case <-time.After(10 * time.Millisecond): // out of ports for a moment: retry
			}
			continue
		}
		closed := make(chan struct{})
		go func() {
			io.Copy(io.Discard, c) // until the server closes it
			close(closed)
		}()
		if talk != nil {
			go talk(c, closed)
		}
		select {
		case <-closed:
		case <-done:
		}
		c.Close()
	}
}

// Slowloris is a Flood's talk that starts an HTTP request and sends one
// more header line every 5 s, never ending it.
func Slowloris(c net.Conn, closed <-chan struct{}) {
	if _, err := io.WriteString(c, "GET /v1/status HTTP/1.1\r\nHost: x\r\n"); err != nil {
		return
	}
	t := time.NewTicker(5 * time.Second)
	defer t.Stop()
	for {
		select {
		case <-closed:
			return
		case <-t.C:
			if _, err := io.WriteString(c, "X-Slow: 1\r\n"); err != nil {
				return
			}
		}
	}
}
