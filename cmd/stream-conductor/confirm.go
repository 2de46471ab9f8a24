package main

import (
	"fmt"
	"io"
)

// runConfirm confirms the fleet's state in etcd as it is: every node that
// holds its copy (etcd restored from an older backup, another cluster, a
// mass deletion outside the API) applies it.
func runConfirm(c *client, o *opts, _ []string, out io.Writer) error {
	var res struct {
		Confirmed struct {
			By        string `json:"by"`
			At        string `json:"at"`
			ClusterID string `json:"cluster_id"`
			Revision  uint64 `json:"revision"`
		} `json:"confirmed"`
		Alarm map[string]any `json:"alarm_cleared"`
	}
	if err := c.do("POST", "/v1/state/confirm", nil, nil, &res); err != nil {
		return err
	}
	if o.output != "table" {
		return emit(out, o.output, res)
	}
	fmt.Fprintf(out, "confirmed etcd's state at revision %d (cluster %s): every node that holds applies it\n",
		res.Confirmed.Revision, res.Confirmed.ClusterID)
	if res.Alarm != nil {
		fmt.Fprintf(out, "this node held: %v\n", res.Alarm["message"])
	}
	return nil
}
