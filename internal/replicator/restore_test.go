package replicator

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/tandemdb/tandem/internal/testenv"
	"github.com/tandemdb/tandem/pkg/config"
	"github.com/tandemdb/tandem/pkg/event"
	"github.com/tandemdb/tandem/pkg/pipeline"
)

// TestParseBackupGTID: both servers' positions parse; anything else is
// refused with what a position looks like.
func TestParseBackupGTID(t *testing.T) {
	for _, s := range []string{"0-1-1234", " 0-1-1234,2-102-7\n", "3E11FA47-71CA-11E1-9E33-C80AA9429562:1-5"} {
		if _, err := parseBackupGTID(s); err != nil {
			t.Errorf("%q: %v", s, err)
		}
	}
	for _, s := range []string{"", "yesterday", "0-1", "mysql-bin.000003 4567"} {
		_, err := parseBackupGTID(s)
		if err == nil || !strings.Contains(err.Error(), "--backup-gtid") || !strings.Contains(err.Error(), "e.g. 0-1-1234") {
			t.Errorf("%q: err %v, want one naming --backup-gtid and the allowed forms", s, err)
		}
	}
}

// TestContainsTxn: a transaction is in the backup when its domain's
// position reaches it (MariaDB) or its set holds it (MySQL); a domain the
// position does not name is not in it; a message without a GTID is an
// error, not a guess.
func TestContainsTxn(t *testing.T) {
	maria, err := parseBackupGTID("0-1-100,1-2-7")
	if err != nil {
		t.Fatal(err)
	}
	mysql8, err := parseBackupGTID("3e11fa47-71ca-11e1-9e33-c80aa9429562:1-5")
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		gtid string
		want bool
	}{{"0-1-99", true}, {"0-1-100", true}, {"0-1-101", false}, {"1-2-7", true}, {"1-2-8", false}, {"2-3-1", false}} {
		if got, err := containsTxn(maria, c.gtid); err != nil || got != c.want {
			t.Errorf("MariaDB %s in 0-1-100,1-2-7: %v, %v; want %v", c.gtid, got, err, c.want)
		}
	}
	for _, c := range []struct {
		gtid string
		want bool
	}{{"3e11fa47-71ca-11e1-9e33-c80aa9429562:5", true}, {"3e11fa47-71ca-11e1-9e33-c80aa9429562:6", false}, {"4e11fa47-71ca-11e1-9e33-c80aa9429562:1", false}} {
		if got, err := containsTxn(mysql8, c.gtid); err != nil || got != c.want {
			t.Errorf("MySQL %s: %v, %v; want %v", c.gtid, got, err, c.want)
		}
	}
	if _, err := containsTxn(maria, ""); err == nil {
		t.Error("a message without a GTID was judged")
	}
}

// TestStartAfter: just after the last contained record; from the start of
// a partition that holds its whole history and nothing of the backup;
// refused when retention may have taken what the backup lacks, unless the
// operator says the backup is younger than the retention.
func TestStartAfter(t *testing.T) {
	for _, c := range []struct {
		first, last     int64
		withinRetention bool
		want            int64
		ok              bool
	}{
		{0, 6, false, 7, true}, {100, 150, false, 151, true}, {0, -1, false, 0, true},
		{100, -1, false, 0, false}, // retention may have taken what the backup lacks
		{100, -1, true, 100, true}, // unless the backup is younger than the retention
		{100, 150, true, 151, true},
	} {
		if got, ok := startAfter(c.first, c.last, c.withinRetention); got != c.want || ok != c.ok {
			t.Errorf("startAfter(%d, %d, %v) = %d, %v; want %d, %v", c.first, c.last, c.withinRetention, got, ok, c.want, c.ok)
		}
	}
}

// TestStartAfterBackupRepublished: a partition of a real broker holds
// T5 T6 T7, then, as after a source replicator's restart, T5 T6 T7 T8
// again. For a backup at T6 the sink starts at the second T7: what lies
// before it and is not in the backup (the first T7) is repeated after it.
// A backup before everything starts at the partition's first record; one
// after everything at its end.
func TestStartAfterBackupRepublished(t *testing.T) {
	broker := testenv.SharedBroker(t)
	kc := pipeline.KafkaConfig{Brokers: []string{broker.Addr}}
	ctx := context.Background()
	topic := testenv.Topic(t)
	parts, err := pipeline.EnsureTopic(ctx, kc, topic)
	if err != nil {
		t.Fatal(err)
	}
	var msgs []pipeline.Message
	for _, seq := range []int{5, 6, 7, 5, 6, 7, 8} {
		v, err := event.Encode(nil, &event.Txn{Origin: 1, GTID: fmt.Sprintf("1-101-%d", seq), CommitTime: time.Now()})
		if err != nil {
			t.Fatal(err)
		}
		msgs = append(msgs, pipeline.Message{Value: v})
	}
	prod := pipeline.NewProducer(kc, topic, parts)
	defer prod.Close()
	if err := prod.ProducePartition(ctx, 0, msgs); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		backup string
		want   int64
	}{{"1-101-6", 5}, {"1-101-4", 0}, {"1-101-8", 7}, {"0-1-99", 0}} {
		set, err := parseBackupGTID(c.backup)
		if err != nil {
			t.Fatal(err)
		}
		got, scanned, err := startAfterBackup(ctx, kc, topic, 0, 0, 7, backupSource{gtid: set, text: c.backup})
		if err != nil || got != c.want || scanned != 7 {
			t.Errorf("backup at %s: start %d after %d records, %v; want %d after 7", c.backup, got, scanned, err, c.want)
		}
	}
	// A malformed record is named, not skipped.
	if err := prod.ProducePartition(ctx, 0, []pipeline.Message{{Value: []byte("not an event")}}); err != nil {
		t.Fatal(err)
	}
	set, _ := parseBackupGTID("1-101-6")
	if _, _, err := startAfterBackup(ctx, kc, topic, 0, 0, 8, backupSource{gtid: set, text: "1-101-6"}); err == nil || !strings.Contains(err.Error(), "/0 at offset 7") {
		t.Errorf("malformed record: %v", err)
	}
}

// TestBackupQueues: queued messages in the backup need HA here to be
// taken over; with several peers and none in the backup, the operator must
// vouch that the source's own store held none; with one peer there is
// nothing to miss.
func TestBackupQueues(t *testing.T) {
	src := backupSource{peer: config.Peer{ID: 1, Name: "s1"}}
	vouched := src
	vouched.queuesEmpty = true
	for _, c := range []struct {
		peers, queued int
		ha            bool
		src           backupSource
		want          string
	}{
		{1, 0, false, src, ""},
		{1, 3, false, src, "enable ha here"},
		{1, 3, true, src, ""},
		{2, 0, false, src, "pass --queues-empty-at-backup"},
		{2, 0, false, vouched, ""},
		{2, 3, true, src, ""},
	} {
		err := backupQueues(c.peers, c.queued, c.ha, c.src)
		if (err == nil) != (c.want == "") || (err != nil && !strings.Contains(err.Error(), c.want)) {
			t.Errorf("%d peers, %d queued, ha %v, vouched %v: %v; want %q", c.peers, c.queued, c.ha, c.src.queuesEmpty, err, c.want)
		}
	}
}
