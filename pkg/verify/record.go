package verify

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sync"
	"time"
)

// A run directory holds what `verifier probe` observed and what `verifier
// check` found, so that `verifier report` can judge a run (or a drill)
// after the fact, from files alone:
//
//	run.json         RunInfo: sites, tenants, SLOs, start and end
//	probes.jsonl     one Record per probe write and per probe seen at a site
//	heartbeats.jsonl one Record per heartbeat lag sample
//	checks.jsonl     one CheckSummary per `verifier check --run DIR`
//	events.jsonl     Event annotations (`verifier mark`), e.g. "fault injected"
//
// JSON lines append cheaply and survive a killed verifier: at worst the
// last line is cut, and readers skip a cut last line.
const (
	RunFile        = "run.json"
	ProbesFile     = "probes.jsonl"
	HeartbeatsFile = "heartbeats.jsonl"
	ChecksFile     = "checks.jsonl"
	EventsFile     = "events.jsonl"
)

// RunFormat is the version of the run directory layout.
const RunFormat = 1

// RunInfo describes a probe run.
type RunInfo struct {
	Format  int       `json:"format"`
	Started time.Time `json:"started"`
	// Ended is zero while the probe runs (or when it was killed).
	Ended   time.Time `json:"ended,omitzero"`
	Sites   []SiteRef `json:"sites"`
	Tenants []Tenant  `json:"tenants,omitempty"`
	SLOs    SLOs      `json:"slos"`
	Rate    float64   `json:"rate"`
	Drained bool      `json:"drained"`
}

// SiteRef names a site in run files.
type SiteRef struct {
	Name string `json:"name"`
	ID   uint8  `json:"id"`
}

// Record kinds.
const (
	KindWrite     = "w" // a probe write attempt at Origin
	KindSeen      = "s" // probe (Origin, Seq) seen at Target
	KindHeartbeat = "h" // heartbeat lag of Origin's heartbeat at Target
)

// Record is one line of probes.jsonl or heartbeats.jsonl. Times are
// microseconds since the Unix epoch on the verifier's clock (one clock for
// every lag it computes, so sites' clock offsets do not enter probe lag).
type Record struct {
	Kind   string `json:"k"`
	Origin string `json:"o"`
	Target string `json:"t,omitempty"`
	Seq    uint64 `json:"q,omitempty"`
	Tenant string `json:"tn,omitempty"`
	// At: write attempt start, seen time, or heartbeat read time.
	At int64 `json:"at"`
	// Ack is when the write was acknowledged; 0 when it failed.
	Ack int64 `json:"ack,omitempty"`
	// Err is why the write failed.
	Err string `json:"err,omitempty"`
	// Lag is a heartbeat lag, microseconds.
	Lag int64 `json:"lag,omitempty"`
}

// Event is a human annotation on the run's timeline.
type Event struct {
	At   time.Time `json:"at"`
	Text string    `json:"text"`
}

func micros(t time.Time) int64 {
	if t.IsZero() {
		return 0
	}
	return t.UnixMicro()
}

func fromMicros(us int64) time.Time {
	if us == 0 {
		return time.Time{}
	}
	return time.UnixMicro(us).UTC()
}

// recorder appends records to the run directory. It is safe for
// concurrent use; Flush makes everything written so far readable.
type recorder struct {
	dir string
	mu  sync.Mutex
	fs  map[string]*bufio.Writer
	cl  []*os.File
	err error
}

func newRecorder(dir string) (*recorder, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, fmt.Errorf("run directory: %w", err)
	}
	return &recorder{dir: dir, fs: map[string]*bufio.Writer{}}, nil
}

func (r *recorder) writer(name string) (*bufio.Writer, error) {
	if w, ok := r.fs[name]; ok {
		return w, nil
	}
	f, err := os.OpenFile(filepath.Join(r.dir, name), os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o644)
	if err != nil {
		return nil, fmt.Errorf("run directory: %w", err)
	}
	w := bufio.NewWriterSize(f, 64<<10)
	r.fs[name] = w
	r.cl = append(r.cl, f)
	return w, nil
}

