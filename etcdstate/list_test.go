package etcdstate

import (
	"fmt"
	"testing"

	"github.com/streamconductor/stream-conductor/desired"
)

// List answers as of now (another node's writes that returned are in it)
// from the local copy, once the watch delivered the state's revision: a
// reconcile pass does not read and decode every stream from etcd again.
func TestListAnswersFromTheLocalCopyAsOfNow(t *testing.T) {
	needEtcd(t)
	prefix := newPrefix()
	reader := openState(t, sharedClient, prefix, Options{})
	writer := openState(t, newClient(t), prefix, Options{})
	before := reader.fullReads.Load()
	for i := range 20 {
		stored, _, err := writer.Put(spec(9000+i, "10.0.0.1:1"), desired.Match{})
		if err != nil {
			t.Fatal(err)
		}
		list, rev := reader.List()
		if len(list) != i+1 || rev != stored.Revision || list[i].Listen != 9000+i || list[i].Revision != stored.Revision {
			t.Fatalf("after the other node's write %d (revision %d): List = %d streams at revision %d; want %d at %d",
				i, stored.Revision, len(list), rev, i+1, stored.Revision)
		}
	}
	if n := reader.fullReads.Load() - before; n != 0 {
		t.Fatalf("20 Lists read every stream from etcd %d times; want 0", n)
	}
}

// BenchmarkList is a pass's read of the desired state at 1,000 streams.
func BenchmarkList(b *testing.B) {
	if shared == nil {
		b.Skip(noEtcd)
	}
	st, err := Open(sharedClient, newPrefix(), Options{})
	if err != nil {
		b.Fatal(err)
	}
	defer st.Close()
	for i := range 1000 {
		if _, _, err := st.Put(spec(10000+i, fmt.Sprintf("10.0.%d.%d:1", i/250, i%250+1)), desired.Match{}); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportAllocs()
	b.ResetTimer()
	for range b.N {
		if list, _ := st.List(); len(list) != 1000 {
			b.Fatalf("%d streams", len(list))
		}
	}
}
