package store

import (
	"fmt"
	"io"

	"github.com/streamconductor/stream-conductor/desired"
	bolt "go.etcd.io/bbolt"
)

// Backup writes a consistent snapshot of the whole database file to w: a
// read transaction's view, taken while writes go on. begin is told its
// size and revision from the same transaction, before the first byte.
// The snapshot is a database file: put it at the path of the state and
// open it to restore.
func (s *Store) Backup(w io.Writer, begin func(desired.BackupInfo)) error {
	return s.db.View(func(tx *bolt.Tx) error {
		begin(desired.BackupInfo{Size: tx.Size(), Revision: revision(tx.Bucket(bucketMeta))})
		n, err := tx.WriteTo(w)
		if err != nil {
			return fmt.Errorf("backup after %d bytes: %w", n, err)
		}
		return nil
	})
}

// BackupSize is the size a backup taken now would have: the database
// file's.
func (s *Store) BackupSize() int64 {
	var n int64
	s.db.View(func(tx *bolt.Tx) error {
		n = tx.Size()
		return nil
	})
	return n
}
