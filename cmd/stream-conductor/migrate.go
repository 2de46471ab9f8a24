package main

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/user"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/rs/zerolog"

	"github.com/streamconductor/stream-conductor/desired"
	"github.com/streamconductor/stream-conductor/store"
	"github.com/streamconductor/stream-conductor/stream"
)

// OpMigrate is the operation of the audit record a migration appends to
// the state it wrote.
const OpMigrate = "migrate"

// migrateUsage is the first line of `stream-conductor migrate -h`.
const migrateUsage = `Usage: stream-conductor migrate --from FILE|etcd --to etcd|FILE [--apply] [--prune] [etcd flags]

Copies the desired state between a node's bbolt file (state.db, or the data
dir that holds it) and etcd (ETCD_* as for the daemon). Without --apply it
shows what would change and changes nothing. The bbolt file is read only,
and refused while a daemon holds it: stop the daemon first.

Exit codes: 0 done (or the plan shown), 1 failed, 2 bad usage.

Flags:
`

// migrateSettings are the daemon's settings a migration reads too: where
// etcd is and how to log in, and the audit log's bounds.
var migrateSettings = map[string]bool{"etcd-endpoints": true, "etcd-prefix": true, "etcd-cacert": true,
	"etcd-cert": true, "etcd-key": true, "etcd-username": true, "etcd-password-file": true,
	"audit-retention": true, "audit-max-bytes": true}

// migration is one run of migrate, as its flags asked.
type migration struct {
	from, to     migrationEnd
	apply, prune bool
	request      string // the command line, for the audit record
	cfg          config // State (etcd) and the audit bounds
}

// migrationEnd is one side of a migration: etcd, or a bbolt file.
type migrationEnd struct {
	etcd bool
	path string // the bbolt file
}

// errMigrateFlags is a command line the flag package already reported.
var errMigrateFlags = errors.New("bad flags")

// runMigrate runs `stream-conductor migrate` and returns its exit code.
func runMigrate(args []string, getenv func(string) string, stdout, stderr io.Writer) int {
	m, err := parseMigrate(args, getenv, stderr)
	switch {
	case errors.Is(err, flag.ErrHelp):
		return exitOK
	case errors.Is(err, errMigrateFlags):
		return exitUsage
	case err != nil:
		fmt.Fprintln(stderr, "stream-conductor migrate:", err)
		return exitUsage
	}
	if err := m.run(stdout); err != nil {
		fmt.Fprintln(stderr, "stream-conductor migrate:", err)
		return exitFailed
	}
	return exitOK
}

// parseMigrate reads the flags of migrate and the ETCD_* and AUDIT_*
// settings (flag, else variable, else default, as for the daemon).
func parseMigrate(args []string, getenv func(string) string, stderr io.Writer) (migration, error) {
	fs := flag.NewFlagSet("stream-conductor migrate", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var m migration
	var from, to string
	fs.StringVar(&from, "from", "", "where the streams are read: a bbolt file (or the data dir holding state.db), or etcd")
	fs.StringVar(&to, "to", "", "where they are written: etcd, or a bbolt file (created if missing)")
	fs.BoolVar(&m.apply, "apply", false, "write the changes (default: only show them)")
	fs.BoolVar(&m.prune, "prune", false, "also delete the streams of the destination the source does not have")
	values := map[string]*string{}
	for _, s := range settings {
		if migrateSettings[s.flag] {
			def := s.def
			if v := getenv(s.env); v != "" {
				def = v
			}
			values[s.flag] = fs.String(s.flag, def, s.usage+" ["+s.env+"]")
		}
	}
	fs.Usage = func() {
		fmt.Fprint(stderr, migrateUsage)
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return m, err
		}
		return m, errMigrateFlags
	}
	if fs.NArg() > 0 {
		return m, fmt.Errorf("unexpected argument %q (see -h)", fs.Arg(0))
	}
	var err error
	if m.from, err = parseMigrationEnd("--from", from); err != nil {
		return m, err
	}
	if m.to, err = parseMigrationEnd("--to", to); err != nil {
		return m, err
	}
	if m.from.etcd == m.to.etcd {
		return m, errors.New("one of --from and --to must be etcd, the other a bbolt file")
	}
	v := func(name string) string {
		switch name {
		case "state-store":
			return "etcd"
		case "node-ttl":
			return "10s"
		}
		if p, ok := values[name]; ok {
			return strings.TrimSpace(*p)
		}
		return ""
	}
	if m.cfg.State, err = parseStateConfig(v); err != nil {
		return m, err
	}
	if m.cfg.AuditRetention, err = strconv.Atoi(v("audit-retention")); err != nil || m.cfg.AuditRetention < 1 {
		return m, fmt.Errorf("AUDIT_RETENTION must be a positive number, not %q", v("audit-retention"))
	}
	if m.cfg.AuditMaxBytes, err = parseBytes(v("audit-max-bytes")); err != nil || m.cfg.AuditMaxBytes < minAuditBytes {
		return m, fmt.Errorf("AUDIT_MAX_BYTES must be a size of at least 64KiB such as 16MiB, not %q", v("audit-max-bytes"))
	}
	m.request = "migrate --from " + m.from.name() + " --to " + m.to.name()
	if m.apply {
		m.request += " --apply"
	}
	if m.prune {
		m.request += " --prune"
	}
	return m, nil
}

