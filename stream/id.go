package stream

import (
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
)

// ID names a stream: its protocol and listen port. Its text form,
// "tcp/9000", is the store's key, the API's path and the source of the
// stream's file name; it is a comparable value, fit for a map key, and
// encodes as that text in JSON (also as a map key).
type ID struct {
	Protocol Protocol
	Port     int
}

// String returns the canonical form, "tcp/9000".
func (id ID) String() string { return string(id.Protocol) + "/" + strconv.Itoa(id.Port) }

// MarshalText encodes id as its canonical form.
func (id ID) MarshalText() ([]byte, error) { return []byte(id.String()), nil }

// UnmarshalText accepts only the canonical form (see ParseID).
func (id *ID) UnmarshalText(b []byte) error {
	v, err := ParseID(string(b))
	if err != nil {
		return err
	}
	*id = v
	return nil
}

// ParseID reads a canonical id. It accepts only the canonical form:
// lower-case protocol, decimal port without sign or leading zeros.
func ParseID(s string) (ID, error) {
	p, port, ok := strings.Cut(s, "/")
	if !ok {
		return ID{}, fmt.Errorf("stream id %q: want protocol/port", s)
	}
	n, err := ParsePort(port)
	if err != nil {
		return ID{}, fmt.Errorf("stream id %q: %w", s, err)
	}
	proto, err := ParseProtocol(p)
	if err != nil {
		return ID{}, fmt.Errorf("stream id %q: %w", s, err)
	}
	return ID{Protocol: proto, Port: n}, nil
}

// ParseProtocol accepts "tcp" and "udp", in lower case.
func ParseProtocol(s string) (Protocol, error) {
	switch Protocol(s) {
	case TCP, UDP:
		return Protocol(s), nil
	}
	return "", fmt.Errorf("protocol must be tcp or udp")
}

// ErrPort is the complaint about a port out of range or not in canonical
// decimal form.
var ErrPort = errors.New("port must be 1-65535")

// ValidPort reports whether n is a port nginx can listen on or connect to.
func ValidPort(n int) bool { return n >= 1 && n <= 65535 }

// ParsePort reads a port in canonical decimal form (no sign, spaces or
// leading zeros) and checks its range; it returns ErrPort otherwise.
func ParsePort(s string) (int, error) {
	n, err := strconv.Atoi(s)
	if err != nil || strconv.Itoa(n) != s || !ValidPort(n) {
		return 0, ErrPort
	}
	return n, nil
}

// SortIDs sorts ids by their text ("tcp/10000" before "tcp/9000"), the
// order of the store's keys and of the lists the API answers.
func SortIDs(ids []ID) {
	slices.SortFunc(ids, func(a, b ID) int { return strings.Compare(a.String(), b.String()) })
}

// MustParseID is ParseID for ids known to be canonical (constants in
// tests); it panics on anything else.
func MustParseID(s string) ID {
	id, err := ParseID(s)
	if err != nil {
		panic(err)
	}
	return id
}
