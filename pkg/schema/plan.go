package schema

import (
	"context"
	"database/sql"
	"database/sql/driver"
	"errors"
	"fmt"
	"math"
	"slices"
	"strings"

	"github.com/go-sql-driver/mysql"
)

// Step is one change Prepare makes.
type Step struct {
	// Object is what the step creates or changes: "shop.orders",
	// "trigger shop._tandem_bi_orders", "schema tandem".
	Object string
	// Why says what is missing or outdated.
	Why string
	// SQL runs in order.
	SQL []string
	// Fallback runs instead of SQL when the server refuses SQL's
	// ALGORITHM clause for this table (errors 1845 and 1846): instant
	// ADD COLUMN is not available for every table, an in-place one that
	// keeps the table writable is the next best.
	Fallback []string

	fix string // what Check suggests, when running prepare is not it
}

// Plan is what Inspect found missing or outdated. An empty plan means the
// site is ready.
type Plan struct {
	Steps []Step

	site     uint8
	server   string
	lockWait int // seconds
}

// Empty reports whether there is nothing to do.
func (p *Plan) Empty() bool { return len(p.Steps) == 0 }

// ddlSQLMode is the sql_mode Apply runs with. A trigger keeps the sql_mode
// of the session that created it, so a server or session default such as
// ANSI_QUOTES or NO_BACKSLASH_ESCAPES must not leak into the triggers.
const ddlSQLMode = "STRICT_TRANS_TABLES,ERROR_FOR_DIVISION_BY_ZERO,NO_ENGINE_SUBSTITUTION"

func (p *Plan) session() []string {
	wait := p.lockWait
	if wait <= 0 {
		wait = 10
	}
	return []string{
		"SET SESSION sql_mode = " + quoteString(ddlSQLMode),
		fmt.Sprintf("SET SESSION lock_wait_timeout = %d", wait),
	}
}

// Apply runs the plan's steps in order on one connection. Every statement
// is idempotent (IF NOT EXISTS, CREATE OR REPLACE), so applying a plan
// that is partly done already, or twice, is harmless; Inspect afterwards
// returns an empty plan.
func (p *Plan) Apply(ctx context.Context, db *sql.DB) error {
	if p.Empty() {
		return nil
	}
	conn, err := db.Conn(ctx)
	if err != nil {
		return fmt.Errorf("schema: connect: %w", err)
	}
	defer func() {
		// The session's sql_mode and lock wait are Apply's own; keep the
		// connection from going back into the caller's pool with them.
		_ = conn.Raw(func(any) error { return driver.ErrBadConn })
		conn.Close()
	}()
	for _, s := range p.session() {
		if _, err := conn.ExecContext(ctx, s); err != nil {
			return fmt.Errorf("schema: %s: %w", s, err)
		}
	}
	for i, step := range p.Steps {
		if err := applyStep(ctx, conn, step); err != nil {
			return fmt.Errorf("schema: step %d of %d, %s (%s): %w", i+1, len(p.Steps), step.Object, step.Why, err)
		}
	}
	return nil
}

func applyStep(ctx context.Context, conn *sql.Conn, step Step) error {
	run := func(stmts []string) error {
		for _, s := range stmts {
			if _, err := conn.ExecContext(ctx, s); err != nil {
				return fmt.Errorf("%s: %w", firstLine(s), err)
			}
		}
		return nil
	}
	err := run(step.SQL)
	var me *mysql.MySQLError
	if err != nil && len(step.Fallback) > 0 && errors.As(err, &me) && (me.Number == 1845 || me.Number == 1846) {
		if ferr := run(step.Fallback); ferr != nil {
			return fmt.Errorf("%w; fallback: %w", err, ferr)
		}
		return nil
	}
	return err
}

func firstLine(s string) string {
	line, _, more := strings.Cut(s, "\n")
	if more {
		line += " …"
	}
	return line
}

