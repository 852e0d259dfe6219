package verify

import (
	"context"
	"database/sql"
	"database/sql/driver"
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"
	"time"

	"github.com/tandemdb/tandem/pkg/schema"
)

// fenceBase starts the probe sequence numbers of fence markers, far above
// any probe's (probes number from the microsecond clock), so the probe's
// watchers never mistake a marker for a probe.
const fenceBase = uint64(1) << 62

// fence writes a marker row at every site (one per probed tenant, so every
// tenant's partition is fenced) and waits until every marker is visible at
// every other site. Writes committed at a site before its marker are then
// applied everywhere: a site's changes arrive in commit order per tenant.
func (c *Checker) fence(ctx context.Context) error {
	type marker struct {
		site   int
		seq    uint64
		tenant string
	}
	probe := qualified(c.cfg.MetaSchema, schema.Probe)
	var ms []marker
	seq := fenceBase | uint64(time.Now().UnixMicro())
	for i, s := range c.sites {
		for _, tn := range c.cfg.ProbeTenants() {
			seq++
			q := fmt.Sprintf("INSERT INTO %s (site, seq, tenant, written_at) VALUES (%d, %d, %s, UTC_TIMESTAMP(6))",
				probe, s.ID, seq, binaryLiteral(tn))
			if _, err := s.db.ExecContext(ctx, q); err != nil {
				if isNoTable(err) {
					return fmt.Errorf("check --fenced: site %s has no %s; run `replicator schema prepare` there", s.Name, probe)
				}
				return fmt.Errorf("check --fenced: write the fence marker at %s: %w", s.Name, err)
			}
			ms = append(ms, marker{i, seq, tn})
		}
	}
	type arrival struct{ marker, at int }
	var waiting []arrival
	for mi, m := range ms {
		for j := range c.sites {
			if j != m.site {
				waiting = append(waiting, arrival{mi, j})
			}
		}
	}
	deadline := time.Now().Add(c.cfg.Check.FenceTimeout.Duration())
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	for {
		var still []arrival
		for _, a := range waiting {
			m := ms[a.marker]
			var n int
			q := fmt.Sprintf("SELECT COUNT(*) FROM %s WHERE site = %d AND seq = %d", probe, c.sites[m.site].ID, m.seq)
			if err := c.sites[a.at].db.QueryRowContext(ctx, q).Scan(&n); err != nil || n == 0 {
				still = append(still, a)
			}
		}
		waiting = still
		if len(waiting) == 0 {
			return nil
		}
		if time.Now().After(deadline) {
			var pairs []string
			for _, a := range waiting {
				pairs = append(pairs, c.sites[ms[a.marker].site].Name+"→"+c.sites[a.at].Name)
			}
			return fmt.Errorf("check --fenced: fence markers not applied within %s (%s): replication is stopped or far behind in those directions",
				c.cfg.Check.FenceTimeout, strings.Join(pairs, ", "))
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-tick.C:
		}
	}
}

// errChanged skips a repair whose row moved since it was classified.
var errChanged = errors.New("the row changed since it was classified; check again")

// repairs builds (and with apply, runs) the repair of every diverged,
// missing and resurrected row: the winning version written at the site
// that lacks it, in a session with @tandem_apply = 1 so the triggers keep
// the version as written. Rows in flight are left to replication.
func (c *Checker) repairs(ctx context.Context, pend *pending, res *CheckResult, apply bool) error {
	for _, id := range pend.order {
		ks := pend.keys[id]
		for i, class := range ks.class {
			if class == "" || class == ClassInFlight {
				continue
			}
			rep := Repair{Site: c.sites[i].Name, Table: ks.tm.String(), Key: ks.tm.keyText(ks.key), Class: class}
			stmts, err := c.repairSQL(ctx, ks)
			if err != nil {
				if ctx.Err() != nil {
					return ctx.Err()
				}
				rep.Skipped = err.Error()
				res.Repairs = append(res.Repairs, rep)
				continue
			}
			rep.SQL = stmts
			if apply {
				err := c.applyRepair(ctx, ks, i, stmts)
				switch {
				case err == nil:
					rep.Applied = true
				case errors.Is(err, errChanged):
					rep.Skipped = err.Error()
				default:
					return err
				}
			}
			res.Repairs = append(res.Repairs, rep)
		}
	}
	return nil
}

