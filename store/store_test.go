package store

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/streamconductor/stream-conductor/desired"
	"github.com/streamconductor/stream-conductor/stream"
)

func openTest(t *testing.T) (*Store, string) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "state.db")
	s, err := Open(path, Options{LockTimeout: 100 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		s.Close()
		// The file must be consistent whatever the test did.
		db, err := bolt.Open(path, 0o600, &bolt.Options{ReadOnly: true})
		if err != nil {
			t.Errorf("reopen for check: %v", err)
			return
		}
		defer db.Close()
		if err := db.View(func(tx *bolt.Tx) error {
			for err := range tx.Check() {
				return err
			}
			return nil
		}); err != nil {
			t.Errorf("consistency check: %v", err)
		}
	})
	return s, path
}

func spec(p stream.Protocol, port int, backend string) stream.Spec {
	return stream.Spec{Protocol: p, Listen: port, Backends: []string{backend}}
}

func TestPutGetListDelete(t *testing.T) {
	s, _ := openTest(t)
	if _, err := s.Get(stream.MustParseID("tcp/9000")); !errors.Is(err, ErrNotFound) {
		t.Fatalf("Get on empty store: %v", err)
	}
	a, prev, err := s.Put(spec(stream.TCP, 9000, "a:1"), Match{})
	if err != nil || prev != nil {
		t.Fatalf("create: %v %v", err, prev)
	}
	if a.Revision != 1 || a.CreatedAt.IsZero() || !a.CreatedAt.Equal(a.UpdatedAt) {
		t.Fatalf("create stamped %+v", a)
	}
	b, prev, err := s.Put(spec(stream.TCP, 9000, "b:1"), Match{Revision: a.Revision})
	if err != nil || prev == nil || prev.Backends[0] != "a:1" {
		t.Fatalf("replace: %v %+v", err, prev)
	}
	if b.Revision != 2 || !b.CreatedAt.Equal(a.CreatedAt) {
		t.Fatalf("replace stamped %+v", b)
	}
	if _, _, err := s.Put(spec(stream.UDP, 53, "c:53"), Match{}); err != nil {
		t.Fatal(err)
	}
	if _, _, err := s.Put(spec(stream.TCP, 10000, "d:1"), Match{}); err != nil {
		t.Fatal(err)
	}
	list, rev := s.List()
	if rev != 4 || len(list) != 3 {
		t.Fatalf("List = %d specs at rev %d", len(list), rev)
	}
	if list[0].ID().String() != "tcp/9000" || list[1].ID().String() != "tcp/10000" || list[2].ID().String() != "udp/53" {
		t.Fatalf("List order: %s %s %s", list[0].ID(), list[1].ID(), list[2].ID())
	}
	got, err := s.Get(stream.MustParseID("tcp/9000"))
	if err != nil || got.Backends[0] != "b:1" {
		t.Fatalf("Get: %+v %v", got, err)
	}
	got.Backends[0] = "mutated"
	if again, _ := s.Get(stream.MustParseID("tcp/9000")); again.Backends[0] != "b:1" {
		t.Fatal("Get returned a spec sharing memory with the store")
	}
	old, drev, err := s.Delete(stream.MustParseID("tcp/9000"), Match{Revision: b.Revision})
	if err != nil || drev != 5 || old.Backends[0] != "b:1" {
		t.Fatalf("Delete: %v rev %d %+v", err, drev, old)
	}
	if _, _, err := s.Delete(stream.MustParseID("tcp/9000"), Match{}); !errors.Is(err, ErrNotFound) {
		t.Fatalf("second Delete: %v", err)
	}
	if s.Revision() != 5 {
		t.Fatalf("a failed write moved the revision to %d", s.Revision())
	}
}

func TestPreconditions(t *testing.T) {
	s, _ := openTest(t)
	a, _, _ := s.Put(spec(stream.TCP, 9000, "a:1"), Match{Absent: true})
	for _, tc := range []struct {
		name string
		m    Match
		id   int
		want error
	}{
		{"create-only on existing", Match{Absent: true}, 9000, ErrExists},
		{"stale revision", Match{Revision: a.Revision + 7}, 9000, ErrRevisionMismatch},
		{"revision on missing", Match{Revision: 1}, 9001, ErrNotFound},
		{"present on missing", Match{Present: true}, 9001, ErrNotFound},
	} {
		if _, _, err := s.Put(spec(stream.TCP, tc.id, "x:1"), tc.m); !errors.Is(err, tc.want) {
			t.Errorf("%s: Put = %v, want %v", tc.name, err, tc.want)
		}
	}
	if _, _, err := s.Delete(stream.MustParseID("tcp/9000"), Match{Revision: a.Revision + 1}); !errors.Is(err, ErrRevisionMismatch) {
		t.Errorf("Delete with stale revision: %v", err)
	}
	if got, _ := s.Get(stream.MustParseID("tcp/9000")); got.Backends[0] != "a:1" || got.Revision != a.Revision {
		t.Errorf("a refused write changed the stream: %+v", got)
	}
}

