package testenv

import (
	"fmt"
	"os"
	"strconv"
	"strings"
	"time"
)

// ClockTicks is USER_HZ, the unit of /proc's CPU times: 100 on every Linux
// architecture Go supports.
const ClockTicks = 100

// ParseProcStat reads a process's command name and the CPU time (user +
// system, in ClockTicks, all its threads) from the contents of
// /proc/<pid>/stat. The command name is in parentheses and may itself hold
// spaces and parentheses, so the fields are counted from the last ')'.
func ParseProcStat(stat []byte) (comm string, ticks uint64, ok bool) {
	s := string(stat)
	open, end := strings.IndexByte(s, '('), strings.LastIndexByte(s, ')')
	if open < 0 || end < open {
		return "", 0, false
	}
	// pid (comm) state ppid … utime(14) stime(15)
	f := strings.Fields(s[end+1:])
	if len(f) < 13 {
		return "", 0, false
	}
	ut, err1 := strconv.ParseUint(f[11], 10, 64)
	st, err2 := strconv.ParseUint(f[12], 10, 64)
	if err1 != nil || err2 != nil {
		return "", 0, false
	}
	return s[open+1 : end], ut + st, true
}

// ServerCPU is the CPU time the server process has used so far, all its
// threads. Benchmarks subtract two readings to report what a statement
// costs the server itself, apart from the client and the round trips,
// which on a shared 2-core machine blur wall-clock figures.
func (m *MariaDB) ServerCPU() (time.Duration, error) {
	m.mu.Lock()
	p := m.proc
	m.mu.Unlock()
	if p == nil || p.cmd.Process == nil {
		return 0, fmt.Errorf("testenv: MariaDB site %d is not running", m.site)
	}
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", p.cmd.Process.Pid))
	if err != nil {
		return 0, fmt.Errorf("testenv: CPU time of MariaDB site %d: %w", m.site, err)
	}
	_, ticks, ok := ParseProcStat(b)
	if !ok {
		return 0, fmt.Errorf("testenv: CPU time of MariaDB site %d: cannot parse %q", m.site, b)
	}
	return time.Duration(ticks) * time.Second / ClockTicks, nil
}
