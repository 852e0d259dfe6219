package schema

import (
	"context"
	"database/sql"
	"fmt"
	"strings"
)

// Problem is one thing `replicator schema check` reports.
type Problem struct {
	// Object is what the problem is about: "server", "shop.orders",
	// "trigger shop._tandem_bi_orders".
	Object string
	// Problem says what is wrong and why it matters.
	Problem string
	// Fix says what to do about it.
	Fix string
	// Warning is set when replication works but an operator should know,
	// e.g. triggers Tandem does not manage. Prepare refuses to run only on
	// problems that are not warnings.
	Warning bool
}

func (p Problem) String() string {
	kind := "problem"
	if p.Warning {
		kind = "warning"
	}
	return fmt.Sprintf("%s: %s: %s\n  fix: %s", p.Object, kind, p.Problem, p.Fix)
}

// fixPrepare is the fix for everything Prepare creates.
const fixPrepare = "run `replicator schema prepare` (its --dry-run prints the SQL)"

// Check reports everything that keeps this site from replicating: server
// settings the reader needs, tables Tandem cannot replicate, and objects
// Prepare would create or replace (missing, outdated, or installed for
// another site). No problems means ready.
func Check(ctx context.Context, db *sql.DB, opt Options) ([]Problem, error) {
	in, err := inspect(ctx, db, opt)
	if err != nil {
		return nil, err
	}
	problems, err := serverProblems(ctx, db, in.gen.srv)
	if err != nil {
		return nil, err
	}
	problems = append(problems, in.problems...)
	for _, s := range in.plan.Steps {
		fix := s.fix
		if fix == "" {
			fix = fixPrepare
		}
		problems = append(problems, Problem{Object: s.Object, Problem: s.Why, Fix: fix})
	}
	return problems, nil
}

// serverProblems checks the binary log settings the reader depends on.
// They are read as GLOBAL values: those are what new client sessions, and
// so the application's writes, get.
func serverProblems(ctx context.Context, q Queryer, srv server) ([]Problem, error) {
	rows, err := q.QueryContext(ctx, `SHOW GLOBAL VARIABLES WHERE Variable_name IN
		('log_bin', 'binlog_format', 'binlog_row_image', 'binlog_row_metadata', 'server_id')`)
	if err != nil {
		return nil, fmt.Errorf("schema: read server variables: %w", err)
	}
	defer rows.Close()
	vars := map[string]string{}
	for rows.Next() {
		var name, value string
		if err := rows.Scan(&name, &value); err != nil {
			return nil, fmt.Errorf("schema: read server variables: %w", err)
		}
		vars[strings.ToLower(name)] = value
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("schema: read server variables: %w", err)
	}

	section := srv.configSection()
	var out []Problem
	if v := strings.ToUpper(vars["log_bin"]); v != "ON" && v != "1" {
		out = append(out, Problem{
			Object:  "server",
			Problem: "the binary log is off (log_bin=" + vars["log_bin"] + "); the reader has nothing to read",
			Fix: "add `log_bin = mysql-bin` and a server_id unique among all servers under " + section +
				" in my.cnf and restart the server (log_bin cannot be switched on at runtime)",
		})
	}
	if v := vars["server_id"]; v == "0" || v == "" {
		out = append(out, Problem{
			Object:  "server",
			Problem: "server_id is 0; a server with binary logs needs a server_id unique among all servers",
			Fix:     "SET GLOBAL server_id = N; and `server_id = N` under " + section + " in my.cnf",
		})
	}
	setting := func(name, want, why string) {
		v, ok := vars[name]
		if !ok {
			return
		}
		if strings.EqualFold(v, want) {
			return
		}
		out = append(out, Problem{
			Object:  "server",
			Problem: fmt.Sprintf("%s is %s; the reader needs %s: %s", name, v, want, why),
			Fix: fmt.Sprintf("SET GLOBAL %s = '%s'; then reconnect the applications (sessions keep the value they "+
				"started with), and add `%s = %s` under %s in my.cnf so a restart keeps it", name, want, name, want, section),
		})
	}
	setting("binlog_format", "ROW", "statement-based events carry no row images to replicate")
	setting("binlog_row_image", "FULL", "partial row images lose the columns a sink needs to write the whole row")
	if _, ok := vars["binlog_row_metadata"]; ok {
		setting("binlog_row_metadata", "FULL",
			"without it the binlog carries no column names and the reader cannot map row images to columns safely across ALTER TABLE")
	} else if !srv.rowMetadata() {
		out = append(out, Problem{
			Object:  "server",
			Problem: "server " + srv.version + " has no binlog_row_metadata, so binlog events carry no column names",
			Fix:     "upgrade to MariaDB 10.5 or later (or MySQL 8.0)",
		})
	}
	return out, nil
}
