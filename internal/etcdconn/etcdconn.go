// Package etcdconn holds what every etcd client of stream-conductor dials
// with, the daemon's and the tests' alike.
package etcdconn

import (
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/backoff"
)

// MaxReconnectDelay bounds the wait between two attempts to reach etcd
// again. gRPC's default grows to 2 minutes, so a node whose etcd came back
// after an outage of some seconds could wait tens of seconds more before
// it watched and took writes again.
const MaxReconnectDelay = 2 * time.Second

// DialOptions are the gRPC options of an etcd client: reconnect attempts
// from 100 ms, growing to MaxReconnectDelay.
func DialOptions() []grpc.DialOption {
	return []grpc.DialOption{grpc.WithConnectParams(grpc.ConnectParams{
		Backoff:           backoff.Config{BaseDelay: 100 * time.Millisecond, Multiplier: 1.6, Jitter: 0.2, MaxDelay: MaxReconnectDelay},
		MinConnectTimeout: 5 * time.Second,
	})}
}