func TestPersistsAcrossReopen(t *testing.T) {
	path := filepath.Join(t.TempDir(), "state.db")
	s, err := Open(path, Options{})
	if err != nil {
		t.Fatal(err)
	}
	want, _, _ := s.Put(spec(stream.UDP, 5353, "dns:53"), Match{})
	s.Put(spec(stream.TCP, 9000, "x:1"), Match{})
	s.Delete(stream.MustParseID("tcp/9000"), Match{})
	s.Close()

	s, err = Open(path, Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	got, err := s.Get(stream.MustParseID("udp/5353"))
	if err != nil || !got.SameDesired(want) || got.Revision != want.Revision {
		t.Fatalf("after reopen: %+v %v", got, err)
	}
	if s.Revision() != 3 {
		t.Fatalf("revision after reopen %d, want 3", s.Revision())
	}
	if _, err := s.Get(stream.MustParseID("tcp/9000")); !errors.Is(err, ErrNotFound) {
		t.Fatal("deleted stream came back")
	}
}

func TestSecondOpenFailsFast(t *testing.T) {
	_, path := openTest(t)
	start := time.Now()
	_, err := Open(path, Options{LockTimeout: 50 * time.Millisecond})
	if !errors.Is(err, ErrLocked) {
		t.Fatalf("second Open: %v", err)
	}
	if time.Since(start) > 5*time.Second {
		t.Fatal("second Open hung")
	}
}

func TestRejectsOtherSchema(t *testing.T) {
	path := filepath.Join(t.TempDir(), "state.db")
	db, err := bolt.Open(path, 0o600, nil)
	if err != nil {
		t.Fatal(err)
	}
	db.Update(func(tx *bolt.Tx) error {
		b, _ := tx.CreateBucketIfNotExists(bucketMeta)
		return b.Put(keySchema, u64(99))
	})
	db.Close()
	if _, err := Open(path, Options{}); !errors.Is(err, ErrSchema) {
		t.Fatalf("Open of schema 99: %v", err)
	}
}

func TestRejectsGarbageFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "state.db")
	if err := os.WriteFile(path, []byte("this is not a bbolt file, it is too short"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := Open(path, Options{LockTimeout: 100 * time.Millisecond}); err == nil {
		t.Fatal("opened a garbage file")
	}
}

func TestAllocateConcurrentGetsDistinctPorts(t *testing.T) {
	s, _ := openTest(t)
	s.Put(spec(stream.TCP, 9001, "taken:1"), Match{})
	busy := func(port int) bool { return port == 9003 } // held by another process
	const clients = 8
	ports := make(chan int, clients)
	errs := make(chan error, clients)
	var wg sync.WaitGroup
	for range clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			got, err := s.Allocate(spec(stream.TCP, 0, "b:1"), 9000, 9008, busy)
			if err != nil {
				errs <- err
				return
			}
			ports <- got.Listen
		}()
	}
	wg.Wait()
	close(ports)
	close(errs)
	seen := map[int]bool{}
	for p := range ports {
		if seen[p] || p == 9001 || p == 9003 || p < 9000 || p > 9008 {
			t.Errorf("port %d allocated twice, taken, busy or outside the range", p)
		}
		seen[p] = true
	}
	if len(seen) != 7 {
		t.Errorf("%d allocations succeeded, want 7 (9 ports, 1 taken, 1 busy)", len(seen))
	}
	n := 0
	for err := range errs {
		if !errors.Is(err, ErrNoFreePort) {
			t.Errorf("allocation error %v", err)
		}
		n++
	}
	if n != 1 {
		t.Errorf("%d allocations failed, want 1", n)
	}
	// A UDP stream may share a port number with a TCP one.
	if got, err := s.Allocate(spec(stream.UDP, 0, "b:1"), 9000, 9008, nil); err != nil || got.Listen != 9000 {
		t.Errorf("udp allocation: %v %v", got.Listen, err)
	}
}

func TestChangesNotifiesWithoutBlocking(t *testing.T) {
	s, _ := openTest(t)
	for i := range 5 { // more writes than the channel holds
		if _, _, err := s.Put(spec(stream.TCP, 9000+i, "a:1"), Match{}); err != nil {
			t.Fatal(err)
		}
	}
	select {
	case <-s.Changes():
	default:
		t.Fatal("no change notification after writes")
	}
	select {
	case <-s.Changes():
		t.Fatal("notifications did not coalesce")
	default:
	}
	if _, _, err := s.Put(spec(stream.TCP, 9000, "a:1"), Match{Absent: true}); err == nil {
		t.Fatal("create-only write succeeded on an existing stream")
	}
	select {
	case <-s.Changes():
		t.Fatal("a failed write notified")
	default:
	}
}

