package binlog

import (
	"fmt"
	"slices"
	"strconv"
	"strings"

	"github.com/go-mysql-org/go-mysql/mysql"
)

// gtidSet is the reader's position as a GTID set: everything up to and
// including the last completed transaction. The reader keeps its own copy
// rather than the syncer's, because it must advance only at transaction
// boundaries and must cover every domain the server knows (see mariaPos).
type gtidSet interface {
	String() string
	// commit folds the GTID of a completed transaction into the set.
	commit(g txnGTID) error
	// syncSet converts the set for BinlogSyncer.StartSyncGTID.
	syncSet() (mysql.GTIDSet, error)
}

// txnGTID is the GTID of the transaction being read.
type txnGTID struct {
	maria mysql.MariadbGTID // MariaDB
	mysql string            // MySQL: "uuid[:tag]:gno"
}

func (g txnGTID) String() string {
	if g.mysql != "" {
		return g.mysql
	}
	return formatMariaGTID(g.maria)
}

func formatMariaGTID(g mysql.MariadbGTID) string {
	b := make([]byte, 0, 32)
	b = strconv.AppendUint(b, uint64(g.DomainID), 10)
	b = append(b, '-')
	b = strconv.AppendUint(b, uint64(g.ServerID), 10)
	b = append(b, '-')
	b = strconv.AppendUint(b, g.SequenceNumber, 10)
	return string(b)
}

func parseGTIDSet(flavor, s string) (gtidSet, error) {
	if flavor == FlavorMySQL {
		set, err := mysql.ParseMysqlGTIDSet(s)
		if err != nil {
			return nil, fmt.Errorf("MySQL GTID set %q: %v", s, err)
		}
		return &mysqlPos{set: set.(*mysql.MysqlGTIDSet)}, nil
	}
	return parseMariaPos(s)
}

// mariaPos is a MariaDB GTID position: the last GTID of every replication
// domain, like @@gtid_binlog_pos ("0-1-100,1-101-42"). Domains are kept in
// ascending order so the text form is canonical.
//
// It must list every domain in the server's binlogs: MariaDB sends a domain
// missing from the requested position from the start of its oldest binlog,
// so a reader that only tracked its own domain would replay everything
// sinks ever wrote in other domains after a reconnect.
type mariaPos struct {
	gtids []mysql.MariadbGTID // sorted by DomainID, one per domain
	text  string              // cached String(); "" when stale or empty
}

// parseMariaPos parses "domain-server-seq[,domain-server-seq…]". Spaces
// around entries are allowed (SHOW output wraps long values with newlines);
// two entries for one domain are not, because a position has one GTID per
// domain and guessing which one is meant could skip or replay data.
func parseMariaPos(s string) (*mariaPos, error) {
	p := &mariaPos{}
	s = strings.TrimSpace(s)
	if s == "" {
		return p, nil
	}
	for _, part := range strings.Split(s, ",") {
		part = strings.TrimSpace(part)
		g, err := parseMariaGTID(part)
		if err != nil {
			return nil, fmt.Errorf("MariaDB GTID position %q: %w", s, err)
		}
		i, found := slices.BinarySearchFunc(p.gtids, g.DomainID, func(e mysql.MariadbGTID, d uint32) int {
			return cmpUint32(e.DomainID, d)
		})
		if found {
			return nil, fmt.Errorf("MariaDB GTID position %q: domain %d appears twice; a position holds one GTID per domain", s, g.DomainID)
		}
		p.gtids = slices.Insert(p.gtids, i, g)
	}
	return p, nil
}

func parseMariaGTID(s string) (mysql.MariadbGTID, error) {
	d, rest, ok1 := strings.Cut(s, "-")
	srv, seq, ok2 := strings.Cut(rest, "-")
	if !ok1 || !ok2 {
		return mysql.MariadbGTID{}, fmt.Errorf("GTID %q is not domain-server-sequence (e.g. 1-101-42)", s)
	}
	dn, err1 := strconv.ParseUint(d, 10, 32)
	sn, err2 := strconv.ParseUint(srv, 10, 32)
	qn, err3 := strconv.ParseUint(seq, 10, 64)
	if err1 != nil || err2 != nil || err3 != nil {
		return mysql.MariadbGTID{}, fmt.Errorf("GTID %q is not domain-server-sequence with decimal numbers (domain and server < 2^32, sequence < 2^64)", s)
	}
	return mysql.MariadbGTID{DomainID: uint32(dn), ServerID: uint32(sn), SequenceNumber: qn}, nil
}

func cmpUint32(a, b uint32) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

func (p *mariaPos) String() string {
	if p.text == "" && len(p.gtids) > 0 {
		b := make([]byte, 0, 24*len(p.gtids))
		for i, g := range p.gtids {
			if i > 0 {
				b = append(b, ',')
			}
			b = strconv.AppendUint(b, uint64(g.DomainID), 10)
			b = append(b, '-')
			b = strconv.AppendUint(b, uint64(g.ServerID), 10)
			b = append(b, '-')
			b = strconv.AppendUint(b, g.SequenceNumber, 10)
		}
		p.text = string(b)
	}
	return p.text
}

func (p *mariaPos) commit(g txnGTID) error {
	i, found := slices.BinarySearchFunc(p.gtids, g.maria.DomainID, func(e mysql.MariadbGTID, d uint32) int {
		return cmpUint32(e.DomainID, d)
	})
	if found {
		p.gtids[i] = g.maria
	} else {
		p.gtids = slices.Insert(p.gtids, i, g.maria)
	}
	p.text = ""
	return nil
}

func (p *mariaPos) syncSet() (mysql.GTIDSet, error) {
	set := &mysql.MariadbGTIDSet{Sets: make(map[uint32]*mysql.MariadbGTID, len(p.gtids))}
	for _, g := range p.gtids {
		set.Sets[g.DomainID] = &g
	}
	return set, nil
}

// mysqlPos is a MySQL executed GTID set.
type mysqlPos struct {
	set *mysql.MysqlGTIDSet
}

func (p *mysqlPos) String() string { return p.set.String() }

func (p *mysqlPos) commit(g txnGTID) error {
	if err := p.set.Update(g.mysql); err != nil {
		return fmt.Errorf("add GTID %s to the position: %v", g.mysql, err)
	}
	return nil
}

func (p *mysqlPos) syncSet() (mysql.GTIDSet, error) { return p.set.Clone(), nil }
