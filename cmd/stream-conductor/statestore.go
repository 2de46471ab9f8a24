package main

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"time"

	"github.com/rs/zerolog"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"

	"github.com/streamconductor/stream-conductor/desired"
	"github.com/streamconductor/stream-conductor/etcdstate"
	"github.com/streamconductor/stream-conductor/httpapi"
	"github.com/streamconductor/stream-conductor/internal/etcdconn"
	"github.com/streamconductor/stream-conductor/internal/safefile"
	"github.com/streamconductor/stream-conductor/store"
	"github.com/streamconductor/stream-conductor/stream"
)

// stateConfig says where the desired state lives: STATE_STORE and, for
// etcd, the cluster, the key prefix and the credentials.
type stateConfig struct {
	Store        string // bbolt or etcd
	Endpoints    []string
	Prefix       string
	CACert       string
	Cert, Key    string
	Username     string
	PasswordFile string
	NodeName     string
	NodeTTL      time.Duration
}

// parseStateConfig reads STATE_STORE, ETCD_* and NODE_NAME.
func parseStateConfig(v func(string) string) (stateConfig, error) {
	c := stateConfig{Store: v("state-store"), Prefix: v("etcd-prefix"), CACert: v("etcd-cacert"), Cert: v("etcd-cert"),
		Key: v("etcd-key"), Username: v("etcd-username"), PasswordFile: v("etcd-password-file"), NodeName: v("node-name")}
	if c.NodeName == "" {
		c.NodeName, _ = os.Hostname()
	}
	ttl, err := time.ParseDuration(v("node-ttl"))
	if err != nil || ttl < 2*time.Second || ttl > 5*time.Minute {
		return c, fmt.Errorf("NODE_TTL must be a duration from 2s to 5m such as 10s, not %q", v("node-ttl"))
	}
	c.NodeTTL = ttl
	switch c.Store {
	case "bbolt":
		return c, nil
	case "etcd":
	default:
		return c, fmt.Errorf("STATE_STORE must be bbolt or etcd, not %q", c.Store)
	}
	for _, e := range strings.Split(v("etcd-endpoints"), ",") {
		if e = strings.TrimSpace(e); e == "" {
			continue
		}
		if u, err := url.Parse(e); err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			return c, fmt.Errorf("ETCD_ENDPOINTS must be http:// or https:// URLs such as https://10.0.0.1:2379, not %q", e)
		}
		c.Endpoints = append(c.Endpoints, e)
	}
	switch {
	case len(c.Endpoints) == 0:
		return c, errors.New("STATE_STORE=etcd needs ETCD_ENDPOINTS, the etcd cluster's client URLs")
	case !strings.HasPrefix(c.Prefix, "/") || strings.TrimRight(c.Prefix, "/") == "":
		return c, fmt.Errorf("ETCD_PREFIX must be a key prefix such as /stream-conductor, not %q", c.Prefix)
	case (c.Cert == "") != (c.Key == ""):
		return c, errors.New("give ETCD_CERT and ETCD_KEY together")
	case (c.Username == "") != (c.PasswordFile == ""):
		return c, errors.New("give ETCD_USERNAME and ETCD_PASSWORD_FILE together")
	}
	return c, nil
}

// stateStore is the desired state as the daemon wires it: the bbolt store
// or the etcd state.
type stateStore interface {
	desired.State
	Changes() <-chan struct{}
	BackupSize() int64
	Close() error
}

// openStore opens the desired state STATE_STORE names, and says where it
// is for messages.
func openStore(cfg config, log zerolog.Logger) (stateStore, string, error) {
	if cfg.State.Store == "etcd" {
		return openEtcdState(cfg, filepath.Join(cfg.DataDir, cacheFile), log)
	}
	dbPath := filepath.Join(cfg.DataDir, "state.db")
	st, err := store.Open(dbPath, store.Options{AuditRetention: cfg.AuditRetention, AuditMaxBytes: cfg.AuditMaxBytes})
	if errors.Is(err, store.ErrLocked) {
		return nil, "", fmt.Errorf("%s is in use by another stream-conductor; stop it or give this one another -data-dir", dbPath)
	}
	if err != nil {
		return nil, "", fmt.Errorf("%w; if the file is damaged, move it aside and restore a backup into %s", err, dbPath)
	}
	return st, dbPath, nil
}

