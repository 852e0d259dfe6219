package testenv

import "database/sql"

// Standalone use: `make demo` (cmd/tandem-demo) starts the same servers as
// the tests, with the same settings, outside of a test. The caller owns
// them and must Close them.

// StartMariaDB starts a dedicated MariaDB server outside of a test.
func StartMariaDB(opt MariaDBOptions) (*MariaDB, error) { return startMariaDB(opt, false) }

// Close stops the server and removes its data; the error log is kept when
// keepLogs is set.
func (m *MariaDB) Close(keepLogs bool) error { return m.cleanup(keepLogs, nil) }

// ExecErr runs one statement as root.
func (m *MariaDB) ExecErr(query string, args ...any) error { return m.exec(query, args...) }

// StartRedis starts a dedicated Redis server outside of a test.
func StartRedis() (*Redis, error) { return startRedis(false) }

// Close stops the server.
func (r *Redis) Close() error { return r.cleanup(false, nil) }

// StartBroker builds (if needed) and starts a dedicated development
// broker outside of a test.
func StartBroker() (*Broker, error) { return startBroker(false) }

// Close stops the broker.
func (b *Broker) Close() error { return b.cleanup(false, nil) }

// Build builds a main package of this module like BuildBinary, outside of
// a test.
func Build(pkg string) (string, error) { return builds.build(pkg) }

// RootDB is the server's root connection pool (no default database); it
// is closed by Close.
func (m *MariaDB) RootDB() (*sql.DB, error) { return m.adminDB() }