// repairSQL returns the statements that install the winning version.
func (c *Checker) repairSQL(ctx context.Context, ks *keyState) ([]string, error) {
	tm := ks.tm
	where, err := tm.keyWhere([]bound{ks.key})
	if err != nil {
		return nil, err
	}
	if ks.winTomb {
		if !tm.hasTomb {
			return nil, fmt.Errorf("%s has no tombstone table", tm)
		}
		lits := make([]string, len(tm.pk))
		for i, col := range tm.pk {
			if lits[i], err = keyLiteral(col, ks.key[i]); err != nil {
				return nil, err
			}
		}
		v := quoteIdent(tm.version)
		return []string{
			"DELETE FROM " + tm.quoted() + " WHERE " + where,
			fmt.Sprintf("INSERT INTO %s (%s, %s) VALUES (%s, %d) ON DUPLICATE KEY UPDATE %s = GREATEST(%s, VALUES(%s))",
				tm.tombQuoted(), tm.pkList(), v, strings.Join(lits, ", "), ks.winVer, v, v, v),
		}, nil
	}
	// The winning row, read from the site that holds it. FLOAT is read
	// widened to DOUBLE, whose text round-trips, and narrows back exactly.
	sel := make([]string, len(tm.cols))
	names := make([]string, len(tm.cols))
	for i, col := range tm.cols {
		names[i] = quoteIdent(col.Name)
		sel[i] = names[i]
		if col.kind == kFloat {
			sel[i] = "CAST(" + names[i] + " AS DOUBLE)"
		}
	}
	q := "SELECT " + strings.Join(sel, ", ") + " FROM " + tm.quoted() + " WHERE " + where
	rows, err := c.sites[ks.winner].db.QueryContext(ctx, q)
	if err != nil {
		return nil, fmt.Errorf("read the winning row at %s: %w", c.sites[ks.winner].Name, err)
	}
	defer rows.Close()
	vals := make([]sql.RawBytes, len(tm.cols))
	ptrs := make([]any, len(vals))
	for i := range vals {
		ptrs[i] = &vals[i]
	}
	if !rows.Next() {
		if err := rows.Err(); err != nil {
			return nil, err
		}
		return nil, errChanged
	}
	if err := rows.Scan(ptrs...); err != nil {
		return nil, err
	}
	lits := make([]string, len(tm.cols))
	var upd []string
	for i, col := range tm.cols {
		if lits[i], err = valueLiteral(col, vals[i], vals[i] == nil); err != nil {
			return nil, err
		}
		if col.Name == tm.version {
			if v, _ := strconv.ParseUint(string(vals[i]), 10, 64); v != ks.winVer {
				return nil, errChanged
			}
		}
		if !slicesContains(tm.pkIdx, i) {
			upd = append(upd, names[i]+" = VALUES("+names[i]+")")
		}
	}
	stmt := "INSERT INTO " + tm.quoted() + " (" + strings.Join(names, ", ") + ") VALUES (" + strings.Join(lits, ", ") + ")"
	if len(upd) > 0 {
		stmt += " ON DUPLICATE KEY UPDATE " + strings.Join(upd, ", ")
	}
	return []string{stmt}, rows.Err()
}

func slicesContains(s []int, v int) bool {
	for _, x := range s {
		if x == v {
			return true
		}
	}
	return false
}

