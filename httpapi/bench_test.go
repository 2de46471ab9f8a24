package httpapi

import (
	"net/http/httptest"
	"testing"

	"github.com/streamconductor/stream-conductor/stream"
)

// BenchmarkListStreams1000 serves GET /v1/streams with 1,000 streams.
func BenchmarkListStreams1000(b *testing.B) {
	srv, st, _ := newTestServer(b)
	specs := make([]stream.Spec, 1000)
	for i := range specs {
		specs[i] = stream.Spec{Protocol: stream.TCP, Listen: 10000 + i, Backends: []string{"10.0.0.1:2000"}, Description: "bench"}
	}
	if _, err := st.Import(specs, false); err != nil {
		b.Fatal(err)
	}
	req := httptest.NewRequest("GET", "/v1/streams", nil)
	b.ReportAllocs()
	b.ResetTimer()
	for range b.N {
		rec := httptest.NewRecorder()
		srv.ServeHTTP(rec, req)
		if rec.Code != 200 {
			b.Fatal(rec.Code)
		}
	}
}
