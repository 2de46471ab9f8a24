package reconcile

import (
	"context"
	"os"
	"path/filepath"
	"syscall"
	"testing"
	"time"
)

// A reader blocked opening a FIFO named like our file (as nginx's include
// would be) is released with an empty read, and the watch ends once the
// FIFO is gone.
func TestUnblockFIFOReleasesAReader(t *testing.T) {
	path := filepath.Join(t.TempDir(), "stream-tcp-9000.conf")
	if err := syscall.Mkfifo(path, 0o644); err != nil {
		t.Fatal(err)
	}
	read := make(chan error, 1)
	go func() {
		b, err := os.ReadFile(path) // blocks in open() until a writer comes
		if err == nil && len(b) != 0 {
			err = os.ErrInvalid
		}
		read <- err
	}()
	done := make(chan struct{})
	go func() {
		unblockFIFO(context.Background(), path)
		close(done)
	}()
	select {
	case err := <-read:
		if err != nil {
			t.Fatalf("reader: %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the reader is still blocked on the FIFO")
	}
	os.Remove(path)
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("unblockFIFO did not return once the FIFO was gone")
	}
}
