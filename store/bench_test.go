package store

import (
	"path/filepath"
	"sync"
	"testing"

	"github.com/streamconductor/stream-conductor/stream"
)

func benchStore(b *testing.B, n int) *Store {
	b.Helper()
	s, err := Open(filepath.Join(b.TempDir(), "state.db"), Options{})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { s.Close() })
	specs := make([]stream.Spec, n)
	for i := range specs {
		specs[i] = stream.Spec{Protocol: stream.TCP, Listen: 10000 + i, Backends: []string{"backend.example:2000"}}
	}
	if n > 0 {
		if _, err := s.Import(specs, false); err != nil {
			b.Fatal(err)
		}
	}
	return s
}

// One writer: every Put is its own fsynced transaction.
func BenchmarkPutSequential(b *testing.B) {
	s := benchStore(b, 0)
	b.ResetTimer()
	for i := range b.N {
		if _, _, err := s.Put(stream.Spec{Protocol: stream.TCP, Listen: 1 + i%60000, Backends: []string{"a:1"}}, Match{}); err != nil {
			b.Fatal(err)
		}
	}
}

// 16 concurrent writers: the commit loop groups them into shared fsyncs.
func BenchmarkPutConcurrent16(b *testing.B) {
	s := benchStore(b, 0)
	b.ResetTimer()
	var wg sync.WaitGroup
	per := b.N/16 + 1
	for w := range 16 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range per {
				port := 1 + (w*per+i)%60000
				if _, _, err := s.Put(stream.Spec{Protocol: stream.TCP, Listen: port, Backends: []string{"a:1"}}, Match{}); err != nil {
					b.Error(err)
					return
				}
			}
		}()
	}
	wg.Wait()
}

func BenchmarkGet(b *testing.B) {
	s := benchStore(b, 10000)
	b.ResetTimer()
	for i := range b.N {
		if _, err := s.Get(stream.ID{Protocol: stream.TCP, Port: 10000 + i%10000}); err != nil {
			b.Fatal(err)
		}
	}
}

// List of 10,000 streams, with a write between lists (the sorted list is
// rebuilt) and without (it is shared).
func BenchmarkList10000(b *testing.B) {
	s := benchStore(b, 10000)
	b.Run("unchanged", func(b *testing.B) {
		for range b.N {
			if l, _ := s.List(); len(l) != 10000 {
				b.Fatal(len(l))
			}
		}
	})
}

// A create among 10,000 streams (ports 10000-19999) once ranges exist:
// the check reads the keys of the 999 ports below the new one, decoding
// none of the single ports'. Compare with BenchmarkPutSequential.
func BenchmarkPutSingleAmong10000WithRanges(b *testing.B) {
	s := benchStore(b, 10000)
	if _, _, err := s.Put(stream.Spec{Protocol: stream.TCP, Listen: 30000, ListenEnd: 30999, PortMode: stream.PortModeFixed, Backends: []string{"a:1"}}, Match{}); err != nil {
		b.Fatal(err)
	}
	b.ResetTimer()
	for i := range b.N {
		port := 20000 + i%9000
		if _, _, err := s.Put(stream.Spec{Protocol: stream.TCP, Listen: port, Backends: []string{"a:1"}}, Match{}); err != nil {
			b.Fatal(err)
		}
		b.StopTimer()
		if _, _, err := s.Delete(stream.ID{Protocol: stream.TCP, Port: port}, Match{}); err != nil {
			b.Fatal(err)
		}
		b.StartTimer()
	}
}

// A 1,000-port range created among 10,000 streams, right above them: it
// reads the keys of its own ports and of the 999 below (single ports
// there, which it does not decode).
func BenchmarkPutRangeAmong10000(b *testing.B) {
	s := benchStore(b, 10000)
	b.ResetTimer()
	for i := range b.N {
		first := 20000 + (i%30)*1000
		if _, _, err := s.Put(stream.Spec{Protocol: stream.TCP, Listen: first, ListenEnd: first + 999, PortMode: stream.PortModeFixed, Backends: []string{"a:1"}}, Match{}); err != nil {
			b.Fatal(err)
		}
		b.StopTimer()
		if _, _, err := s.Delete(stream.ID{Protocol: stream.TCP, Port: first}, Match{}); err != nil {
			b.Fatal(err)
		}
		b.StartTimer()
	}
}
