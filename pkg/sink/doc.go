// Package sink applies replicated transactions to a MariaDB or MySQL site
// with compare-and-set on row versions and exactly-once offsets
// (DESIGN.md §4, §5).
//
// # One batch, one transaction
//
// MySQL.Apply writes a Batch — consecutive Kafka messages of one topic
// partition — in one target transaction:
//
//  1. lock the partition's row in _tandem_offsets; an older fencing epoch
//     gets ErrFenced, a batch at or below the stored offset is a replay
//     (Result.AlreadyApplied);
//  2. write that row: the FIRST row change of the transaction. The local
//     binlog reader drops every transaction whose first row event touches
//     _tandem_offsets, so nothing a sink applied is published again;
//  3. collapse the batch per (schema, table, primary key) to the winning
//     version, read the current versions under lock, decide each row with
//     conflict.Policy, and write the winners in multi-row statements whose
//     SQL repeats the compare-and-set; losers are logged in
//     _tandem_conflicts;
//  4. store parked messages and raise the origin's watermark;
//  5. commit, then feed the versions to the local hybrid logical clock.
//
// # Why READ COMMITTED
//
// The lookups lock the rows they find (SELECT … FOR UPDATE). Under
// REPEATABLE READ a lookup of a key that does not exist yet also locks the
// gap it would go in, and two transactions that lock the same gap and then
// insert into it deadlock: partitions applied in parallel to one table
// whose new keys interleave (auto-increment ids of different tenants)
// would deadlock on nearly every batch. Under READ COMMITTED lookups lock
// only existing records. That leaves one race: between the lookup that
// found no row and the upsert, another sink may delete the key and write a
// newer tombstone. Both sides therefore write first and read the other
// side's record with a lock afterwards — the upsert reads the tombstone
// (checkFresh), the delete reads the row in its DELETE — so at least one
// of them sees the other and the newer version wins. TestConcurrentInsert
// Delete races two sinks to prove it.
//
// An existing row's version beats its tombstone's (every writer recreates a
// row only with a winning version), so with the default policy only
// missing rows' tombstones are read; under a home-only policy, where a
// local non-home write may break that, every row's tombstone is read.
//
// # Statements
//
// Every statement is sent as text with values written as literals (see
// literal.go for why): no prepared-statement cache, strings byte-exact in
// any character set. On connections that take several statements per
// query (multiStatements, which the replicator's sink pool sets) a batch
// of 1000 new rows costs three round trips: the offsets claim with the
// multi-key lookups of every table; the deletes and five 200-row upserts,
// each followed by SELECT ROW_COUNT(), and then the tombstone checks of
// the new rows; the watermark with the COMMIT (see applier.queue and
// claimAndRead). On other connections every statement is a round trip
// of its own, about a dozen for the same batch.
//
// Tables with a unique secondary key take a separate path for new rows
// (plain INSERT; ON DUPLICATE KEY UPDATE could update the row holding the
// secondary key), and a row that breaks such a key is logged as a
// 'unique_key' conflict and skipped, never half applied.
//
// When the collapsed batch fails on the data (a constraint, a value the
// target cannot hold, a foreign key order that collapsing changed), Apply
// retries it one source transaction at a time: the batch then applies, or
// a *PermanentError names the transaction to park.
//
// # Connections
//
// The sink takes connections from the *sql.DB it is given, configures
// each once (isolation, sql_mode, utf8mb4, time zone, the apply session
// variable the triggers obey) and keeps them: they never return to the
// pool, so those settings cannot reach other users of the pool.
package sink