// String renders the plan as a script for the mariadb (or mysql) command
// line client: `mariadb -h … < plan.sql` does what Apply does.
func (p *Plan) String() string {
	var b strings.Builder
	fmt.Fprintf(&b, "-- Tandem schema plan for site %d", p.site)
	if p.server != "" {
		fmt.Fprintf(&b, " on %s", p.server)
	}
	b.WriteString(".\n")
	if p.Empty() {
		b.WriteString("-- Nothing to do: every object exists and is up to date.\n")
		return b.String()
	}
	fmt.Fprintf(&b, "-- %d steps. Run it with the mariadb client, e.g. `mariadb -h HOST -u USER -p < plan.sql`;\n", len(p.Steps))
	b.WriteString("-- it does what `replicator schema prepare` does, and can be run again safely.\n")
	for _, s := range p.session() {
		b.WriteString(s + ";\n")
	}
	for i, step := range p.Steps {
		fmt.Fprintf(&b, "\n-- [%d/%d] %s: %s\n", i+1, len(p.Steps), step.Object, step.Why)
		for _, s := range step.SQL {
			writeStatement(&b, s)
		}
		if len(step.Fallback) > 0 {
			b.WriteString("-- If the server refuses the ALGORITHM above (error 1845/1846), run instead:\n")
			for _, s := range step.Fallback {
				for _, line := range strings.Split(s, "\n") {
					b.WriteString("--   " + line + "\n")
				}
			}
		}
	}
	return b.String()
}

// writeStatement writes s terminated for the command line client: a body
// with semicolons of its own needs another delimiter.
func writeStatement(b *strings.Builder, s string) {
	if !hasBareSemicolon(s) {
		b.WriteString(s + ";\n")
		return
	}
	delim := "//"
	for _, d := range []string{"//", "$$", ";;", "@@@"} {
		if !strings.Contains(s, d) {
			delim = d
			break
		}
	}
	fmt.Fprintf(b, "DELIMITER %s\n%s\n%s\nDELIMITER ;\n", delim, s, delim)
}

// hasBareSemicolon reports whether s has a semicolon outside string
// literals and quoted identifiers, which the command line client would
// take for the end of the statement.
func hasBareSemicolon(s string) bool {
	var quote rune
	for _, r := range s {
		switch {
		case quote != 0 && r == quote:
			quote = 0 // a doubled quote closes and reopens: same result
		case quote != 0:
		case r == '\'' || r == '"' || r == '`':
			quote = r
		case r == ';':
			return true
		}
	}
	return false
}

// BlockedError lists problems Prepare cannot fix by itself, such as a
// table without a primary key. Nothing was changed.
type BlockedError struct {
	Problems []Problem
}

func (e *BlockedError) Error() string {
	var b strings.Builder
	fmt.Fprintf(&b, "schema: cannot prepare: %d problem(s) need a human first:", len(e.Problems))
	for _, p := range e.Problems {
		fmt.Fprintf(&b, "\n  %s: %s (fix: %s)", p.Object, p.Problem, p.Fix)
	}
	return b.String()
}

// Inspect returns what is missing or outdated for opt: the meta schema and
// its tables, and for every replicated table its version column, tombstone
// table and triggers. It changes nothing. Problems it cannot plan a fix
// for come back as a *BlockedError.
func Inspect(ctx context.Context, db *sql.DB, opt Options) (*Plan, error) {
	in, err := inspect(ctx, db, opt)
	if err != nil {
		return nil, err
	}
	var blocked []Problem
	for _, p := range in.problems {
		if !p.Warning {
			blocked = append(blocked, p)
		}
	}
	if len(blocked) > 0 {
		return nil, &BlockedError{Problems: blocked}
	}
	return &in.plan, nil
}

// inspection collects a plan and the problems found on the way.
type inspection struct {
	opt      Options
	gen      gen
	plan     Plan
	problems []Problem
}

func (in *inspection) step(object, why string, sql ...string) {
	in.plan.Steps = append(in.plan.Steps, Step{Object: object, Why: why, SQL: sql})
}

func (in *inspection) problem(object, problem, fix string) {
	in.problems = append(in.problems, Problem{Object: object, Problem: problem, Fix: fix})
}

func (in *inspection) warn(object, problem, fix string) {
	in.problems = append(in.problems, Problem{Object: object, Problem: problem, Fix: fix, Warning: true})
}

