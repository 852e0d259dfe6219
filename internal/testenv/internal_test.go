package testenv

import (
	"fmt"
	"strings"
	"testing"
)

// recorder is a testing.TB that records Skip and Fatal instead of stopping
// the goroutine.
type recorder struct {
	testing.TB
	skipped, fatal string
}

func (r *recorder) Helper()                           {}
func (r *recorder) Skip(args ...any)                  { r.skipped = fmt.Sprint(args...) }
func (r *recorder) Fatal(args ...any)                 { r.fatal = fmt.Sprint(args...) }
func (r *recorder) Fatalf(format string, args ...any) { r.fatal = fmt.Sprintf(format, args...) }

func TestMissingProgramSkipsLocallyAndFailsInCI(t *testing.T) {
	err := fmt.Errorf("shared MariaDB site 1: %w", &missingError{what: "mariadbd"})
	for _, ci := range []string{"", "true"} {
		t.Run("CI="+ci, func(t *testing.T) {
			t.Setenv("CI", ci)
			r := &recorder{TB: t}
			failStart(r, err)
			msg := r.skipped
			if ci == "true" {
				msg = r.fatal
			}
			if !strings.Contains(msg, "mariadbd not found; run `make setup`") {
				t.Fatalf("skipped %q, fatal %q", r.skipped, r.fatal)
			}
			if (ci == "true") != (r.skipped == "") {
				t.Fatalf("CI=%q: skipped %q, fatal %q", ci, r.skipped, r.fatal)
			}
		})
	}
}

func TestOtherStartErrorsFail(t *testing.T) {
	r := &recorder{TB: t}
	failStart(r, fmt.Errorf("testenv: MariaDB site 1: exit status 1"))
	if r.fatal == "" || r.skipped != "" {
		t.Fatalf("skipped %q, fatal %q", r.skipped, r.fatal)
	}
}

func TestUniqueName(t *testing.T) {
	t.Run("Weird/Name#01 with-CAPS", func(t *testing.T) {
		a, b := uniqueName(t, "t_", 64), uniqueName(t, "t_", 64)
		if a == b {
			t.Fatalf("two names %q", a)
		}
		if !strings.HasPrefix(a, "t_testuniquename_weird_name_01_with_caps_") {
			t.Fatalf("name %q", a)
		}
	})
	t.Run(strings.Repeat("x", 100), func(t *testing.T) {
		if n := uniqueName(t, "t_", 64); len(n) > 64 {
			t.Fatalf("%d bytes: %q", len(n), n)
		}
	})
}

func TestVersionTag(t *testing.T) {
	got := versionTag("/usr/sbin/mariadbd  Ver 10.11.19-MariaDB-0+deb12u1 for debian-linux-gnu on x86_64 (Debian 12)")
	if got != "10.11.19-MariaDB-0+deb12u1" {
		t.Fatalf("versionTag = %q", got)
	}
}