// applyRepair runs stmts at site i in one transaction, after checking
// under lock that the site still holds what was classified.
func (c *Checker) applyRepair(ctx context.Context, ks *keyState, i int, stmts []string) (err error) {
	s := c.sites[i]
	conn, err := s.db.Conn(ctx)
	if err != nil {
		return fmt.Errorf("repair at %s: %w", s.Name, err)
	}
	defer conn.Close()
	if _, err := conn.ExecContext(ctx, "SET "+schema.ApplySessionVar+" = 1"); err != nil {
		return fmt.Errorf("repair at %s: %w", s.Name, err)
	}
	defer func() {
		// A pooled connection must not keep sink mode: later local writes
		// through it would go unversioned.
		if _, rerr := conn.ExecContext(context.WithoutCancel(ctx), "SET "+schema.ApplySessionVar+" = NULL"); rerr != nil {
			conn.Raw(func(any) error { return driver.ErrBadConn }) //nolint:errcheck // discards the connection
		}
	}()
	tx, err := conn.BeginTx(ctx, nil)
	if err != nil {
		return fmt.Errorf("repair at %s: %w", s.Name, err)
	}
	defer func() {
		if err != nil {
			tx.Rollback() //nolint:errcheck // the error that matters is err
		}
	}()
	where, err := ks.tm.keyWhere([]bound{ks.key})
	if err != nil {
		return err
	}
	var curU uint64
	var present bool
	row := tx.QueryRowContext(ctx, "SELECT "+quoteIdent(ks.tm.version)+" FROM "+ks.tm.quoted()+" WHERE "+where+" FOR UPDATE")
	var raw []byte
	switch err := row.Scan(&raw); {
	case errors.Is(err, sql.ErrNoRows):
	case err != nil:
		return fmt.Errorf("repair at %s: lock %s %s: %w", s.Name, ks.tm, ks.tm.keyText(ks.key), err)
	default:
		present = true
		curU, _ = strconv.ParseUint(string(raw), 10, 64)
	}
	if o := ks.obs[i]; present != o.present || (present && curU != o.version) {
		return errChanged
	}
	for _, q := range stmts {
		if _, err := tx.ExecContext(ctx, q); err != nil {
			return fmt.Errorf("repair at %s: %s: %w", s.Name, q, err)
		}
	}
	if err := tx.Commit(); err != nil {
		return fmt.Errorf("repair at %s: commit: %w", s.Name, err)
	}
	return nil
}

// WriteText writes a check result for humans: the summary, the differing
// keys and the repair SQL (a script to run at each site).
func (r *CheckResult) WriteText(w io.Writer, sites []Site) {
	fmt.Fprintf(w, "check %s (%s, hash %s) at %s: %s\n", verdict(r.Pass), r.Mode, r.HashMode, strings.Join(r.Sites, ", "), r.Verdict)
	fmt.Fprintf(w, "scanned %d rows in %d table(s), %.0f rows/s; %d key(s) differed during the scan and settled on re-read (in flight); %d re-read round(s)\n",
		r.Rows, len(r.Tables), r.RowsPerSec, r.Settled, r.Rechecks)
	fmt.Fprintf(w, "in flight %d, diverged %d, missing %d, resurrected %d\n", r.InFlight, r.Diverged, r.Missing, r.Resurrected)
	for _, d := range r.Diffs {
		fmt.Fprintf(w, "  %-11s %s %s at %s (winner %s at %s", d.Class, d.Table, d.KeyText, d.Site, d.WinnerVersion, d.Winner)
		if d.WinnerDeleted {
			fmt.Fprint(w, ", deleted")
		}
		if d.Watermark != "" {
			fmt.Fprintf(w, "; %s's watermark %s", d.Site, d.Watermark)
		}
		fmt.Fprintln(w, ")")
		if d.Note != "" {
			fmt.Fprintf(w, "      note: %s\n", d.Note)
		}
		for _, name := range r.Sites {
			fmt.Fprintf(w, "      %s: %s\n", name, d.States[name])
		}
	}
	if len(r.Repairs) == 0 {
		return
	}
	applied := 0
	for _, rp := range r.Repairs {
		if rp.Applied {
			applied++
		}
	}
	if applied > 0 {
		fmt.Fprintf(w, "repairs applied: %d of %d\n", applied, len(r.Repairs))
	} else {
		fmt.Fprintln(w, "repair SQL (dry run; `verifier check --repair` applies it):")
	}
	addr := map[string]string{}
	for _, s := range sites {
		addr[s.Name] = s.Addr()
	}
	for _, rp := range r.Repairs {
		fmt.Fprintf(w, "-- site %s (%s): %s %s %s", rp.Site, addr[rp.Site], rp.Class, rp.Table, rp.Key)
		switch {
		case rp.Skipped != "":
			fmt.Fprintf(w, " — skipped: %s\n", rp.Skipped)
			continue
		case rp.Applied:
			fmt.Fprint(w, " — applied")
		}
		fmt.Fprintf(w, "\nSET %s = 1;\nSTART TRANSACTION;\n", schema.ApplySessionVar)
		for _, q := range rp.SQL {
			fmt.Fprintf(w, "%s;\n", q)
		}
		fmt.Fprintf(w, "COMMIT;\nSET %s = NULL;\n", schema.ApplySessionVar)
	}
}
