package stream

import (
	"errors"
	"fmt"
	"strings"
	"unicode/utf8"
)

// MaxNodeName bounds the length of a node's name, in bytes.
const MaxNodeName = 128

// CheckNodeName returns nil if name may name a node of a fleet (NODE_NAME,
// a stream's nodes): non-empty UTF-8 of at most MaxNodeName bytes, with no
// slash (it is a key's last segment in the registry) and no control
// character or space.
func CheckNodeName(name string) error {
	switch {
	case name == "":
		return errors.New("a node name must not be empty")
	case len(name) > MaxNodeName:
		return fmt.Errorf("a node name has at most %d bytes", MaxNodeName)
	case !utf8.ValidString(name) || strings.ContainsFunc(name, func(r rune) bool { return r <= ' ' || r == 0x7f || r == '/' }):
		return fmt.Errorf("node name %q: must be UTF-8 without slash, space or control characters", name)
	}
	return nil
}