func inspect(ctx context.Context, q Queryer, opt Options) (*inspection, error) {
	opt, err := opt.withDefaults()
	if err != nil {
		return nil, err
	}
	srv, err := readServer(ctx, q)
	if err != nil {
		return nil, err
	}
	in := &inspection{
		opt: opt,
		gen: gen{site: opt.Site, v: opt.VersionColumn, srv: srv},
		plan: Plan{
			site:     opt.Site,
			server:   srv.version,
			lockWait: int(math.Ceil(opt.LockWait.Seconds())),
		},
	}
	planned, err := in.meta(ctx, q)
	if err != nil {
		return nil, err
	}
	for _, ref := range opt.tables() {
		var m *metaTable
		if ref.Schema == opt.MetaSchema && Replicates(ref.Table) {
			for _, mt := range metaTables(opt.VersionColumn) {
				if mt.name == ref.Table {
					m = &mt
				}
			}
		}
		if err := in.table(ctx, q, ref, m, planned[ref.Table]); err != nil {
			return nil, err
		}
	}
	return in, nil
}

// meta plans the meta schema and its tables; it returns the tables it
// plans to create.
func (in *inspection) meta(ctx context.Context, q Queryer) (map[string]bool, error) {
	schema := in.opt.MetaSchema
	var n int
	if err := queryRow(ctx, q, `SELECT COUNT(*) FROM information_schema.SCHEMATA WHERE SCHEMA_NAME = ?`,
		[]any{schema}, &n); err != nil {
		return nil, fmt.Errorf("schema: look for meta schema %s: %w", schema, err)
	}
	if n == 0 {
		in.step("schema "+schema, "meta schema does not exist",
			fmt.Sprintf("CREATE DATABASE IF NOT EXISTS %s CHARACTER SET %s COLLATE %s",
				QuoteIdent(schema), metaCharset, metaCollation))
	}
	planned := map[string]bool{}
	for _, m := range metaTables(in.opt.VersionColumn) {
		ref := TableRef{schema, m.name}
		cols, err := TableColumns(ctx, q, schema, m.name)
		if errors.Is(err, ErrNoTable) {
			in.step(ref.String(), "bookkeeping table does not exist", m.createSQL(schema))
			planned[m.name] = true
			continue
		}
		if err != nil {
			return nil, err
		}
		have := map[string]bool{}
		for _, c := range cols {
			have[c.Name] = true
		}
		for _, c := range m.columns {
			if !have[c.name] {
				in.step(ref.String(), "column "+c.name+" is missing (table from an older Tandem)",
					fmt.Sprintf("ALTER TABLE %s ADD COLUMN %s", ref.Quoted(), c.def()))
			}
		}
		if len(m.keys) == 0 {
			continue
		}
		indexes, err := Indexes(ctx, q, ref.Schema, ref.Table)
		if err != nil {
			return nil, err
		}
		for _, k := range m.keys {
			// "KEY `name` (…)"
			if name := strings.Split(k, "`"); len(name) > 1 && indexes[name[1]] == nil {
				in.step(ref.String(), "index "+name[1]+" is missing (table from an older Tandem)",
					fmt.Sprintf("ALTER TABLE %s ADD %s", ref.Quoted(), k))
			}
		}
	}
	return planned, nil
}

// table plans the objects of one replicated table. m is set for the
// meta schema's replicated tables; planned says m is about to be created.
func (in *inspection) table(ctx context.Context, q Queryer, ref TableRef, m *metaTable, planned bool) error {
	obj := ref.String()
	notReplicated := "remove " + obj + " from the replicated tables"
	if m == nil {
		if IsInternal(ref.Table) {
			in.problem(obj, "is a Tandem table (prefix "+Prefix+"); Tandem never replicates its own tables", notReplicated)
			return nil
		}
		if n := len([]rune(ref.Table)); n > MaxTableName {
			in.problem(obj, fmt.Sprintf("table name has %d characters; replicated tables may have at most %d, "+
				"because the tombstone table %s<name> must fit MariaDB's %d-character limit",
				n, MaxTableName, TombPrefix, MaxIdentifier),
				"rename the table (RENAME TABLE) or "+notReplicated)
			return nil
		}
	}
	model := tableModel{ref: ref}
	existing := map[string]trigger{}
	if planned {
		model.pk = m.pkColumns()
		model.pkPrefix = make([]int, len(model.pk))
	} else {
		ok, err := in.loadTable(ctx, q, &model, m == nil)
		if err != nil || !ok {
			return err
		}
		if existing, err = readTriggers(ctx, q, ref); err != nil {
			return err
		}
		if err := in.foreignKeys(ctx, q, ref); err != nil {
			return err
		}
	}
	if err := in.tomb(ctx, q, model, planned); err != nil {
		return err
	}
	in.triggers(model, existing)
	return nil
}

