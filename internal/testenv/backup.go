package testenv

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// Backup takes a physical backup of m with mariadb-backup (Debian package
// mariadb-backup; without it the test skips, or fails under CI) while m
// runs, prepares it so that a server can start on it (MariaDBOptions
// DataDirFrom), and returns its directory and the GTID position it is
// consistent with (the third field of xtrabackup_binlog_info).
func (m *MariaDB) Backup(t testing.TB) (dir, gtid string) {
	t.Helper()
	bin := LookPath(t, "mariadb-backup")
	dir = filepath.Join(t.TempDir(), "backup")
	for _, args := range [][]string{
		{"--backup", "--target-dir=" + dir, "--user=" + m.User, "--socket=" + m.Socket},
		{"--prepare", "--target-dir=" + dir},
	} {
		if out, err := exec.Command(bin, args...).CombinedOutput(); err != nil {
			t.Fatalf("testenv: mariadb-backup %s: %v\n%s", args[0], err, lastLines(string(out), 20))
		}
	}
	info, err := os.ReadFile(filepath.Join(dir, "xtrabackup_binlog_info"))
	if err != nil {
		t.Fatalf("testenv: mariadb-backup: %v", err)
	}
	fields := strings.Fields(string(info))
	if len(fields) < 3 {
		t.Fatalf("testenv: mariadb-backup: xtrabackup_binlog_info holds %q; want file, offset and GTID position", info)
	}
	return dir, fields[2]
}