// etcdState is the etcd state with the client it owns.
type etcdState struct {
	*etcdstate.State
	cli *clientv3.Client
}

// Close stops the state, then its client.
func (e etcdState) Close() error {
	e.State.Close()
	return e.cli.Close()
}

// cacheFile is the etcd state's local copy in DATA_DIR: what the node
// forwards when it starts while etcd is unreachable.
const cacheFile = "fleet-cache.db"

// openEtcdState connects to the cluster and opens the state under the
// prefix, with the node's local copy at cachePath (none when empty: the
// migrate command is no node). An unreachable cluster is an error (the
// daemon does not start) unless cachePath holds the copy of an earlier
// run: then the node starts from it, stale, and connects in the background.
func openEtcdState(cfg config, cachePath string, log zerolog.Logger) (stateStore, string, error) {
	sc := cfg.State
	where := "etcd " + strings.Join(sc.Endpoints, ",") + " under " + sc.Prefix
	ec := clientv3.Config{Endpoints: sc.Endpoints, DialTimeout: 5 * time.Second, DialOptions: etcdconn.DialOptions(), Username: sc.Username, Logger: zap.NewNop()}
	if sc.PasswordFile != "" {
		b, err := os.ReadFile(sc.PasswordFile)
		if err != nil {
			return nil, "", fmt.Errorf("ETCD_PASSWORD_FILE: %w", err)
		}
		ec.Password = strings.TrimSpace(string(b))
	}
	tlsc, err := etcdTLS(sc)
	if err != nil {
		return nil, "", err
	}
	ec.TLS = tlsc
	cli, err := clientv3.New(ec)
	if err != nil {
		return nil, "", fmt.Errorf("%s: %w", where, err)
	}
	lg := log.With().Str("node", sc.NodeName).Logger()
	st, err := etcdstate.Open(cli, sc.Prefix, etcdstate.Options{AuditRetention: cfg.AuditRetention, Log: &lg,
		CachePath: cachePath, Node: sc.NodeName})
	if err != nil {
		cli.Close()
		return nil, "", fmt.Errorf("%w; check ETCD_ENDPOINTS, the credentials (ETCD_CACERT, ETCD_CERT, ETCD_KEY, ETCD_USERNAME) and that the cluster has a leader", err)
	}
	if st.Condition().Stale != nil {
		return etcdState{State: st, cli: cli}, where, nil
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if resp, err := cli.Status(ctx, sc.Endpoints[0]); err == nil {
		log.Info().Str("node", sc.NodeName).Str("etcd", where).Str("etcd_version", resp.Version).
			Uint64("cluster_id", resp.Header.ClusterId).Msg("the desired state is in etcd")
	}
	return etcdState{State: st, cli: cli}, where, nil
}

// registerNode puts this node in the fleet's node registry (STATE_STORE=
// etcd) until the returned registration's Close, which takes it out; info
// says what the node knows of itself. With bbolt there is no registry: the
// lister and the registration are nil and GET /v1/nodes shows this node
// alone. A NODE_NAME that another live node holds is an error (the daemon
// does not start). While etcd does not answer, the node registers in the
// background, trying again until it can.
func registerNode(ctx context.Context, cfg config, st stateStore, info func() stream.NodeInfo, log zerolog.Logger) (httpapi.NodeLister, *registration, error) {
	e, ok := st.(etcdState)
	if !ok {
		return nil, nil, nil
	}
	lg := log.With().Str("node", cfg.State.NodeName).Logger()
	opts := etcdstate.NodeOptions{TTL: cfg.State.NodeTTL, Log: &lg}
	if id, err := instanceID(cfg.DataDir); err == nil {
		opts.Instance = id
	} else {
		log.Warn().Err(err).Msg("no instance id in DATA_DIR: after a crash this node waits one NODE_TTL to take its name back")
	}
	if e.Condition().Stale == nil {
		n, err := e.Register(ctx, cfg.State.NodeName, opts, info)
		if err == nil {
			log.Info().Str("node", cfg.State.NodeName).Dur("ttl", cfg.State.NodeTTL).Msg("registered in the fleet's node list")
			r := &registration{stop: n.Close}
			r.node.Store(n)
			return e.State, r, nil
		}
		if !errors.Is(err, desired.ErrUnavailable) {
			return nil, nil, fmt.Errorf("NODE_NAME %s: %w", cfg.State.NodeName, err)
		}
		log.Warn().Err(err).Str("node", cfg.State.NodeName).Msg("etcd does not answer: registering in the fleet's node list in the background")
	}
	return e.State, registerLater(e.State, cfg.State.NodeName, opts, info, lg), nil
}

// registration is this node's entry in the registry, made at start or,
// while etcd does not answer, later in the background.
type registration struct {
	node atomic.Pointer[etcdstate.Node]
	stop func()
}

// Publish asks the registered node (if it is yet) to publish its status.
func (r *registration) Publish() {
	if n := r.node.Load(); n != nil {
		n.Publish()
	}
}

// Close stops registering and takes the node out of the list.
func (r *registration) Close() { r.stop() }

// registerLater registers the node in the background, trying again
// every few seconds until it can or the registration is closed, which
// also takes it out of the list.
func registerLater(st *etcdstate.State, name string, opts etcdstate.NodeOptions, info func() stream.NodeInfo, log zerolog.Logger) *registration {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	r := &registration{}
	r.stop = func() {
		cancel()
		<-done
		if n := r.node.Load(); n != nil {
			n.Close()
		}
	}
	go func() {
		defer close(done)
		for backoff := time.Second; ; backoff = min(2*backoff, 3*time.Second) {
			n, err := st.Register(ctx, name, opts, info)
			if err == nil {
				r.node.Store(n)
				log.Info().Dur("ttl", opts.TTL).Msg("registered in the fleet's node list")
				return
			}
			if ctx.Err() != nil {
				return
			}
			log.Warn().Err(err).Dur("retry_in", backoff).Msg("registering in the fleet's node list failed; trying again")
			select {
			case <-ctx.Done():
				return
			case <-time.After(backoff):
			}
		}
	}()
	return r
}

// etcdTLS is the TLS configuration ETCD_CACERT, ETCD_CERT and ETCD_KEY
// give (nil when none is set: plain http:// endpoints).
func etcdTLS(sc stateConfig) (*tls.Config, error) {
	if sc.CACert == "" && sc.Cert == "" {
		return nil, nil
	}
	c := &tls.Config{MinVersion: tls.VersionTLS12}
	if sc.CACert != "" {
		pem, err := os.ReadFile(sc.CACert)
		if err != nil {
			return nil, fmt.Errorf("ETCD_CACERT: %w", err)
		}
		c.RootCAs = x509.NewCertPool()
		if !c.RootCAs.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("ETCD_CACERT %s holds no PEM certificate", sc.CACert)
		}
	}
	if sc.Cert != "" {
		pair, err := tls.LoadX509KeyPair(sc.Cert, sc.Key)
		if err != nil {
			return nil, fmt.Errorf("ETCD_CERT/ETCD_KEY: %w", err)
		}
		c.Certificates = []tls.Certificate{pair}
	}
	return c, nil
}

