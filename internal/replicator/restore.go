package replicator

import (
	"bytes"
	"context"
	"database/sql"
	"fmt"
	"io"
	"strings"

	"github.com/go-mysql-org/go-mysql/mysql"

	"github.com/tandemdb/tandem/pkg/config"
	"github.com/tandemdb/tandem/pkg/event"
	"github.com/tandemdb/tandem/pkg/pipeline"
	"github.com/tandemdb/tandem/pkg/schema"
)

// backupSource is the peer whose physical backup this site's database was
// restored from, and the binary log position the backup is consistent
// with.
type backupSource struct {
	peer config.Peer
	gtid mysql.GTIDSet
	text string // as given, for messages
	// queuesEmpty is the operator's word that the source held no queued
	// messages of other sites when the backup was taken (needed with more
	// than one peer when the queues were not in the backup; see
	// seedFromBackup).
	queuesEmpty bool
	// withinRetention is the operator's word that the backup's consistent
	// point is younger than the topic's retention: every record retention
	// deleted was produced before it, so the backup holds its transaction
	// (see startAfterBackup).
	withinRetention bool
}

// parseBackupGTID reads a backup's binary log position, as the backup tool
// records it in xtrabackup_binlog_info: a MariaDB GTID position
// ("0-1-100,1-2-7", mariadb-backup) or a MySQL GTID set ("3E11FA47-…:1-5",
// Percona XtraBackup).
func parseBackupGTID(s string) (mysql.GTIDSet, error) {
	s = strings.TrimSpace(s)
	if s == "" {
		return nil, fmt.Errorf("--backup-gtid is empty; give the backup's GTID position (the GTID field of the backup's xtrabackup_binlog_info; MariaDB: e.g. 0-1-1234, MySQL: uuid:1-100)")
	}
	flavor := mysql.MariaDBFlavor
	if strings.Contains(s, ":") {
		flavor = mysql.MySQLFlavor
	}
	set, err := mysql.ParseGTIDSet(flavor, s)
	if err != nil {
		return nil, fmt.Errorf("--backup-gtid %q is not a GTID position (MariaDB: domain-server-sequence[,…], e.g. 0-1-1234; MySQL: uuid:interval[,…]): %v", s, err)
	}
	return set, nil
}

// containsTxn says whether the backup's position includes the transaction
// with GTID g (as the binlog reader names it: MariaDB "d-s-n", MySQL
// "uuid:n").
func containsTxn(backup mysql.GTIDSet, g string) (bool, error) {
	flavor := mysql.MariaDBFlavor
	if _, ok := backup.(*mysql.MysqlGTIDSet); ok {
		flavor = mysql.MySQLFlavor
	}
	set, err := mysql.ParseGTIDSet(flavor, g)
	if err != nil {
		return false, fmt.Errorf("GTID %q: %v", g, err)
	}
	if set.IsEmpty() {
		return false, fmt.Errorf("the message carries no GTID")
	}
	return backup.Contain(set), nil
}

// startAfterBackup finds where in one partition of the source's topic this
// site's sink starts so that it applies exactly what the backup lacks. The
// records in [first, end) are read in order; the start is just after the
// last one whose transaction the backup contains.
//
// Why the last one and not the first one the backup lacks: the source's
// reader publishes in commit order, but after a restart it publishes again
// from its checkpoint, so a partition may hold T5 T6 T7 T5 T6 T7 T8. Every
// republication sends all later transactions again, in order, so whatever
// the backup lacks appears after its last contained record. What lies
// before the start and is not contained is a duplicate of something after
// it; what lies after and is contained applies as a no-op
// (compare-and-set on equal versions), as in the logical seed.
//
// With nothing contained, the partition's history must start at offset 0:
// if retention deleted older records, the backup may lack some of them and
// they are gone. That is so unless the operator knows the backup to be
// younger than the retention (src.withinRetention): then every deleted
// record is older than the backup and in it, and the sink starts at the
// first record retained. The typical case is a partition that only a quiet
// tenant's transactions hash to, with nothing retained at all.
func startAfterBackup(ctx context.Context, kc pipeline.KafkaConfig, topic string, part int, first, end int64, src backupSource) (start int64, scanned int, err error) {
	last := int64(-1)
	err = pipeline.ScanPartition(ctx, kc, topic, part, first, end, func(off int64, value []byte) error {
		scanned++
		t, err := event.Decode(value)
		if err != nil {
			return fmt.Errorf("%s/%d at offset %d: %w", topic, part, off, err)
		}
		in, err := containsTxn(src.gtid, t.GTID)
		if err != nil {
			return fmt.Errorf("%s/%d at offset %d: %w", topic, part, off, err)
		}
		if in {
			last = off
		}
		return nil
	})
	if err != nil {
		return 0, scanned, err
	}
	start, ok := startAfter(first, last, src.withinRetention)
	if !ok {
		return 0, scanned, fmt.Errorf("%s/%d holds no transaction of the backup (GTID %s) and starts at offset %d: retention deleted the %d records before it, "+
			"which the backup may lack. If the backup's consistent point is younger than the topic's retention (retention.ms), every deleted record "+
			"came before it and is in the backup: pass --backup-within-retention; otherwise take a newer backup", topic, part, src.text, first, first)
	}
	return start, scanned, nil
}

