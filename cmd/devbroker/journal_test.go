package main

import (
	"encoding/binary"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"
)

type testFrame struct {
	key, version int16
	body         string
}

func appendFrames(t *testing.T, j *journal, frames ...testFrame) {
	t.Helper()
	var last uint64
	for _, f := range frames {
		seq, err := j.append(f.key, f.version, func(b []byte) []byte { return append(b, f.body...) })
		if err != nil {
			t.Fatal(err)
		}
		last = seq
	}
	if err := j.waitDurable(last); err != nil {
		t.Fatal(err)
	}
}

func readFrames(t *testing.T, path string) ([]testFrame, readResult) {
	t.Helper()
	var got []testFrame
	res, err := readJournal(path, func(key, version int16, body []byte) error {
		got = append(got, testFrame{key, version, string(body)})
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return got, res
}

func equalFrames(a, b []testFrame) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

func TestJournalRoundTrip(t *testing.T) {
	path := filepath.Join(t.TempDir(), journalName)
	if got, res := readFrames(t, path); len(got) != 0 || res.validEnd != 0 {
		t.Fatalf("missing journal: %d frames, %+v; want none", len(got), res)
	}
	j, err := openJournal(path, 0)
	if err != nil {
		t.Fatal(err)
	}
	want := []testFrame{{0, 7, "produce"}, {19, 5, ""}, {20, 6, strings.Repeat("x", 100000)}}
	appendFrames(t, j, want...)
	if err := j.Close(); err != nil {
		t.Fatal(err)
	}
	got, res := readFrames(t, path)
	if !equalFrames(got, want) || res.frames != 3 || res.validEnd != res.size {
		t.Fatalf("read %d frames (%+v), want %d and no tail", len(got), res, len(want))
	}

	// Reopening appends after what is there.
	j, err = openJournal(path, res.validEnd)
	if err != nil {
		t.Fatal(err)
	}
	appendFrames(t, j, testFrame{37, 3, "more"})
	if err := j.Close(); err != nil {
		t.Fatal(err)
	}
	if got, _ := readFrames(t, path); !equalFrames(got, append(want, testFrame{37, 3, "more"})) {
		t.Fatalf("after reopening: %d frames, want %d", len(got), len(want)+1)
	}
}

// TestJournalTornTail cuts or damages the last frame in every way a crash
// can and checks that the intact frames survive, the tail is dropped, and
// frames appended afterwards are readable (not stuck behind the garbage).
func TestJournalTornTail(t *testing.T) {
	intact := []testFrame{{0, 7, "first"}, {0, 7, "second"}}
	last := testFrame{0, 7, "the last frame, which the crash tears"}
	tests := []struct {
		name   string
		damage func(whole []byte, lastAt int) []byte
	}{
		{"header cut short", func(b []byte, at int) []byte { return b[:at+5] }},
		{"body cut short", func(b []byte, at int) []byte { return b[:len(b)-3] }},
		{"bad crc", func(b []byte, at int) []byte { b[len(b)-1] ^= 0xff; return b }},
		{"length past end", func(b []byte, at int) []byte {
			binary.BigEndian.PutUint32(b[at:], 1<<20)
			return b
		}},
		{"zeroed", func(b []byte, at int) []byte { clear(b[at:]); return b }},
		{"length too small", func(b []byte, at int) []byte {
			binary.BigEndian.PutUint32(b[at:], 2)
			return b
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), journalName)
			j, err := openJournal(path, 0)
			if err != nil {
				t.Fatal(err)
			}
			appendFrames(t, j, intact...)
			if err := j.Close(); err != nil {
				t.Fatal(err)
			}
			st, err := os.Stat(path)
			if err != nil {
				t.Fatal(err)
			}
			lastAt := int(st.Size())
			j, err = openJournal(path, st.Size())
			if err != nil {
				t.Fatal(err)
			}
			appendFrames(t, j, last)
			if err := j.Close(); err != nil {
				t.Fatal(err)
			}
			whole, err := os.ReadFile(path)
			if err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(path, tt.damage(whole, lastAt), 0o644); err != nil {
				t.Fatal(err)
			}

			got, res := readFrames(t, path)
			if !equalFrames(got, intact) || res.validEnd != int64(lastAt) || res.size <= res.validEnd {
				t.Fatalf("read %v (%+v); want the %d intact frames ending at %d, then a tail", got, res, len(intact), lastAt)
			}
			j, err = openJournal(path, res.validEnd)
			if err != nil {
				t.Fatal(err)
			}
			appendFrames(t, j, testFrame{0, 7, "after the crash"})
			if err := j.Close(); err != nil {
				t.Fatal(err)
			}
			got, res = readFrames(t, path)
			want := append(append([]testFrame(nil), intact...), testFrame{0, 7, "after the crash"})
			if !equalFrames(got, want) || res.size != res.validEnd {
				t.Fatalf("after reopening: %v (%+v), want %v and no tail", got, res, want)
			}
		})
	}
}

