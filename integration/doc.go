// Package integration holds end-to-end tests: they build the real
// stream-conductor binary, run it in managed mode against the real nginx
// with temporary directories and loopback ports, and send real bytes
// through the streams it creates. The package has no non-test code.
package integration
