package store

import (
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"runtime/debug"
	"time"

	bolt "go.etcd.io/bbolt"
	bolterrors "go.etcd.io/bbolt/errors"

	"github.com/streamconductor/stream-conductor/stream"
)

// Read returns every stream of the database file at path and the revision
// they reflect, without changing the file: it is opened read-only under a
// shared lock, so it is ErrLocked while a daemon holds the file (after
// lockTimeout, default 1s), never created when missing, and ErrCorrupt or
// ErrSchema when it is not a database this build wrote. The migration
// reads its source with it.
func Read(path string, lockTimeout time.Duration) ([]stream.Spec, uint64, error) {
	if lockTimeout <= 0 {
		lockTimeout = time.Second
	}
	if _, err := os.Stat(path); err != nil {
		return nil, 0, fmt.Errorf("read %s: %w", path, err)
	}
	db, err := openBolt(path, &bolt.Options{Timeout: lockTimeout, ReadOnly: true})
	if errors.Is(err, bolterrors.ErrTimeout) {
		return nil, 0, fmt.Errorf("read %s: %w", path, ErrLocked)
	}
	if err != nil {
		return nil, 0, fmt.Errorf("read %s: %w: %w", path, ErrCorrupt, err)
	}
	defer db.Close()
	specs, rev, err := readAll(db)
	if err != nil {
		return nil, 0, fmt.Errorf("read %s: %w", path, err)
	}
	return specs, rev, nil
}

// readAll checks the file's consistency and schema in one read
// transaction and decodes every stream (see init for the panic guard).
func readAll(db *bolt.DB) (specs []stream.Spec, rev uint64, err error) {
	defer debug.SetPanicOnFault(debug.SetPanicOnFault(true))
	defer func() {
		if p := recover(); p != nil {
			err = fmt.Errorf("%w: %v", ErrCorrupt, p)
		}
	}()
	err = db.View(func(tx *bolt.Tx) error {
		for cerr := range tx.Check() {
			return fmt.Errorf("%w: %w", ErrCorrupt, cerr)
		}
		meta, streams := tx.Bucket(bucketMeta), tx.Bucket(bucketStreams)
		if meta == nil || streams == nil {
			return fmt.Errorf("%w: not a stream-conductor state (no %s and %s buckets)", ErrSchema, bucketMeta, bucketStreams)
		}
		if v := meta.Get(keySchema); len(v) != 8 || binary.BigEndian.Uint64(v) != SchemaVersion {
			return fmt.Errorf("%w %x (this build reads %d)", ErrSchema, v, SchemaVersion)
		}
		rev = revision(meta)
		return streams.ForEach(func(k, v []byte) error {
			var sp stream.Spec
			if err := json.Unmarshal(v, &sp); err != nil {
				return fmt.Errorf("decode stream %q: %w", k, err)
			}
			specs = append(specs, sp)
			return nil
		})
	})
	return specs, rev, err
}
