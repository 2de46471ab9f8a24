package nginxconf

import (
	"bytes"
	"errors"
	"net/netip"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/streamconductor/stream-conductor/stream"
)

func banSpec(b *stream.BanPolicy) stream.Spec {
	return stream.Spec{Protocol: stream.TCP, Listen: 9000, Backends: []string{"backend:2000"}, Ban: b}
}

func TestValidateBanCanonical(t *testing.T) {
	got, err := Validate(banSpec(&stream.BanPolicy{After: 10, Within: "60s", For: "90m"}), testRules)
	if err != nil {
		t.Fatal(err)
	}
	if *got.Ban != (stream.BanPolicy{After: 10, Within: "1m0s", For: "1h30m0s"}) {
		t.Errorf("ban = %+v", *got.Ban)
	}
	udp := banSpec(&stream.BanPolicy{After: 1, Within: "1s", For: "8760h"})
	udp.Protocol = stream.UDP
	if _, err := Validate(udp, testRules); err != nil {
		t.Errorf("udp with the widest bounds: %v", err)
	}
}

func TestValidateBanRejects(t *testing.T) {
	for _, tc := range []struct {
		name  string
		ban   stream.BanPolicy
		field string
	}{
		{"after 0", stream.BanPolicy{After: 0, Within: "1m", For: "1h"}, "ban.after"},
		{"after negative", stream.BanPolicy{After: -1, Within: "1m", For: "1h"}, "ban.after"},
		{"after too many", stream.BanPolicy{After: 1001, Within: "1m", For: "1h"}, "ban.after"},
		{"within missing", stream.BanPolicy{After: 3, For: "1h"}, "ban.within"},
		{"within not a duration", stream.BanPolicy{After: 3, Within: "a minute", For: "1h"}, "ban.within"},
		{"within too short", stream.BanPolicy{After: 3, Within: "500ms", For: "1h"}, "ban.within"},
		{"within over a day", stream.BanPolicy{After: 3, Within: "25h", For: "1h"}, "ban.within"},
		{"within negative", stream.BanPolicy{After: 3, Within: "-1m", For: "1h"}, "ban.within"},
		{"for missing", stream.BanPolicy{After: 3, Within: "1m"}, "ban.for"},
		{"for over a year", stream.BanPolicy{After: 3, Within: "1m", For: "8761h"}, "ban.for"},
		{"for sub-millisecond", stream.BanPolicy{After: 3, Within: "1m", For: "1.0000001s"}, "ban.for"},
		{"for huge", stream.BanPolicy{After: 3, Within: "1m", For: strings.Repeat("9", 40) + "h"}, "ban.for"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Validate(banSpec(&tc.ban), testRules)
			var fe *FieldError
			if !errors.As(err, &fe) || fe.Field != tc.field {
				t.Fatalf("err = %v, want a %s error", err, tc.field)
			}
		})
	}
}

// External mode has no session log: a policy that could never trigger is
// refused, and says why.
func TestValidateBanRefusedWithoutSessionLog(t *testing.T) {
	r := testRules
	r.NoSessionLog = true
	_, err := Validate(banSpec(&stream.BanPolicy{After: 3, Within: "1m", For: "1h"}), r)
	var fe *FieldError
	if !errors.As(err, &fe) || fe.Field != "ban" || !strings.Contains(fe.Message, "NGINX_MODE") {
		t.Fatalf("err = %v", err)
	}
	if _, err := Validate(banSpec(nil), r); err != nil {
		t.Errorf("a spec without ban refused in external mode: %v", err)
	}
}

// goldenBanned are the addresses the golden cases of testdata/banned are
// rendered with.
var goldenBanned = []string{"127.0.0.3", "2001:db8::7"}

// Banned addresses are deny lines at the top of the server block, before
// the stream's allow list: the first match wins. Each case also passes
// nginx -t.
func TestRenderBannedGolden(t *testing.T) {
	files, _ := filepath.Glob("testdata/banned/*.json")
	if len(files) == 0 {
		t.Fatal("no cases in testdata/banned")
	}
	bin := nginxBinary(t)
	for _, f := range files {
		name := strings.TrimSuffix(filepath.Base(f), ".json")
		t.Run(name, func(t *testing.T) {
			s := loadCase(t, filepath.Join("banned", name))
			o := goldenOptions
			o.Banned = goldenBanned
			file, body, err := Render(s, goldenAddrs, o)
			if err != nil {
				t.Fatal(err)
			}
			golden := strings.TrimSuffix(f, ".json") + ".conf"
			if *update {
				if err := os.WriteFile(golden, body, 0o644); err != nil {
					t.Fatal(err)
				}
			}
			want, err := os.ReadFile(golden)
			if err != nil {
				t.Fatalf("%v (run go test ./nginxconf -update to create it)", err)
			}
			if !bytes.Equal(body, want) {
				t.Errorf("render differs from %s:\n--- got\n%s\n--- want\n%s", golden, body, want)
			}
			_, plain, _ := Render(s, goldenAddrs, goldenOptions)
			if bytes.Contains(plain, []byte("deny 127.0.0.3")) {
				t.Error("a render without Banned denies")
			}
			dir := t.TempDir()
			if err := os.WriteFile(filepath.Join(dir, file), body, 0o644); err != nil {
				t.Fatal(err)
			}
			if out, err := nginxTest(t, bin, dir); err != nil {
				t.Fatalf("nginx -t rejects %s: %v\n%s", golden, err, out)
			}
		})
	}
}

// withBans gives every third candidate of the accepted-spec property a
// ban policy and the returned banned addresses (none for the others).
func withBans(i int, s *stream.Spec) []string {
	if i%3 != 0 {
		return nil
	}
	s.Ban = &stream.BanPolicy{After: 1 + i%1000, Within: "1m", For: "1h"}
	return []string{"127.0.0.3", "192.0.2." + strconv.Itoa(i%250+1), "2001:db8::" + strconv.FormatInt(int64(i), 16)}
}

// Hostile ban policies are refused with a field error or accepted in
// canonical form within their bounds; an accepted one renders nothing of
// its own (the policy is the daemon's, not nginx's).
func FuzzBanPolicy(f *testing.F) {
	f.Add(10, "1m", "1h")
	f.Add(0, "", "")
	f.Add(1000, "24h", "8760h")
	f.Add(3, "1m;deny all", "1h\n}")
	f.Add(-1, "9223372036854775807ns", "-1h")
	f.Fuzz(func(t *testing.T, after int, within, dur string) {
		s, err := Validate(banSpec(&stream.BanPolicy{After: after, Within: within, For: dur}), testRules)
		if err != nil {
			var fe *FieldError
			if !errors.As(err, &fe) || !strings.HasPrefix(fe.Field, "ban") {
				t.Fatalf("error %v names no ban field", err)
			}
			return
		}
		w, werr := time.ParseDuration(s.Ban.Within)
		d, derr := time.ParseDuration(s.Ban.For)
		if werr != nil || derr != nil || w < time.Second || w > maxBanWithin || d < time.Second || d > maxBanFor ||
			s.Ban.After < 1 || s.Ban.After > MaxBanAfter || w.String() != s.Ban.Within || d.String() != s.Ban.For {
			t.Fatalf("accepted %+v", *s.Ban)
		}
		_, body, err := Render(s, Addrs{"backend": {netip.MustParseAddr("192.0.2.1")}}, RenderOptions{Prefix: "stream-"})
		if err != nil || strings.Contains(string(body), "deny") {
			t.Fatalf("render: %v\n%s", err, body)
		}
	})
}
