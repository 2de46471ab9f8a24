package nginxconf

import (
	"net/netip"
	"testing"

	"github.com/streamconductor/stream-conductor/stream"
)

// BenchmarkRender10000 renders 10,000 specs, as a pass that renders
// everything would.
func BenchmarkRender10000(b *testing.B) {
	specs := make([]stream.Spec, 10000)
	for i := range specs {
		mf := 3
		specs[i] = stream.Spec{Protocol: stream.TCP, Listen: 10000 + i, Backends: []string{"10.0.0.1:2000", "backend.internal:2000"},
			Balance: stream.LeastConn, MaxFails: &mf, FailTimeout: "10s", ConnectTimeout: "5s", Allow: []string{"10.0.0.0/8"}}
	}
	o := RenderOptions{Prefix: "stream-"}
	addrs := Addrs{"backend.internal": {netip.MustParseAddr("10.0.0.2")}}
	b.ReportAllocs()
	b.ResetTimer()
	for range b.N {
		for _, s := range specs {
			Render(s, addrs, o)
		}
	}
}

func BenchmarkValidate(b *testing.B) {
	s := stream.Spec{Protocol: stream.TCP, Listen: 9000, Backends: []string{"10.0.0.1:2000", "backend.internal:2000"},
		Balance: stream.LeastConn, ConnectTimeout: "5s", Allow: []string{"10.0.0.0/8"}}
	b.ReportAllocs()
	for range b.N {
		if _, err := Validate(s, Rules{}); err != nil {
			b.Fatal(err)
		}
	}
}