// parseMigrationEnd reads --from or --to: "etcd", a bbolt file, or a directory
// taken as the data dir that holds state.db.
func parseMigrationEnd(flagName, v string) (migrationEnd, error) {
	switch v = strings.TrimSpace(v); {
	case v == "":
		return migrationEnd{}, fmt.Errorf("%s is required: etcd, or a bbolt file such as /var/lib/stream-conductor/state.db", flagName)
	case v == "etcd":
		return migrationEnd{etcd: true}, nil
	}
	if fi, err := os.Stat(v); err == nil && fi.IsDir() {
		v = filepath.Join(v, "state.db")
	}
	return migrationEnd{path: v}, nil
}

// name is the side as the command line and the audit record name it.
func (e migrationEnd) name() string {
	if e.etcd {
		return "etcd"
	}
	return e.path
}

// run reads the source, then shows the plan (without --apply) or imports
// it into the destination in one transaction and appends the audit record.
func (m migration) run(out io.Writer) error {
	var ec stateStore
	etcdWhere := ""
	if m.from.etcd || m.to.etcd {
		st, where, err := openEtcdState(m.cfg, "", zerolog.Nop()) // no local copy: migrate is no node
		if err != nil {
			return err
		}
		defer st.Close()
		ec, etcdWhere = st, where
	}
	describe := func(e migrationEnd) string {
		if e.etcd {
			return etcdWhere
		}
		return "bbolt " + e.path
	}
	specs, srcRev, err := m.readSource(ec)
	if err != nil {
		return err
	}
	fmt.Fprintf(out, "from %s: %s (revision %d)\n", describe(m.from), nStreams(len(specs)), srcRev)
	if !m.apply {
		return m.plan(out, ec, specs, describe(m.to))
	}
	dst, closeDst, err := m.openDest(ec)
	if err != nil {
		return err
	}
	defer closeDst()
	cur, dstRev := dst.List()
	fmt.Fprintf(out, "to %s: %s (revision %d)\n", describe(m.to), nStreams(len(cur)), dstRev)
	res, ierr := dst.Import(specs, m.prune)
	if aerr := dst.AppendAudit(m.auditRecord(res, ierr)); aerr != nil {
		aerr = fmt.Errorf("the audit record of the migration could not be written: %w", aerr)
		if ierr == nil {
			printMigration(out, res, "migrated", nil)
			return aerr
		}
		ierr = errors.Join(ierr, aerr)
	}
	if ierr != nil {
		return fmt.Errorf("nothing was written (a migration is one transaction): %w", ierr)
	}
	printMigration(out, res, "migrated", nil)
	return nil
}

// readSource returns the source's streams and revision.
func (m migration) readSource(ec stateStore) ([]stream.Spec, uint64, error) {
	if m.from.etcd {
		list, rev := ec.List()
		return slices.Clone(list), rev, nil
	}
	return readStateFile(m.from.path)
}

// readStateFile reads a bbolt file without changing it, refused while a
// daemon holds it.
func readStateFile(path string) ([]stream.Spec, uint64, error) {
	specs, rev, err := store.Read(path, time.Second)
	if errors.Is(err, store.ErrLocked) {
		return nil, 0, fmt.Errorf("%s is in use by a running stream-conductor: stop it first (its streams keep forwarding through nginx meanwhile)", path)
	}
	return specs, rev, err
}

