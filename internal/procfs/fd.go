package procfs

import (
	"os"
	"strconv"
	"strings"
	"syscall"
)

// eachFD calls fn with the name and link target of each descriptor pid
// holds until fn returns true. It reports whether fn did; false also when
// the process is gone or its descriptors are not ours to read.
func eachFD(pid int, fn func(fd, target string) bool) bool {
	dir := "/proc/" + strconv.Itoa(pid) + "/fd/"
	fds, err := os.ReadDir(dir)
	if err != nil {
		return false
	}
	for _, fd := range fds {
		target, err := os.Readlink(dir + fd.Name())
		if err != nil {
			continue // closed meanwhile
		}
		if fn(fd.Name(), target) {
			return true
		}
	}
	return false
}

// socketInode returns the inode of a descriptor's target "socket:[123]".
func socketInode(target string) (string, bool) {
	inode, ok := strings.CutPrefix(target, "socket:[")
	return strings.TrimSuffix(inode, "]"), ok
}

// HoldsSocket reports whether pid has one of the sockets in inodes open.
func HoldsSocket(pid int, inodes map[string]bool) bool {
	return eachFD(pid, func(_, target string) bool {
		inode, ok := socketInode(target)
		return ok && inodes[inode]
	})
}

// Sockets calls fn with the inode of every socket pid has open.
func Sockets(pid int, fn func(inode string)) {
	eachFD(pid, func(_, target string) bool {
		if inode, ok := socketInode(target); ok {
			fn(inode)
		}
		return false
	})
}

// HoldsFile reports whether pid has the file at path open (also once it
// was removed: such a target reads "path (deleted)").
func HoldsFile(pid int, path string) bool {
	return HoldsPath(pid, func(p string) bool { return p == path })
}

// HoldsPath reports whether pid has a file open whose path match accepts
// (a removed file's path as it was).
func HoldsPath(pid int, match func(path string) bool) bool {
	return eachFD(pid, func(_, target string) bool {
		return match(strings.TrimSuffix(target, " (deleted)"))
	})
}

// HoldsInode reports whether pid has a file with inode ino open. Standard
// error is looked at first, where a daemon usually keeps its log: the full
// walk costs a stat per descriptor.
func HoldsInode(pid int, ino uint64) bool {
	dir := "/proc/" + strconv.Itoa(pid) + "/fd/"
	same := func(fd string) bool {
		var st syscall.Stat_t
		return syscall.Stat(dir+fd, &st) == nil && st.Ino == ino
	}
	if same("2") {
		return true
	}
	fds, err := os.ReadDir(dir)
	if err != nil {
		return false
	}
	for _, fd := range fds {
		if same(fd.Name()) {
			return true
		}
	}
	return false
}