// loadTable fills model from information_schema, planning the version
// column when checkVersion is set. It reports false when the table cannot
// be replicated (a problem was recorded).
func (in *inspection) loadTable(ctx context.Context, q Queryer, model *tableModel, checkVersion bool) (bool, error) {
	ref := model.ref
	obj := ref.String()
	notReplicated := "remove " + obj + " from the replicated tables"
	var tableType, engine string
	err := queryRow(ctx, q, `SELECT TABLE_TYPE, COALESCE(ENGINE, '') FROM information_schema.TABLES
		WHERE TABLE_SCHEMA = ? AND TABLE_NAME = ? AND BINARY TABLE_NAME = ?`,
		[]any{ref.Schema, ref.Table, ref.Table}, &tableType, &engine)
	if errors.Is(err, sql.ErrNoRows) {
		in.problem(obj, "table does not exist", "create it, or "+notReplicated)
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("schema: read table %s: %w", obj, err)
	}
	if tableType != "BASE TABLE" {
		in.problem(obj, "is a "+tableType+", not a base table; only base tables replicate", notReplicated)
		return false, nil
	}
	if !strings.EqualFold(engine, "InnoDB") {
		in.problem(obj, "uses the "+engine+" engine; Tandem needs InnoDB, whose transactions write a row, "+
			"its version and its tombstone atomically",
			fmt.Sprintf("ALTER TABLE %s ENGINE=InnoDB, or %s", ref.Quoted(), notReplicated))
		return false, nil
	}
	cols, err := TableColumns(ctx, q, ref.Schema, ref.Table)
	if err != nil {
		return false, err
	}
	keys, err := UniqueKeys(ctx, q, ref.Schema, ref.Table)
	if err != nil {
		return false, err
	}
	if len(keys) == 0 || !keys[0].Primary {
		in.problem(obj, "has no PRIMARY KEY; Tandem identifies rows, their versions and tombstones by primary key",
			fmt.Sprintf("ALTER TABLE %s ADD PRIMARY KEY (…), or %s", ref.Quoted(), notReplicated))
		return false, nil
	}
	byName := map[string]Column{}
	for _, c := range cols {
		byName[c.Name] = c
	}
	for i, name := range keys[0].Columns {
		model.pk = append(model.pk, byName[name])
		model.pkPrefix = append(model.pkPrefix, keys[0].Prefix[i])
	}
	if !checkVersion {
		return true, nil
	}
	v, ok := byName[in.opt.VersionColumn]
	switch {
	case !ok:
		in.plan.Steps = append(in.plan.Steps, Step{
			Object:   obj,
			Why:      "version column " + in.opt.VersionColumn + " is missing",
			SQL:      []string{in.gen.versionColumnSQL(ref, algorithmInstant)},
			Fallback: []string{in.gen.versionColumnSQL(ref, algorithmOnline)},
		})
	case !isVersionType(v):
		in.problem(obj, fmt.Sprintf("column %s is %s%s; Tandem needs it to be BIGINT UNSIGNED NOT NULL",
			v.Name, v.ColumnType, map[bool]string{true: " NULL", false: ""}[v.Nullable]),
			fmt.Sprintf("ALTER TABLE %s MODIFY %s BIGINT UNSIGNED NOT NULL DEFAULT 0, or pick another version column name",
				ref.Quoted(), QuoteIdent(v.Name)))
		return false, nil
	}
	return true, nil
}

func isVersionType(c Column) bool {
	return c.DataType == "bigint" && strings.Contains(c.ColumnType, "unsigned") && !c.Nullable
}

