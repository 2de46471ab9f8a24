package etcdtest

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"time"
)

// DataDir is the member's data directory: stop the server before copying
// or replacing it.
func (s *Server) DataDir() string { return s.data }

// Restart starts the stopped server again on its data directory and
// ports, and waits (at most 20s) until it reports healthy.
func (s *Server) Restart() error {
	select {
	case <-s.exited:
	default:
		return fmt.Errorf("etcd at %s still runs: Stop it first", s.URL)
	}
	logf, err := os.OpenFile(s.log, os.O_WRONLY|os.O_APPEND, 0)
	if err != nil {
		return err
	}
	defer logf.Close()
	cmd := exec.Command(s.bin, s.args...)
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		return err
	}
	s.cmd, s.exited = cmd, make(chan struct{})
	exited := s.exited
	go func() { cmd.Wait(); close(exited) }()
	if err := s.waitHealthy(20 * time.Second); err != nil {
		s.Stop()
		return fmt.Errorf("restart: %w; its log:\n%s", err, s.tail())
	}
	return nil
}

// CopyData copies the member's data directory to dst (a directory that
// does not exist yet): an offline backup of a stopped server.
func (s *Server) CopyData(dst string) error {
	return copyTree(s.data, dst)
}

// ReplaceData replaces the stopped member's data directory with src (a
// copy CopyData made), moving it into place: the member comes back at
// src's state.
func (s *Server) ReplaceData(src string) error {
	if err := os.RemoveAll(s.data); err != nil {
		return err
	}
	return os.Rename(src, s.data)
}

// copyTree copies the regular files and directories under src to dst.
func copyTree(src, dst string) error {
	return filepath.Walk(src, func(path string, fi os.FileInfo, err error) error {
		if err != nil {
			return err
		}
		rel, err := filepath.Rel(src, path)
		if err != nil {
			return err
		}
		to := filepath.Join(dst, rel)
		if fi.IsDir() {
			return os.MkdirAll(to, 0o700)
		}
		b, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		return os.WriteFile(to, b, fi.Mode().Perm())
	})
}

// Tail is the end of etcd's log, for a failed test's messages.
func (s *Server) Tail() string { return s.tail() }
