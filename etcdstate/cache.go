package etcdstate

import (
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/streamconductor/stream-conductor/desired"
	"github.com/streamconductor/stream-conductor/stream"
)

// The local copy's file (Options.CachePath), a bbolt database:
//
//	streams/<id>       one stream as the watch delivered it (JSON, with its
//	                   revision)
//	meta/through       the etcd revision the copy is complete through
//	meta/state         the state's (the marker's) revision
//	meta/cluster       the etcd cluster id the copy came from
//	meta/alarm         the hold (desired.Alarm as JSON) while the copy is
//	                   held: a node restarted while held stays held until
//	                   an operator confirms
//
// It is rewritten in one transaction per watch delivery, before consumers
// are told, so a node that restarts while etcd is unreachable comes back
// with what it last applied.
var (
	bucketStreams = []byte("streams")
	bucketMeta    = []byte("meta")
	keyThrough    = []byte("through")
	keyState      = []byte("state")
	keyCluster    = []byte("cluster")
	keyAlarm      = []byte("alarm")
)

// cache is the local copy's file.
type cache struct {
	db *bolt.DB
}

// snapshot is what the cache holds.
type snapshot struct {
	specs    map[stream.ID]stream.Spec
	through  uint64
	stateRev uint64
	cluster  uint64
	alarm    *desired.Alarm // nil: not held
}

// openCache opens (creating) the file at path.
func openCache(path string) (*cache, error) {
	db, err := bolt.Open(path, 0o600, &bolt.Options{Timeout: time.Second})
	if errors.Is(err, bolt.ErrTimeout) {
		return nil, fmt.Errorf("open the local copy %s: %w: another stream-conductor uses it; give this one another DATA_DIR", path, err)
	}
	if err != nil {
		return nil, fmt.Errorf("open the local copy %s: %w", path, err)
	}
	err = db.Update(func(tx *bolt.Tx) error {
		for _, b := range [][]byte{bucketStreams, bucketMeta} {
			if _, err := tx.CreateBucketIfNotExists(b); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		db.Close()
		return nil, fmt.Errorf("open the local copy %s: %w", path, err)
	}
	return &cache{db: db}, nil
}

func (c *cache) close() error { return c.db.Close() }

// load reads the copy; ok is false when it was never written.
func (c *cache) load() (snapshot, bool, error) {
	snap := snapshot{specs: map[stream.ID]stream.Spec{}}
	err := c.db.View(func(tx *bolt.Tx) error {
		meta := tx.Bucket(bucketMeta)
		snap.through, snap.stateRev, snap.cluster = getUint(meta, keyThrough), getUint(meta, keyState), getUint(meta, keyCluster)
		if v := meta.Get(keyAlarm); v != nil {
			snap.alarm = new(desired.Alarm)
			if err := json.Unmarshal(v, snap.alarm); err != nil {
				return fmt.Errorf("the hold: %w", err)
			}
		}
		return tx.Bucket(bucketStreams).ForEach(func(k, v []byte) error {
			var sp stream.Spec
			if err := json.Unmarshal(v, &sp); err != nil {
				return fmt.Errorf("stream %q: %w", k, err)
			}
			snap.specs[sp.ID()] = sp
			return nil
		})
	})
	if err != nil {
		return snap, false, fmt.Errorf("read the local copy %s: %w", c.db.Path(), err)
	}
	return snap, snap.through > 0, nil
}

// replace makes the copy hold snap alone.
func (c *cache) replace(snap snapshot) error {
	return c.db.Update(func(tx *bolt.Tx) error {
		if err := tx.DeleteBucket(bucketStreams); err != nil && !errors.Is(err, bolt.ErrBucketNotFound) {
			return err
		}
		b, err := tx.CreateBucket(bucketStreams)
		if err != nil {
			return err
		}
		for _, sp := range snap.specs {
			if err := putSpec(b, sp); err != nil {
				return err
			}
		}
		return putMeta(tx.Bucket(bucketMeta), snap.through, snap.stateRev, snap.cluster)
	})
}

// apply records changes delivered through revision through.
func (c *cache) apply(changes []desired.Change, through, stateRev, cluster uint64) error {
	return c.db.Update(func(tx *bolt.Tx) error {
		b := tx.Bucket(bucketStreams)
		for _, ch := range changes {
			if ch.Spec == nil {
				if err := b.Delete([]byte(ch.ID.String())); err != nil {
					return err
				}
				continue
			}
			if err := putSpec(b, *ch.Spec); err != nil {
				return err
			}
		}
		return putMeta(tx.Bucket(bucketMeta), through, stateRev, cluster)
	})
}

// hold records a (nil: clears the record of the hold).
func (c *cache) hold(a *desired.Alarm) error {
	return c.db.Update(func(tx *bolt.Tx) error {
		meta := tx.Bucket(bucketMeta)
		if a == nil {
			return meta.Delete(keyAlarm)
		}
		v, err := json.Marshal(a)
		if err != nil {
			return err
		}
		return meta.Put(keyAlarm, v)
	})
}

func putSpec(b *bolt.Bucket, sp stream.Spec) error {
	v, err := json.Marshal(sp)
	if err != nil {
		return err
	}
	return b.Put([]byte(sp.ID().String()), v)
}

func putMeta(b *bolt.Bucket, through, stateRev, cluster uint64) error {
	for k, v := range map[string]uint64{string(keyThrough): through, string(keyState): stateRev, string(keyCluster): cluster} {
		if err := b.Put([]byte(k), binary.BigEndian.AppendUint64(nil, v)); err != nil {
			return err
		}
	}
	return nil
}

func getUint(b *bolt.Bucket, k []byte) uint64 {
	v := b.Get(k)
	if len(v) != 8 {
		return 0
	}
	return binary.BigEndian.Uint64(v)
}