// tomb plans the tombstone table of model.
func (in *inspection) tomb(ctx context.Context, q Queryer, model tableModel, planned bool) error {
	ref := model.tomb()
	obj := ref.String()
	if planned {
		in.step(obj, "tombstone table does not exist", in.gen.tombCreateSQL(model))
		return nil
	}
	cols, err := TableColumns(ctx, q, ref.Schema, ref.Table)
	if errors.Is(err, ErrNoTable) {
		in.step(obj, "tombstone table does not exist", in.gen.tombCreateSQL(model))
		return nil
	}
	if err != nil {
		return err
	}
	keys, err := UniqueKeys(ctx, q, ref.Schema, ref.Table)
	if err != nil {
		return err
	}
	want := make([]string, len(model.pk))
	for i, c := range model.pk {
		want[i] = c.Name
	}
	var got []string
	if len(keys) > 0 && keys[0].Primary {
		got = keys[0].Columns
	}
	if strings.Join(got, "\x00") != strings.Join(want, "\x00") {
		in.problem(obj, fmt.Sprintf("tombstone key (%s) differs from the primary key (%s) of %s; "+
			"the primary key changed after prepare", strings.Join(got, ", "), strings.Join(want, ", "), model.ref),
			"stop writes and drain replication to and from this site, DROP TABLE "+ref.Quoted()+
				", then run prepare again")
		return nil
	}
	byName := map[string]Column{}
	for _, c := range cols {
		byName[c.Name] = c
	}
	var fixes []string
	for _, c := range model.pk {
		t := byName[c.Name]
		if t.ColumnType != c.ColumnType || t.Charset != c.Charset || t.Collation != c.Collation || t.Nullable {
			fixes = append(fixes, "MODIFY COLUMN "+columnDef(c))
		}
	}
	v, ok := byName[in.opt.VersionColumn]
	switch {
	case !ok:
		fixes = append(fixes, "ADD COLUMN "+QuoteIdent(in.opt.VersionColumn)+" BIGINT UNSIGNED NOT NULL DEFAULT 0")
	case !isVersionType(v):
		fixes = append(fixes, "MODIFY COLUMN "+QuoteIdent(in.opt.VersionColumn)+" BIGINT UNSIGNED NOT NULL")
	}
	why := "tombstone columns differ from the primary key columns of " + model.ref.String()
	indexes, err := Indexes(ctx, q, ref.Schema, ref.Table)
	if err != nil {
		return err
	}
	indexed := false
	for _, cols := range indexes {
		indexed = indexed || cols[0] == in.opt.VersionColumn
	}
	if !indexed {
		if len(fixes) == 0 {
			why = "tombstone table has no index on " + in.opt.VersionColumn + " (tables prepared by an earlier release)"
		}
		fixes = append(fixes, "ADD KEY "+QuoteIdent(TombVersionIndex)+" ("+QuoteIdent(in.opt.VersionColumn)+")")
	}
	if len(fixes) > 0 {
		in.step(obj, why, "ALTER TABLE "+ref.Quoted()+" "+strings.Join(fixes, ", "))
	}
	return nil
}

// trigger is an installed trigger.
type trigger struct {
	name, timing, event, body string
}

func readTriggers(ctx context.Context, q Queryer, ref TableRef) (map[string]trigger, error) {
	rows, err := q.QueryContext(ctx, `SELECT EVENT_OBJECT_TABLE, TRIGGER_NAME, ACTION_TIMING, EVENT_MANIPULATION, ACTION_STATEMENT
		FROM information_schema.TRIGGERS WHERE EVENT_OBJECT_SCHEMA = ? AND EVENT_OBJECT_TABLE = ?`,
		ref.Schema, ref.Table)
	if err != nil {
		return nil, fmt.Errorf("schema: read triggers of %s: %w", ref, err)
	}
	defer rows.Close()
	out := map[string]trigger{}
	for rows.Next() {
		var table string
		var t trigger
		if err := rows.Scan(&table, &t.name, &t.timing, &t.event, &t.body); err != nil {
			return nil, fmt.Errorf("schema: read triggers of %s: %w", ref, err)
		}
		if table == ref.Table {
			out[t.name] = t
		}
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("schema: read triggers of %s: %w", ref, err)
	}
	return out, nil
}

