package nginxconf

import (
	"regexp"
	"strconv"
	"strings"
)

// Diagnostic is one message nginx printed, taken apart.
type Diagnostic struct {
	// Level is nginx's severity: emerg, alert, crit, error, warn, notice...
	Level string
	// PID is the process that logged it, 0 when the line has none (`nginx -t`
	// output on stderr).
	PID int
	// Message is nginx's text without the location suffix.
	Message string
	// File and Line locate the message in the config, when nginx said.
	File string
	Line int
}

var (
	// 2026/11/24 19:12:49 [emerg] 1963#1963: message
	logLineRE = regexp.MustCompile(`^\d{4}/\d\d/\d\d \d\d:\d\d:\d\d \[(\w+)\] (\d+)#\d+: (?:\*\d+ )?(.*)$`)
	// nginx: [emerg] message
	stderrLineRE = regexp.MustCompile(`^nginx: \[(\w+)\] (.*)$`)
	// ... in /path/to/file.conf:12
	locationRE = regexp.MustCompile(`^(.*) in (\S+):(\d+)$`)
)

// ParseDiagnostics parses `nginx -t` output or error-log text into its
// messages. Lines that are neither are skipped.
func ParseDiagnostics(out string) []Diagnostic {
	var ds []Diagnostic
	for _, line := range strings.Split(out, "\n") {
		line = strings.TrimRight(line, "\r")
		var d Diagnostic
		if m := logLineRE.FindStringSubmatch(line); m != nil {
			d.Level, d.Message = m[1], m[3]
			d.PID, _ = strconv.Atoi(m[2])
		} else if m := stderrLineRE.FindStringSubmatch(line); m != nil {
			d.Level, d.Message = m[1], m[2]
		} else {
			continue
		}
		if m := locationRE.FindStringSubmatch(d.Message); m != nil {
			d.Message, d.File = m[1], m[2]
			d.Line, _ = strconv.Atoi(m[3])
		}
		ds = append(ds, d)
	}
	return ds
}

// IsFatal reports whether d's level stops nginx from using a configuration.
func (d Diagnostic) IsFatal() bool {
	switch d.Level {
	case "emerg", "alert", "crit":
		return true
	}
	return false
}

var bindRE = regexp.MustCompile(`^bind\(\) to (\S+) failed \((\d+): ([^)]*)\)`)

// BindFailure returns the address nginx could not bind ("0.0.0.0:9003",
// "[::1]:9003") when d is a bind() failure.
func (d Diagnostic) BindFailure() (addr string, ok bool) {
	m := bindRE.FindStringSubmatch(d.Message)
	if m == nil {
		return "", false
	}
	return m[1], true
}
