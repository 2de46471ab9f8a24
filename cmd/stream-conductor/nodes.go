package main

import (
	"fmt"
	"io"
	"text/tabwriter"
	"time"

	"github.com/streamconductor/stream-conductor/stream"
)

// runNodes lists the fleet's nodes (GET /v1/nodes): with etcd every node
// whose registration lease is alive, with bbolt this node alone.
func runNodes(c *client, o *opts, _ []string, out io.Writer) error {
	var doc struct {
		Nodes []stream.NodeInfo `json:"nodes"`
	}
	if err := c.do("GET", "/v1/nodes", nil, nil, &doc); err != nil {
		return err
	}
	if o.output != "table" {
		return emit(out, o.output, doc.Nodes)
	}
	w := tabwriter.NewWriter(out, 0, 4, 2, ' ', 0)
	fmt.Fprintln(w, "NAME\tAPI\tVERSION\tAPPLIED\tNGINX\tACTIVE\tFAILED\tLAST SEEN")
	for _, n := range doc.Nodes {
		nginx := "down"
		if n.NginxRunning {
			nginx = "up"
		}
		fmt.Fprintf(w, "%s\t%s\t%s\t%d\t%s\t%d\t%d\t%s\n", n.Name, n.API, n.Version, n.AppliedRevision,
			nginx, n.Streams.Active, n.Streams.Failed, n.LastSeen.UTC().Format(time.RFC3339))
	}
	return w.Flush()
}