// triggers plans model's triggers against the existing ones.
func (in *inspection) triggers(model tableModel, existing map[string]trigger) {
	for _, d := range in.gen.triggers(model) {
		obj := "trigger " + model.ref.Schema + "." + d.name
		e, ok := existing[d.name]
		delete(existing, d.name)
		var why string
		switch {
		case !ok:
			why = "trigger does not exist"
		case e.timing != d.timing || e.event != d.event:
			why = fmt.Sprintf("trigger fires %s %s; want %s %s", e.timing, e.event, d.timing, d.event)
		case normalizeSQL(e.body) != normalizeSQL(d.body):
			why = describeOutdated(e.body, in.opt.Site)
		default:
			continue
		}
		step := Step{Object: obj, Why: why, SQL: in.gen.createTriggerSQL(model.ref, d)}
		if !ok {
			step.fix = fixPrepare + "; if prepare ran already, the account running check needs the TRIGGER " +
				"privilege on " + model.ref.String() + ": without it information_schema shows no triggers"
		}
		if _, site, ok := parseLabel(e.body); ok && site != int(in.opt.Site) {
			step.fix = fmt.Sprintf("make sure this server belongs to site %d (two sites with one id would issue "+
				"colliding versions), then run `replicator schema prepare` for site %d; if its database was restored "+
				"from a backup of site %d, run `replicator seed --backup-gtid` next, before `replicator run`", in.opt.Site, in.opt.Site, site)
		}
		in.plan.Steps = append(in.plan.Steps, step)
	}
	var foreign []string
	for name := range existing {
		if IsInternal(name) {
			in.step("trigger "+model.ref.Schema+"."+name, "trigger is not part of this Tandem version",
				"DROP TRIGGER IF EXISTS "+QuoteIdent(model.ref.Schema)+"."+QuoteIdent(name))
			continue
		}
		foreign = append(foreign, name)
	}
	if len(foreign) > 0 {
		slices.Sort(foreign)
		in.warn(model.ref.String(), fmt.Sprintf("has triggers Tandem does not manage (%s); they also fire when a "+
			"sink applies replicated rows, so whatever they write to replicated tables is written twice "+
			"(by the trigger here and by replication from the origin)", strings.Join(foreign, ", ")),
			"guard their bodies with IF COALESCE("+ApplySessionVar+", 0) = 0 THEN … END IF, "+
				"unless they only touch tables that are not replicated")
	}
}

// describeOutdated says how an installed Tandem trigger differs.
func describeOutdated(body string, site uint8) string {
	version, s, ok := parseLabel(body)
	switch {
	case !ok:
		return "trigger has a definition Tandem did not write"
	case s != int(site):
		return fmt.Sprintf("trigger was installed for site %d; this site is %d, so local writes would carry the wrong site id", s, site)
	case version != triggerVersion:
		return fmt.Sprintf("trigger is from Tandem generation %d; this one installs generation %d", version, triggerVersion)
	}
	return "trigger definition differs from the one Tandem generates (table, key or version column changed)"
}

// foreignKeys warns about referential actions on ref: the server runs
// them inside the storage engine, where no trigger fires.
func (in *inspection) foreignKeys(ctx context.Context, q Queryer, ref TableRef) error {
	rows, err := q.QueryContext(ctx, `SELECT TABLE_NAME, CONSTRAINT_NAME, UPDATE_RULE, DELETE_RULE
		FROM information_schema.REFERENTIAL_CONSTRAINTS
		WHERE CONSTRAINT_SCHEMA = ? AND TABLE_NAME = ?
		AND (UPDATE_RULE NOT IN ('RESTRICT', 'NO ACTION') OR DELETE_RULE NOT IN ('RESTRICT', 'NO ACTION'))`,
		ref.Schema, ref.Table)
	if err != nil {
		return fmt.Errorf("schema: read foreign keys of %s: %w", ref, err)
	}
	defer rows.Close()
	for rows.Next() {
		var table, name, onUpdate, onDelete string
		if err := rows.Scan(&table, &name, &onUpdate, &onDelete); err != nil {
			return fmt.Errorf("schema: read foreign keys of %s: %w", ref, err)
		}
		if table != ref.Table {
			continue
		}
		in.warn(ref.String(), fmt.Sprintf("foreign key %s has ON UPDATE %s ON DELETE %s; changes made by "+
			"referential actions bypass triggers, so they get no version and no tombstone and concurrent "+
			"writes to those rows may not converge", name, onUpdate, onDelete),
			"use RESTRICT and change child rows explicitly in the application's transaction")
	}
	return rows.Err()
}
