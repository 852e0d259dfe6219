package binlog

import (
	"context"
	"os"
	"testing"
	"time"

	"github.com/go-mysql-org/go-mysql/replication"
	"github.com/go-mysql-org/go-mysql/mysql"

	"github.com/tandemdb/tandem/internal/testenv"
)

func TestExplore(t *testing.T) {
	if os.Getenv("EXPLORE") == "" {
		t.Skip()
	}
	m := testenv.SharedMariaDB(t, 1)
	db := testenv.NewDatabase(t, m)
	m.Exec(t, "CREATE TABLE `"+db+"`.a (id INT PRIMARY KEY, v VARCHAR(10)) ENGINE=InnoDB")
	m.Exec(t, "CREATE TABLE `"+db+"`.b (id INT PRIMARY KEY, v VARCHAR(10)) ENGINE=Aria")
	m.Exec(t, "CREATE TABLE `"+db+"`.c (id INT PRIMARY KEY, v VARCHAR(10)) ENGINE=MyISAM")
	pos := ""
	sqldb := m.DB(t, "")
	sqldb.QueryRow("SELECT @@gtid_binlog_pos").Scan(&pos)
	m.Exec(t, "INSERT INTO `"+db+"`.a VALUES (1,'x')")
	m.Exec(t, "INSERT INTO `"+db+"`.b VALUES (1,'x')")
	m.Exec(t, "INSERT INTO `"+db+"`.c VALUES (1,'x'),(2,'y')")
	m.Exec(t, "CREATE TABLE `"+db+"`.d AS SELECT * FROM `"+db+"`.a")
	m.Exec(t, "ALTER TABLE `"+db+"`.a ADD COLUMN w INT")
	m.Exec(t, "DROP TABLE `"+db+"`.d")
	m.Exec(t, "TRUNCATE TABLE `"+db+"`.c")
	syncer := replication.NewBinlogSyncer(replication.BinlogSyncerConfig{ServerID: 999, Flavor: "mariadb", Host: m.Host, Port: uint16(m.Port), User: m.User, DisableRetrySync: true})
	defer syncer.Close()
	set, _ := mysql.ParseMariadbGTIDSet(pos)
	st, err := syncer.StartSyncGTID(set)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	for {
		ev, err := st.GetEvent(ctx)
		if err != nil {
			return
		}
		switch e := ev.Event.(type) {
		case *replication.MariadbGTIDEvent:
			t.Logf("%s pos=%d GTID %v flags=%b", ev.Header.EventType, ev.Header.LogPos, e.GTID, e.Flags)
		case *replication.QueryEvent:
			t.Logf("%s pos=%d query %q", ev.Header.EventType, ev.Header.LogPos, e.Query)
		case *replication.RotateEvent:
			t.Logf("%s pos=%d rotate %s %d", ev.Header.EventType, ev.Header.LogPos, e.NextLogName, e.Position)
		default:
			t.Logf("%s pos=%d ts=%d", ev.Header.EventType, ev.Header.LogPos, ev.Header.Timestamp)
		}
	}
}