// append writes v as one JSON line to file name. The first error sticks
// and is returned by every later call and by Close.
func (r *recorder) append(name string, v any) error {
	line, err := json.Marshal(v)
	if err != nil {
		return err
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.err != nil {
		return r.err
	}
	w, err := r.writer(name)
	if err == nil {
		_, err = w.Write(append(line, '\n'))
	}
	if err != nil {
		r.err = fmt.Errorf("run directory %s: write %s: %w", r.dir, name, err)
	}
	return r.err
}

func (r *recorder) Flush() error {
	r.mu.Lock()
	defer r.mu.Unlock()
	for name, w := range r.fs {
		if err := w.Flush(); err != nil && r.err == nil {
			r.err = fmt.Errorf("run directory %s: write %s: %w", r.dir, name, err)
		}
	}
	return r.err
}

func (r *recorder) Close() error {
	err := r.Flush()
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, f := range r.cl {
		if cerr := f.Close(); cerr != nil && err == nil {
			err = cerr
		}
	}
	r.fs, r.cl = map[string]*bufio.Writer{}, nil
	return err
}

// WriteRunInfo writes dir/run.json atomically (a reader never sees half a
// file).
func WriteRunInfo(dir string, info RunInfo) error {
	data, err := json.MarshalIndent(info, "", "  ")
	if err != nil {
		return err
	}
	tmp := filepath.Join(dir, RunFile+".tmp")
	if err := os.WriteFile(tmp, append(data, '\n'), 0o644); err != nil {
		return fmt.Errorf("run directory: %w", err)
	}
	if err := os.Rename(tmp, filepath.Join(dir, RunFile)); err != nil {
		return fmt.Errorf("run directory: %w", err)
	}
	return nil
}

// AppendCheck adds a check's summary to dir/checks.jsonl.
func AppendCheck(dir string, s CheckSummary) error { return appendLine(dir, ChecksFile, s) }

// AppendEvent adds an annotation to dir/events.jsonl.
func AppendEvent(dir string, e Event) error { return appendLine(dir, EventsFile, e) }

func appendLine(dir, name string, v any) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("run directory: %w", err)
	}
	line, err := json.Marshal(v)
	if err != nil {
		return err
	}
	f, err := os.OpenFile(filepath.Join(dir, name), os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o644)
	if err != nil {
		return fmt.Errorf("run directory: %w", err)
	}
	_, err = f.Write(append(line, '\n'))
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("run directory: write %s: %w", name, err)
	}
	return nil
}

// Run is everything a run directory holds.
type Run struct {
	Dir        string
	Info       RunInfo
	Probes     []Record
	Heartbeats []Record
	Checks     []CheckSummary
	Events     []Event
}

// ReadRun reads a run directory. A missing run.json is an error (this is
// not a run directory); missing record files are empty.
func ReadRun(dir string) (*Run, error) {
	data, err := os.ReadFile(filepath.Join(dir, RunFile))
	if err != nil {
		return nil, fmt.Errorf("run directory %s: %w (a run directory is made by `verifier probe --run DIR`)", dir, err)
	}
	r := &Run{Dir: dir}
	if err := json.Unmarshal(data, &r.Info); err != nil {
		return nil, fmt.Errorf("run directory %s: %s: %w", dir, RunFile, err)
	}
	if r.Info.Format != RunFormat {
		return nil, fmt.Errorf("run directory %s: format %d; allowed %d", dir, r.Info.Format, RunFormat)
	}
	if err := readLines(dir, ProbesFile, &r.Probes); err != nil {
		return nil, err
	}
	if err := readLines(dir, HeartbeatsFile, &r.Heartbeats); err != nil {
		return nil, err
	}
	if err := readLines(dir, ChecksFile, &r.Checks); err != nil {
		return nil, err
	}
	if err := readLines(dir, EventsFile, &r.Events); err != nil {
		return nil, err
	}
	return r, nil
}

func readLines[T any](dir, name string, out *[]T) error {
	f, err := os.Open(filepath.Join(dir, name))
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("run directory: %w", err)
	}
	defer f.Close()
	br := bufio.NewReaderSize(f, 64<<10)
	for n := 1; ; n++ {
		line, err := br.ReadBytes('\n')
		if len(line) > 0 {
			var v T
			if jerr := json.Unmarshal(line, &v); jerr != nil {
				if errors.Is(err, io.EOF) {
					// A cut last line: the writer was killed mid-line.
					return nil
				}
				return fmt.Errorf("run directory %s: %s line %d: %w", dir, name, n, jerr)
			}
			*out = append(*out, v)
		}
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return fmt.Errorf("run directory %s: read %s: %w", dir, name, err)
		}
	}
}