// plan shows what --apply would change, and changes nothing: a missing
// destination file is not created.
func (m migration) plan(out io.Writer, ec stateStore, specs []stream.Spec, dstName string) error {
	var cur []stream.Spec
	var rev uint64
	switch _, err := os.Stat(m.to.path); {
	case m.to.etcd:
		cur, rev = ec.List()
	case errors.Is(err, os.ErrNotExist):
		dstName += " (does not exist yet)"
	default:
		if cur, rev, err = readStateFile(m.to.path); err != nil {
			return err
		}
	}
	fmt.Fprintf(out, "to %s: %s (revision %d)\n", dstName, nStreams(len(cur)), rev)
	byID := make(map[stream.ID]stream.Spec, len(cur))
	for _, sp := range cur {
		byID[sp.ID()] = sp
	}
	res := desired.PlanImport(byID, specs, m.prune)
	var kept []stream.ID
	if !m.prune {
		kept = desired.PlanImport(byID, specs, true).Delete
	}
	printMigration(out, res, "dry run, nothing changed (--apply writes it)", kept)
	return nil
}

// openDest opens the destination for writing: the etcd state already
// open, or the bbolt file (created if missing).
func (m migration) openDest(ec stateStore) (stateStore, func(), error) {
	if m.to.etcd {
		return ec, func() {}, nil
	}
	st, err := store.Open(m.to.path, store.Options{AuditRetention: m.cfg.AuditRetention, AuditMaxBytes: m.cfg.AuditMaxBytes})
	if errors.Is(err, store.ErrLocked) {
		return nil, nil, fmt.Errorf("%s is in use by a running stream-conductor: stop it first", m.to.path)
	}
	if err != nil {
		return nil, nil, err
	}
	return st, func() { st.Close() }, nil
}

// auditRecord says what the migration did (or that it failed), for the
// destination's audit log.
func (m migration) auditRecord(res desired.ImportResult, err error) desired.AuditRecord {
	rec := desired.AuditRecord{Time: time.Now().UTC(), RequestID: newMigrationID(), Actor: localActor(),
		Operation: OpMigrate, Request: m.request, Result: "ok",
		Stream: fmt.Sprintf("migrate from %s: %d created, %d updated, %d deleted, %d unchanged",
			m.from.name(), len(res.Create), len(res.Update), len(res.Delete), len(res.Unchanged))}
	if err != nil {
		rec.Stream, rec.Result = "migrate from "+m.from.name(), "failed: "+err.Error()
	}
	return rec
}

// printMigration prints the counts, then one line per stream: + created,
// ~ updated, - deleted, = unchanged; kept lists what only the destination
// has and stays (no --prune).
func printMigration(out io.Writer, res desired.ImportResult, what string, kept []stream.ID) {
	verbs := [4]string{"to create", "to update", "to delete", "unchanged"}
	if what == "migrated" {
		verbs = [4]string{"created", "updated", "deleted", "unchanged"}
		if len(res.Create)+len(res.Update)+len(res.Delete) == 0 {
			what = "nothing to change"
		}
	}
	fmt.Fprintf(out, "%s: %d %s, %d %s, %d %s, %d %s", what, len(res.Create), verbs[0], len(res.Update), verbs[1],
		len(res.Delete), verbs[2], len(res.Unchanged), verbs[3])
	if res.Revision != 0 {
		fmt.Fprintf(out, "; the destination is at revision %d", res.Revision)
	}
	fmt.Fprintln(out)
	for _, l := range []struct {
		sign string
		ids  []stream.ID
	}{{"+", res.Create}, {"~", res.Update}, {"-", res.Delete}, {"=", res.Unchanged}} {
		for _, id := range l.ids {
			fmt.Fprintf(out, "  %s %s\n", l.sign, id)
		}
	}
	for _, id := range kept {
		fmt.Fprintf(out, "  ! %s is only in the destination: kept (--prune deletes it)\n", id)
	}
}

func nStreams(n int) string {
	if n == 1 {
		return "1 stream"
	}
	return strconv.Itoa(n) + " streams"
}

// newMigrationID is the request id of a migration's audit record.
func newMigrationID() string {
	b := make([]byte, 8)
	rand.Read(b)
	return "migrate-" + hex.EncodeToString(b)
}

// localActor names who ran the migration: the local user, never a
// credential.
func localActor() string {
	host, _ := os.Hostname()
	if u, err := user.Current(); err == nil {
		return "local:" + u.Username + "@" + host
	}
	return "local:uid " + strconv.Itoa(os.Getuid()) + "@" + host
}