func TestJournalHeader(t *testing.T) {
	dir := t.TempDir()
	torn := filepath.Join(dir, "torn")
	if err := os.WriteFile(torn, []byte(journalMagic[:5]), 0o644); err != nil {
		t.Fatal(err)
	}
	got, res := readFrames(t, torn)
	if len(got) != 0 || res.validEnd != 0 {
		t.Fatalf("torn header: %v, %+v; want an empty journal", got, res)
	}
	j, err := openJournal(torn, res.validEnd)
	if err != nil {
		t.Fatal(err)
	}
	appendFrames(t, j, testFrame{0, 3, "x"})
	if err := j.Close(); err != nil {
		t.Fatal(err)
	}
	if got, _ := readFrames(t, torn); len(got) != 1 {
		t.Fatalf("after rewriting a torn header: %d frames, want 1", len(got))
	}

	alien := filepath.Join(dir, "alien")
	if err := os.WriteFile(alien, []byte("this is somebody else's file"), 0o644); err != nil {
		t.Fatal(err)
	}
	_, err = readJournal(alien, func(int16, int16, []byte) error { return nil })
	if err == nil || !strings.Contains(err.Error(), "not a devbroker journal") {
		t.Fatalf("foreign file: error %v, want one saying it is not a journal", err)
	}
}

func TestJournalReplayErrorNamesFrame(t *testing.T) {
	path := filepath.Join(t.TempDir(), journalName)
	j, err := openJournal(path, 0)
	if err != nil {
		t.Fatal(err)
	}
	appendFrames(t, j, testFrame{0, 7, "a"}, testFrame{0, 7, "b"})
	if err := j.Close(); err != nil {
		t.Fatal(err)
	}
	_, err = readJournal(path, func(_, _ int16, body []byte) error {
		if string(body) == "b" {
			return fmt.Errorf("cannot apply")
		}
		return nil
	})
	if err == nil || !strings.Contains(err.Error(), "frame 1 at offset") {
		t.Fatalf("error %v, want one naming frame 1 and its offset", err)
	}
}

// TestDurableConnWaitsForFsync checks the acks=all promise at its root: a
// response written while a journaled request is not yet fsynced reaches the
// client only after the fsync.
func TestDurableConnWaitsForFsync(t *testing.T) {
	path := filepath.Join(t.TempDir(), journalName)
	j, err := openJournal(path, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer j.Close()
	var (
		mu      sync.Mutex
		events  []string
		entered = make(chan struct{}, 1)
		release = make(chan struct{})
	)
	record := func(e string) {
		mu.Lock()
		events = append(events, e)
		mu.Unlock()
	}
	realSync := j.sync
	j.mu.Lock()
	j.sync = func() error {
		entered <- struct{}{}
		<-release
		record("fsync")
		return realSync()
	}
	j.mu.Unlock()

	client, server := net.Pipe()
	defer client.Close()
	conn := &durableConn{Conn: server, j: j}
	if _, err := j.append(0, 7, func(b []byte) []byte { return append(b, "produce"...) }); err != nil {
		t.Fatal(err)
	}
	<-entered
	written := make(chan error, 1)
	go func() {
		_, err := conn.Write([]byte("ack"))
		written <- err
	}()
	read := make(chan struct{})
	go func() {
		defer close(read)
		buf := make([]byte, 3)
		if _, err := io.ReadFull(client, buf); err == nil {
			record("response")
		}
	}()
	select {
	case <-read:
		t.Fatal("the response reached the client while its request was not fsynced")
	case <-time.After(100 * time.Millisecond):
	}
	close(release)
	if err := <-written; err != nil {
		t.Fatal(err)
	}
	<-read
	mu.Lock()
	defer mu.Unlock()
	if !slices.Equal(events, []string{"fsync", "response"}) {
		t.Fatalf("events %v, want fsync then response", events)
	}
	server.Close()
}

// TestJournalGroupCommit appends from many goroutines while fsyncs are slow
// and checks that every frame lands, in fewer fsyncs than frames.
func TestJournalGroupCommit(t *testing.T) {
	path := filepath.Join(t.TempDir(), journalName)
	j, err := openJournal(path, 0)
	if err != nil {
		t.Fatal(err)
	}
	var syncs int
	realSync := j.sync
	j.mu.Lock()
	j.sync = func() error {
		syncs++ // only the syncer goroutine calls sync
		return realSync()
	}
	j.mu.Unlock()
	const writers, each = 8, 200
	var wg sync.WaitGroup
	for w := range writers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range each {
				seq, err := j.append(0, 7, func(b []byte) []byte { return fmt.Appendf(b, "w%d-%d", w, i) })
				if err == nil {
					err = j.waitDurable(seq)
				}
				if err != nil {
					t.Error(err)
					return
				}
			}
		}()
	}
	wg.Wait()
	if err := j.Close(); err != nil {
		t.Fatal(err)
	}
	got, _ := readFrames(t, path)
	if len(got) != writers*each {
		t.Fatalf("%d frames, want %d", len(got), writers*each)
	}
	if syncs >= writers*each {
		t.Errorf("%d fsyncs for %d frames: appends do not share fsyncs", syncs, writers*each)
	}
	t.Logf("%d frames in %d fsyncs", len(got), syncs)
}