func TestDamagedFilesAreRefused(t *testing.T) {
	good := filepath.Join(t.TempDir(), "state.db")
	s, err := Open(good, Options{})
	if err != nil {
		t.Fatal(err)
	}
	for port := 9000; port < 9100; port++ {
		s.Put(spec(stream.TCP, port, "backend.example:2000"), Match{})
	}
	s.Close()
	orig, err := os.ReadFile(good)
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name   string
		damage func([]byte) []byte
	}{
		{"truncated to three pages", func(b []byte) []byte { return b[:3*4096] }},
		{"truncated to 100 bytes", func(b []byte) []byte { return b[:100] }},
		{"meta pages overwritten", func(b []byte) []byte {
			c := append([]byte(nil), b...)
			for i := 0; i < 2*4096 && i < len(c); i++ {
				c[i] = 0xAB
			}
			return c
		}},
		{"data pages overwritten", func(b []byte) []byte {
			c := append([]byte(nil), b...)
			for i := 2 * 4096; i < len(c); i++ {
				c[i] = byte(i * 7)
			}
			return c
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "state.db")
			if err := os.WriteFile(path, tc.damage(orig), 0o600); err != nil {
				t.Fatal(err)
			}
			st, err := Open(path, Options{LockTimeout: 100 * time.Millisecond})
			if err == nil {
				list, _ := st.List()
				st.Close()
				t.Fatalf("opened a damaged file with %d streams", len(list))
			}
			if !strings.Contains(err.Error(), path) {
				t.Fatalf("error does not name the file: %v", err)
			}
		})
	}
}

func TestBackupIsAConsistentCopy(t *testing.T) {
	s, _ := openTest(t)
	for port := 9000; port < 9010; port++ {
		s.Put(spec(stream.TCP, port, "b:1"), Match{})
	}
	path := filepath.Join(t.TempDir(), "backup.db")
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	var info desired.BackupInfo
	err = s.Backup(f, func(i desired.BackupInfo) { info = i })
	f.Close()
	fi, _ := os.Stat(path)
	if err != nil || fi.Size() != info.Size || info.Size != s.BackupSize() || info.Revision != s.Revision() {
		t.Fatalf("Backup: %d bytes, told %+v (size %d, revision %d), %v", fi.Size(), info, s.BackupSize(), s.Revision(), err)
	}
	restored, err := Open(path, Options{})
	if err != nil {
		t.Fatalf("the backup does not open: %v", err)
	}
	defer restored.Close()
	list, rev := restored.List()
	if len(list) != 10 || rev != s.Revision() {
		t.Fatalf("backup has %d streams at revision %d", len(list), rev)
	}
}

func TestImportIsAllOrNothingAndPrunes(t *testing.T) {
	s, _ := openTest(t)
	s.Put(spec(stream.TCP, 9000, "keep:1"), Match{})
	s.Put(spec(stream.TCP, 9001, "old:1"), Match{})
	s.Put(spec(stream.UDP, 9002, "gone:1"), Match{})
	in := []stream.Spec{spec(stream.TCP, 9000, "keep:1"), spec(stream.TCP, 9001, "new:1"), spec(stream.TCP, 9003, "fresh:1")}
	if _, err := s.Import(append(in, spec(stream.TCP, 9003, "twice:1")), true); err == nil {
		t.Fatal("an import naming a stream twice was accepted")
	}
	if list, _ := s.List(); len(list) != 3 {
		t.Fatal("a refused import changed the store")
	}
	res, err := s.Import(in, true)
	if err != nil {
		t.Fatal(err)
	}
	if res.Revision != 4 || fmt.Sprint(res.Create) != "[tcp/9003]" || fmt.Sprint(res.Update) != "[tcp/9001]" ||
		fmt.Sprint(res.Delete) != "[udp/9002]" || fmt.Sprint(res.Unchanged) != "[tcp/9000]" {
		t.Fatalf("import %+v", res)
	}
	list, rev := s.List()
	if len(list) != 3 || rev != 4 {
		t.Fatalf("after import: %d streams at %d", len(list), rev)
	}
	if got, _ := s.Get(stream.MustParseID("tcp/9001")); got.Backends[0] != "new:1" || got.Revision != 4 {
		t.Fatalf("tcp/9001 %+v", got)
	}
	if got, _ := s.Get(stream.MustParseID("tcp/9000")); got.Revision != 1 {
		t.Fatal("an unchanged stream was rewritten")
	}
}

// An import that changes nothing takes no revision (nothing to apply, no
// pass to wake); one that changes something reports its own revision.
func TestImportOfNothingTakesNoRevision(t *testing.T) {
	s, _ := openTest(t)
	specs := []stream.Spec{spec(stream.TCP, 9000, "a:1"), spec(stream.TCP, 9001, "b:1")}
	res, err := s.Import(specs, false)
	if err != nil || res.Revision != s.Revision() || len(res.Create) != 2 {
		t.Fatalf("first import: %+v, %v (revision now %d)", res, err, s.Revision())
	}
	before := s.Revision()
	res, err = s.Import(specs, false)
	if err != nil || len(res.Unchanged) != 2 || res.Revision != before || s.Revision() != before {
		t.Fatalf("import of the same: %+v, %v; revision %d -> %d", res, err, before, s.Revision())
	}
}
