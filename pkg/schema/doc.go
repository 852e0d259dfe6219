// Package schema owns the database objects Tandem adds to a site: the
// version column and triggers on every replicated table, one tombstone table
// per replicated table, and the _tandem_* bookkeeping tables in the meta
// schema. `replicator schema prepare` creates them, `schema check` reports
// what is missing, and the reader and sinks use the names defined here.
//
// # What prepare installs
//
// Per site, a meta schema (default "tandem", utf8mb4_bin) with the
// bookkeeping tables named in names.go, and per replicated table `s`.`t`:
//
//   - the version column, added with ALGORITHM=INSTANT (falling back to
//     INPLACE, LOCK=NONE) as BIGINT UNSIGNED NOT NULL DEFAULT 0 INVISIBLE,
//     so SELECT * and INSERT without a column list do not see it (MariaDB
//     ≥10.3, MySQL ≥8.0.23; visible elsewhere). Readers of the version must
//     name it; the binlog row image always carries it;
//   - the tombstone table `s`.`_tandem_tomb_t`: t's primary key columns
//     with identical types, character sets and collations, plus the version
//     of the delete;
//   - four triggers, generated from hlc.SQLNext so SQL and Go agree on the
//     version layout. Each acts only when ApplySessionVar is NULL or 0, so a
//     sink session writes versions and tombstones itself:
//     BEFORE INSERT stamps a version after the key's tombstone (a re-insert
//     is causally after the delete) and after the tombstone a REPLACE of an
//     existing row is about to write; BEFORE UPDATE stamps one after the old
//     version, and for a primary key change also writes a tombstone for the
//     old key with the new version (the reader emits that update as delete
//     of the old key + insert of the new one, both with the new version);
//     BEFORE DELETE upserts the tombstone, whose version is the delete's
//     version and which precedes the row's delete in the binlog; AFTER
//     INSERT refuses (SQLSTATE 40001) an insert whose version would be at
//     or below a tombstone written in the same statement, which only a
//     REPLACE racing a concurrent write produces. It reads the tombstone
//     only after a BEFORE DELETE ran in the session (the session variable
//     @_tandem_deleted), so a plain INSERT costs one read less.
//
// Trigger bodies open with a block label "tandem_v<generation>_site_<id>:"
// (comments would not survive the mariadb client), from which Inspect tells
// "installed for another site" from "outdated".
//
// # Existing rows and initial data
//
// Rows that exist when prepare adds the version column get version 0, which
// every real version beats; the first local write after prepare stamps a
// real one. Tandem replicates changes, so such a row reaches the other
// sites only when it changes: either every site holds the same rows
// before replication starts (one backup restored on all sites), or
// `replicator backfill` stamps them with hlc.InitialLoad, which publishes
// them (docs/operations.md, "Loading existing data into running sites").
//
// # Known limits
//
//   - A trigger fires before the statement waits for row locks, and reads
//     the transaction's snapshot. An INSERT that waited for a concurrent
//     delete of the same key (local, or applied by a sink) did not see that
//     delete's tombstone; if the deleted row's version was ahead of the
//     inserting statement's start (same millisecond, or a site whose clock
//     runs ahead), the new row gets a version below the tombstone and the
//     other sites drop it. Locking reads would close this at the price of
//     gap locks on every insert, which deadlock concurrent inserters; the
//     verifier reports such rows as diverged.
//   - Foreign key actions (ON DELETE CASCADE, …) run inside InnoDB, where
//     triggers do not fire; Check warns about them.
//   - Triggers run as their DEFINER, the account that ran prepare: that
//     account must keep its privileges (docs/privileges.md).
package schema
