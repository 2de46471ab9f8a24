package reconcile

import (
	"crypto/sha256"
	"encoding/hex"
	"os"
	"slices"

	"github.com/streamconductor/stream-conductor/internal/safefile"
)

// fingerprint identifies a whole configuration: the main file and every
// stream file. Held (drifted) files count as nginx last loaded them, so
// that drift alone never asks for a reload. Files are hashed once per
// content (fileHash), so an unchanged configuration costs a sort and a
// short hash, not a hash of every byte.
func (r *Reconciler) fingerprint(desired map[string]file) string {
	files := bodies(desired)
	for name := range r.held {
		if b, ok := r.appliedFiles[name]; ok {
			files[name] = b
		}
	}
	names := make([]string, 0, len(files))
	for name := range files {
		names = append(names, name)
	}
	slices.Sort(names)
	h := sha256.New()
	h.Write(r.nginx.MainConfig())
	for _, name := range names {
		h.Write([]byte{0})
		h.Write([]byte(name))
		sum := r.fileHash(files[name])
		h.Write(sum[:])
	}
	return hex.EncodeToString(h.Sum(nil))
}

// fileHash returns the SHA-256 of a file's content, remembered by the
// address of the bytes the render cache holds.
func (r *Reconciler) fileHash(b []byte) [32]byte {
	if len(b) == 0 {
		return sha256.Sum256(nil)
	}
	key := &b[0]
	if h, ok := r.hashes[key]; ok && h.n == len(b) {
		return h.sum
	}
	sum := sha256.Sum256(b)
	if len(r.hashes) > 4*len(r.renderCache)+64 {
		clear(r.hashes) // bytes of old renders: start again
	}
	r.hashes[key] = hashed{n: len(b), sum: sum}
	return sum
}

// writeState records the applied fingerprint. It is not fsynced: after a
// power cut the file may be stale or empty, which only costs one reload
// that was not needed; it can never claim more than nginx applied, since it
// is written after nginx applied it.
func (r *Reconciler) writeState(fp string) error {
	if r.cfg.StateFile == "" {
		return nil
	}
	tmp := r.cfg.StateFile + safefile.TmpMarker
	if err := os.WriteFile(tmp, []byte(fp+"\n"), 0o644); err != nil {
		return err
	}
	return os.Rename(tmp, r.cfg.StateFile)
}
