package natsrun

import (
	"net"
	"testing"
)

// FreePort never hands out a port twice, and never one a listener on port 0
// could be given meanwhile (it stays below the ephemeral range).
func TestFreePort(t *testing.T) {
	lo, hi := freePortRange()
	seen := map[int]bool{}
	for range 200 {
		p, err := FreePort()
		if err != nil {
			t.Fatal(err)
		}
		if p < lo || p >= hi {
			t.Fatalf("port %d outside [%d, %d)", p, lo, hi)
		}
		if seen[p] {
			t.Fatalf("port %d handed out twice", p)
		}
		seen[p] = true
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	if p := l.Addr().(*net.TCPAddr).Port; p >= lo && p < hi {
		t.Fatalf("the kernel gave port %d to a listener on port 0, inside FreePort's range [%d, %d)", p, lo, hi)
	}
}