// startAfter is where a partition's sink starts given the partition's
// first offset and the offset of the last record the backup contains (-1:
// none); false when that cannot be told (see startAfterBackup).
func startAfter(first, lastContained int64, withinRetention bool) (int64, bool) {
	switch {
	case lastContained >= 0:
		return lastContained + 1, true
	case first > 0 && !withinRetention:
		return 0, false
	}
	return first, true
}

// seedFromBackup makes this site, whose database was restored from a
// physical backup of src (mariadb-backup, a volume snapshot, a cold copy),
// start replicating where the backup ends. The backup holds src's tables,
// tombstones and bookkeeping as of one point of its binary log, src.gtid;
// what it lacks is:
//
//   - src's own transactions after that point: in src's topic after the
//     last record whose GTID the position contains (startAfterBackup);
//   - other peers' transactions that src had not applied: in their topics
//     from src's applied offsets, which the backup holds in _tandem_offsets
//     consistent with its data. Messages src had taken past those offsets
//     but queued (paused, throttled, dead-lettered tenants) are in the
//     backup only when src ran under HA (_tandem_state); a queue in src's
//     Pebble store is not, so with several peers the operator must vouch
//     that src's queues were empty (--queues-empty-at-backup).
//
// It then removes what was src's alone: its conflict log, its fencing
// epochs, its offsets of topics this site does not read. Everything is
// written with sql_log_bin = 0 in a sink session, so nothing of it is
// published. `replicator schema prepare` must have run first, so that the
// restored tables carry this site's triggers, not src's.
func seedFromBackup(ctx context.Context, cfg *config.Config, src backupSource, out io.Writer) error {
	tgt, err := sql.Open("mysql", cfg.Database.DSN())
	if err != nil {
		return err
	}
	defer tgt.Close()
	if _, err := preparedSite(ctx, tgt, cfg, ": the restored tables still carry "+src.peer.Name+"'s triggers"); err != nil {
		return err
	}
	meta := func(table string) string {
		return schema.TableRef{Schema: cfg.Schema.MetaSchema, Table: table}.Quoted()
	}
	offsetsTable, stateTable := meta(schema.Offsets), meta(schema.State)
	srcTopic := cfg.Topic(src.peer.Name)
	var n int
	if err := tgt.QueryRowContext(ctx, "SELECT COUNT(*) FROM "+offsetsTable+" WHERE topic = ?", srcTopic).Scan(&n); err != nil {
		return fmt.Errorf("seed: read %s: %w", offsetsTable, err)
	}
	if n > 0 {
		return fmt.Errorf("seed: this site already reads %s's topic %s (%s has %d rows for it): it was seeded or has run; seed only a new site",
			src.peer.Name, srcTopic, offsetsTable, n)
	}
	var queued int
	if err := tgt.QueryRowContext(ctx, "SELECT COUNT(*) FROM "+stateTable+" WHERE k LIKE 'tenant/q/%'").Scan(&queued); err != nil {
		return fmt.Errorf("seed: read %s: %w", stateTable, err)
	}
	if err := backupQueues(len(cfg.Peers), queued, cfg.HA.Enabled, src); err != nil {
		return err
	}

	kc, err := kafkaConfig(cfg)
	if err != nil {
		return fmt.Errorf("seed: %w", err)
	}
	if err := pipeline.Probe(ctx, kc); err != nil {
		return fmt.Errorf("seed: %w", kafkaHint(cfg, err))
	}
	firsts, err := pipeline.FirstOffsets(ctx, kc, srcTopic)
	if err != nil {
		return fmt.Errorf("seed: %w", err)
	}
	ends, err := pipeline.EndOffsets(ctx, kc, srcTopic)
	if err != nil {
		return fmt.Errorf("seed: %w", err)
	}
	starts := make([]int64, len(ends))
	for p := range starts {
		first, ok := firsts[p]
		if !ok {
			return fmt.Errorf("seed: %s/%d: no first offset", srcTopic, p)
		}
		start, scanned, err := startAfterBackup(ctx, kc, srcTopic, p, first, ends[p], src)
		if err != nil {
			return fmt.Errorf("seed: %w", err)
		}
		starts[p] = start
		fmt.Fprintf(out, "seed: %s/%d: read %d records (offsets %d to %d); the backup ends before offset %d\n", srcTopic, p, scanned, first, ends[p], start)
	}

	conn, err := unloggedSinkSession(ctx, tgt, "the seed's bookkeeping")
	if err != nil {
		return err
	}
	defer conn.Close()
	tx, err := conn.BeginTx(ctx, nil)
	if err != nil {
		return err
	}
	defer tx.Rollback() //nolint:errcheck // after Commit it is a no-op
	// Kept: the rows of the other peers' topics, and of the pseudo topics
	// derived from them ("<topic>~…": tenant queue replays, parked
	// retries), whose queues and parked messages came with the backup.
	var keep []string
	var peerTopics []any
	for _, p := range cfg.Peers {
		if p.Name != src.peer.Name {
			topic := cfg.Topic(p.Name)
			keep = append(keep, "topic = ?", "LEFT(topic, ?) = ?")
			peerTopics = append(peerTopics, topic, len(topic)+1, topic+"~")
		}
	}
	dropOffsets := "DELETE FROM " + offsetsTable
	if len(keep) > 0 {
		dropOffsets += " WHERE NOT (" + strings.Join(keep, " OR ") + ")"
	}
	type step struct {
		what string
		q    string
		args []any
	}
	steps := []step{
		// src's offsets of topics this site does not read (its own, a
		// removed peer's) mean nothing here.
		{"offsets of topics this site does not read", dropOffsets, peerTopics},
		// src's fencing epochs: this site's leases count their own.
		{"fencing epochs", "UPDATE " + offsetsTable + " SET epoch = 0", nil},
		{"fencing epoch of the site", "DELETE FROM " + stateTable + " WHERE k = ?", []any{epochKey}},
		// src's conflict log records compares src lost, not this site.
		{"conflict log", "DELETE FROM " + meta(schema.Conflicts), nil},
		// What src applied of this site's own changes (a site re-added
		// under its old id) is not a watermark of this site.
		{"watermark of this site's own changes", "DELETE FROM " + meta(schema.Watermarks) + " WHERE origin = ?", []any{cfg.Site.ID}},
	}
	for _, s := range steps {
		res, err := tx.ExecContext(ctx, s.q, s.args...)
		if err != nil {
			return fmt.Errorf("seed: %s: %w", s.what, err)
		}
		if n, _ := res.RowsAffected(); n > 0 {
			fmt.Fprintf(out, "seed: %s: %d rows reset or removed\n", s.what, n)
		}
	}
	for p, start := range starts {
		if _, err := tx.ExecContext(ctx, "INSERT INTO "+offsetsTable+" (topic, part, next_offset, origin, epoch) VALUES (?, ?, ?, ?, 0)",
			srcTopic, p, start, src.peer.ID); err != nil {
			return fmt.Errorf("seed: offsets of %s: %w", srcTopic, err)
		}
	}
	rows, err := tx.QueryContext(ctx, "SELECT topic, part, next_offset FROM "+offsetsTable+" ORDER BY topic, part")
	if err != nil {
		return fmt.Errorf("seed: read %s: %w", offsetsTable, err)
	}
	var report bytes.Buffer
	for rows.Next() {
		var topic string
		var part int
		var next int64
		if err := rows.Scan(&topic, &part, &next); err != nil {
			rows.Close()
			return err
		}
		fmt.Fprintf(&report, "seed: %s/%d starts at offset %d\n", topic, part, next)
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return err
	}
	if err := tx.Commit(); err != nil {
		return fmt.Errorf("seed: commit: %w", err)
	}
	out.Write(report.Bytes()) //nolint:errcheck // a report
	fmt.Fprintf(out, "seed: this site continues %s's backup (GTID %s); start this site's replicator now\n", src.peer.Name, src.text)
	return nil
}

// backupQueues checks what the backup tells of the messages of other
// peers the source had taken past its offsets and queued (paused,
// throttled, dead-lettered tenants), given how many the backup holds in
// _tandem_state (where the source kept them under HA).
func backupQueues(peers, queued int, ha bool, src backupSource) error {
	if queued > 0 && !ha {
		return fmt.Errorf("seed: the backup holds %d queued messages of other sites in _tandem_state (%s ran under HA); this site keeps its queues in its state_dir, "+
			"so it would never apply them: enable ha here, or resume or drain those tenants at %s and take a new backup", queued, src.peer.Name, src.peer.Name)
	}
	if peers > 1 && queued == 0 && !src.queuesEmpty {
		return fmt.Errorf("seed: this site has %d peers: messages of the others that %s held in a tenant queue (paused, throttled, dead-lettered) "+
			"when the backup was taken are past its offsets but not in the backup, and a queue in its state_dir cannot be seen from here; "+
			"if its queues were empty then (GET /v1/tenants on its admin server before and after the backup), pass --queues-empty-at-backup",
			peers, src.peer.Name)
	}
	return nil
}
