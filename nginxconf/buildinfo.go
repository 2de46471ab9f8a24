package nginxconf

import (
	"regexp"
	"strings"
)

// StreamModule says how an nginx binary carries the stream module.
type StreamModule int

// The ways nginx can be built with (or without) the stream module.
const (
	StreamMissing StreamModule = iota
	StreamStatic
	StreamDynamic
)

// BuildInfo is what `nginx -V` says about a binary.
type BuildInfo struct {
	Version     string
	Stream      StreamModule
	ModulesPath string
	// User is the user workers run as when the master runs as root and the
	// configuration names none (--user=, else nginx's default "nobody").
	User string
}

var versionRE = regexp.MustCompile(`nginx version: nginx/(\S+)`)

// ParseBuildInfo reads the output of `nginx -V`.
func ParseBuildInfo(out string) BuildInfo {
	var bi BuildInfo
	if m := versionRE.FindStringSubmatch(out); m != nil {
		bi.Version = m[1]
	}
	for _, f := range strings.Fields(out) {
		switch {
		case f == "--with-stream":
			bi.Stream = StreamStatic
		case f == "--with-stream=dynamic":
			bi.Stream = StreamDynamic
		case strings.HasPrefix(f, "--modules-path="):
			bi.ModulesPath = strings.TrimPrefix(f, "--modules-path=")
		case strings.HasPrefix(f, "--user="):
			bi.User = strings.TrimPrefix(f, "--user=")
		}
	}
	if bi.User == "" {
		bi.User = "nobody"
	}
	return bi
}
