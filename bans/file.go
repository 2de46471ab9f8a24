package bans

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"net/netip"
	"os"
	"path/filepath"

	"github.com/streamconductor/stream-conductor/internal/safefile"
)

// fileFormat is the bans file's content.
type fileFormat struct {
	Version int   `json:"version"`
	Bans    []Ban `json:"bans"`
}

// load reads the bans of cfg.File that have not expired, as the first
// published version; an unreadable file is set aside and logged.
func (m *Manager) load() {
	if m.cfg.File == "" {
		return
	}
	bans, err := readFile(m.cfg.File)
	if err != nil {
		aside := m.cfg.File + ".damaged"
		if rerr := os.Rename(m.cfg.File, aside); rerr != nil {
			aside = ""
		}
		m.log.Error().Err(err).Str("set_aside_as", aside).Msg("the bans file cannot be read: starting without bans")
		return
	}
	now := m.cfg.Now()
	kept := 0
	for _, b := range bans {
		b.Address = b.Address.Unmap()
		if !now.Before(b.Until) || !Bannable(b.Address) || m.Exempt(b.Address) || len(m.bans[b.Stream]) >= m.cfg.MaxPerStream {
			continue
		}
		if m.bans[b.Stream] == nil {
			m.bans[b.Stream] = map[netip.Addr]*Ban{}
		}
		if m.bans[b.Stream][b.Address] == nil {
			m.count++
			kept++
		}
		m.bans[b.Stream][b.Address] = &b
		m.earliest = earlier(m.earliest, b.Until)
		m.dirty[b.Stream] = true
	}
	m.publish()
	if kept < len(bans) {
		m.saveFailed = true // rewrite without the ones dropped
	}
	m.log.Info().Int("bans", kept).Int("dropped", len(bans)-kept).Msg("bans loaded")
}

// readFile reads a bans file; a missing one holds none.
func readFile(path string) ([]Ban, error) {
	b, err := safefile.ReadRegular(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", path, err)
	}
	var f fileFormat
	if err := json.Unmarshal(b, &f); err != nil {
		return nil, fmt.Errorf("decode %s: %w", path, err)
	}
	if f.Version != 1 {
		return nil, fmt.Errorf("decode %s: version %d, want 1", path, f.Version)
	}
	return f.Bans, nil
}

// save writes every ban in force to cfg.File, atomically and durably;
// a failure is logged and retried at the next flush.
func (m *Manager) save() {
	if m.cfg.File == "" {
		return
	}
	m.mu.Lock()
	m.saveFailed = false
	f := fileFormat{Version: 1, Bans: make([]Ban, 0, m.count)}
	for _, bs := range m.bans {
		for _, b := range bs {
			f.Bans = append(f.Bans, *b)
		}
	}
	m.mu.Unlock()
	err := writeFile(m.cfg.File, f)
	if err == nil {
		return
	}
	m.log.Error().Err(err).Msg("the bans file was not written: bans made since are lost if the daemon stops; retrying at the next flush")
	m.mu.Lock()
	m.saveFailed = true
	m.mu.Unlock()
	m.poke()
}

// writeFile replaces path with f, fsynced, the directory too.
func writeFile(path string, f fileFormat) error {
	b, err := json.Marshal(f)
	if err != nil {
		return fmt.Errorf("encode bans: %w", err)
	}
	dir := filepath.Dir(path)
	if err := safefile.Write(dir, filepath.Base(path), b); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	if err := safefile.SyncDir(dir); err != nil {
		return fmt.Errorf("sync %s: %w", dir, err)
	}
	return nil
}
