package e2e

import (
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/tandemdb/tandem/internal/testenv"
)

// cpuSample is the CPU time (user+system, in clock ticks) every process
// on the machine had used, by command name, plus the machine's idle time.
type cpuSample struct {
	at    time.Time
	procs map[int]procCPU
	idle  uint64 // ticks, all CPUs
	steal uint64 // ticks the hypervisor gave to others, all CPUs
}

type procCPU struct {
	comm  string
	ticks uint64
}

// sampleCPU reads /proc. Benchmarks use it to show where the machine's
// cores went during a measured phase: on a 2-core machine the replication
// competes with the servers and the load generator it measures.
func sampleCPU() cpuSample {
	s := cpuSample{at: time.Now(), procs: map[int]procCPU{}}
	if b, err := os.ReadFile("/proc/stat"); err == nil {
		// "cpu  user nice system idle iowait irq softirq steal …"
		f := strings.Fields(strings.SplitN(string(b), "\n", 2)[0])
		if len(f) > 4 {
			s.idle, _ = strconv.ParseUint(f[4], 10, 64)
		}
		if len(f) > 8 {
			s.steal, _ = strconv.ParseUint(f[8], 10, 64)
		}
	}
	dirs, _ := os.ReadDir("/proc")
	for _, d := range dirs {
		pid, err := strconv.Atoi(d.Name())
		if err != nil {
			continue
		}
		b, err := os.ReadFile(filepath.Join("/proc", d.Name(), "stat"))
		if err != nil {
			continue
		}
		if comm, ticks, ok := testenv.ParseProcStat(b); ok {
			s.procs[pid] = procCPU{comm: comm, ticks: ticks}
		}
	}
	return s
}

// cpuReport renders the cores each command used between a and b, busiest
// first, and the idle cores.
func cpuReport(a, b cpuSample) string {
	secs := b.at.Sub(a.at).Seconds()
	by := map[string]float64{}
	for pid, p := range b.procs {
		used := p.ticks
		if q, ok := a.procs[pid]; ok && q.comm == p.comm {
			used -= q.ticks
		}
		by[p.comm] += float64(used) / testenv.ClockTicks / secs
	}
	names := make([]string, 0, len(by))
	for n, v := range by {
		if v >= 0.01 {
			names = append(names, n)
		}
	}
	sort.Slice(names, func(i, j int) bool { return by[names[i]] > by[names[j]] })
	parts := make([]string, 0, len(names)+1)
	for _, n := range names {
		parts = append(parts, fmt.Sprintf("%s %.2f", n, by[n]))
	}
	parts = append(parts, fmt.Sprintf("idle %.2f", float64(b.idle-a.idle)/testenv.ClockTicks/secs),
		fmt.Sprintf("stolen by the hypervisor %.2f", float64(b.steal-a.steal)/testenv.ClockTicks/secs))
	return "cores used: " + strings.Join(parts, ", ")
}

// profileReplicators fetches a CPU profile of d from every running
// replicator of c (admin.pprof must be on) into dir, concurrently, and
// returns the files written.
func profileReplicators(t testing.TB, c *cluster, d time.Duration, dir string) []string {
	var (
		wg    sync.WaitGroup
		mu    sync.Mutex
		files []string
	)
	for _, s := range c.sites {
		wg.Add(1)
		go func() {
			defer wg.Done()
			url := fmt.Sprintf("http://%s/debug/pprof/profile?seconds=%d", s.admin, int(d.Seconds()))
			req, _ := http.NewRequest("GET", url, nil)
			req.Header.Set("Authorization", "Bearer "+adminToken)
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Logf("profile %s: %v", s.name, err)
				return
			}
			defer resp.Body.Close()
			body, err := io.ReadAll(resp.Body)
			if err != nil || resp.StatusCode != http.StatusOK {
				t.Logf("profile %s: status %d, %v", s.name, resp.StatusCode, err)
				return
			}
			path := filepath.Join(dir, s.name+"-cpu.pprof")
			if err := os.WriteFile(path, body, 0o600); err != nil {
				t.Logf("profile %s: %v", s.name, err)
				return
			}
			mu.Lock()
			files = append(files, path)
			mu.Unlock()
		}()
	}
	wg.Wait()
	return files
}