// localGets answers Get from the etcd state's local copy.
type localGets struct{ st *etcdstate.State }

func (l localGets) Get(id stream.ID) (stream.Spec, error) {
	sp, ok := l.st.Local(id)
	if !ok {
		return stream.Spec{}, desired.ErrNotFound
	}
	return sp, nil
}

// localReads is what lookups that must not wait on the network read
// streams from (the traffic log's, one per connection): the bbolt store
// itself, which reads from memory, or the etcd state's local copy.
func localReads(st stateStore) interface {
	Get(id stream.ID) (stream.Spec, error)
} {
	if e, ok := st.(etcdState); ok {
		return localGets{e.State}
	}
	return st
}

// instanceFile in DATA_DIR holds the id of this data directory, by which a
// node restarted on it takes its registration back at once.
const instanceFile = "instance-id"

// instanceID reads the data directory's instance id, creating it (random,
// durably) on first use. Two daemons never share a data directory (its
// files are locked), so the id names one node across its restarts.
func instanceID(dataDir string) (string, error) {
	b, err := safefile.ReadRegular(filepath.Join(dataDir, instanceFile))
	if err == nil && len(bytes.TrimSpace(b)) > 0 {
		return string(bytes.TrimSpace(b)), nil
	}
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return "", err
	}
	raw := make([]byte, 16)
	if _, err := rand.Read(raw); err != nil {
		return "", err
	}
	id := hex.EncodeToString(raw)
	if err := safefile.Write(dataDir, instanceFile, []byte(id+"\n")); err != nil {
		return "", err
	}
	return id, nil
}
