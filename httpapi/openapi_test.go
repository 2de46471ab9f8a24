package httpapi

import (
	"encoding/json"
	"reflect"
	"slices"
	"strings"
	"testing"

	"github.com/gorilla/mux"
)

type openAPIDoc struct {
	Paths      map[string]map[string]json.RawMessage `json:"paths"`
	Components struct {
		Schemas map[string]struct {
			Required   []string                   `json:"required"`
			Properties map[string]json.RawMessage `json:"properties"`
		} `json:"schemas"`
	} `json:"components"`
}

func loadOpenAPI(t *testing.T) openAPIDoc {
	t.Helper()
	var doc openAPIDoc
	if err := json.Unmarshal(openAPI, &doc); err != nil {
		t.Fatalf("openapi.json: %v", err)
	}
	return doc
}

// Every route the router serves is in the document, with its method, and
// the document names no route that does not exist.
func TestOpenAPICoversEveryRoute(t *testing.T) {
	srv, _, _ := newTestServer(t)
	srv.cfg.Metrics = nil
	doc := loadOpenAPI(t)
	seen := map[string]bool{}
	err := srv.router.Walk(func(route *mux.Route, _ *mux.Router, _ []*mux.Route) error {
		path, err := route.GetPathTemplate()
		if err != nil {
			return nil
		}
		methods, _ := route.GetMethods()
		for _, m := range methods {
			op := strings.ToLower(m)
			seen[op+" "+path] = true
			if _, ok := doc.Paths[path][op]; !ok {
				t.Errorf("%s %s is served but not in openapi.json", m, path)
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	for path, ops := range doc.Paths {
		for op := range ops {
			if op == "parameters" || path == "/metrics" {
				continue // /metrics is served only when metrics are wired
			}
			if !seen[op+" "+path] {
				t.Errorf("openapi.json documents %s %s, which is not served", op, path)
			}
		}
	}
}

// Real answers have the shape the document gives them: every required
// property is there, and every property is documented.
func TestOpenAPIShapesMatchAnswers(t *testing.T) {
	srv, _, _ := newTestServer(t)
	doc := loadOpenAPI(t)
	do(t, srv, call{method: "PUT", path: "/v1/streams/tcp/9001", body: `{"backend":"a:1","allow":["10.0.0.0/8"],"description":"x"}`})
	check := func(name string, body map[string]any) {
		t.Helper()
		schema, ok := doc.Components.Schemas[name]
		if !ok {
			t.Fatalf("no schema %s", name)
		}
		for _, req := range schema.Required {
			if _, ok := body[req]; !ok {
				t.Errorf("%s: answer lacks required %q: %v", name, req, body)
			}
		}
		for k := range body {
			if _, ok := schema.Properties[k]; !ok {
				t.Errorf("%s: answer has undocumented %q", name, k)
			}
		}
	}
	_, stream := do(t, srv, call{method: "GET", path: "/v1/streams/tcp/9001"})
	check("Stream", stream)
	do(t, srv, call{method: "PUT", path: "/v1/streams/tcp/9003", body: `{"routes":[{"server_name":"a.example","backends":["a:1","b:1"]}],"default":"c:1"}`})
	_, routed := do(t, srv, call{method: "GET", path: "/v1/streams/tcp/9003"})
	check("Stream", routed)
	if _, ok := routed["routes"]; !ok {
		t.Errorf("a routed stream shows no routes: %v", routed)
	}
	check("Route", routed["routes"].([]any)[0].(map[string]any))
	check("Status", stream["status"].(map[string]any))
	_, list := do(t, srv, call{method: "GET", path: "/v1/streams"})
	check("StreamList", list)
	_, st := do(t, srv, call{method: "GET", path: "/v1/status"})
	check("NodeStatus", st)
	_, e := do(t, srv, call{method: "PUT", path: "/v1/streams/tcp/9001", body: `{"backend":"a;"}`})
	check("Error", e)
	_, dry := do(t, srv, call{method: "PUT", path: "/v1/streams/tcp/9002?dry_run=true", body: `{"backend":"a:1"}`})
	check("DryRun", dry)
	_, audit := do(t, srv, call{method: "GET", path: "/v1/audit"})
	check("Audit", audit)
	_, ready := do(t, srv, call{method: "GET", path: "/readyz"})
	check("Ready", ready)
	_, exp := do(t, srv, call{method: "GET", path: "/v1/export"})
	check("Export", exp)
	_, nodes := do(t, srv, call{method: "GET", path: "/v1/nodes"})
	check("NodeList", nodes)
	check("Node", nodes["nodes"].([]any)[0].(map[string]any))
	// The input schema lists exactly the fields the decoder accepts.
	typ := reflect.TypeOf(specRequest{})
	var fields []string
	for i := range typ.NumField() {
		fields = append(fields, strings.Split(typ.Field(i).Tag.Get("json"), ",")[0])
	}
	in := doc.Components.Schemas["StreamInput"].Properties
	for _, f := range fields {
		if _, ok := in[f]; !ok {
			t.Errorf("StreamInput lacks %q, which the API accepts", f)
		}
	}
	if len(in) != len(fields) {
		t.Errorf("StreamInput documents %d fields, the API accepts %d", len(in), len(fields))
	}
	for _, name := range []string{"Stream", "StreamInput"} {
		if len(doc.Components.Schemas[name].Properties) == 0 {
			t.Errorf("schema %s is empty", name)
		}
	}
	if !slices.Contains(doc.Components.Schemas["Stream"].Required, "status") {
		t.Error("Stream must require status")
	}
}
