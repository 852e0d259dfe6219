package binlog

import (
	"strings"
	"testing"

	"github.com/go-mysql-org/go-mysql/mysql"
)

func TestMariaPos(t *testing.T) {
	p, err := parseMariaPos(" 2-102-7,\n 1-101-42 ")
	if err != nil {
		t.Fatal(err)
	}
	if got := p.String(); got != "1-101-42,2-102-7" {
		t.Fatalf("String = %q", got)
	}
	if err := p.commit(txnGTID{maria: mysql.MariadbGTID{DomainID: 1, ServerID: 103, SequenceNumber: 43}}); err != nil {
		t.Fatal(err)
	}
	if err := p.commit(txnGTID{maria: mysql.MariadbGTID{DomainID: 0, ServerID: 1, SequenceNumber: 1}}); err != nil {
		t.Fatal(err)
	}
	if got := p.String(); got != "0-1-1,1-103-43,2-102-7" {
		t.Fatalf("after commits: %q", got)
	}
	set, err := p.syncSet()
	if err != nil {
		t.Fatal(err)
	}
	if got := set.String(); got != "0-1-1,1-103-43,2-102-7" {
		t.Fatalf("sync set %q", got)
	}
	empty, err := parseMariaPos("")
	if err != nil || empty.String() != "" {
		t.Fatalf("empty: %v %q", err, empty.String())
	}
	for _, bad := range []string{"1-2", "1-2-3-4", "a-1-2", "1-101-5,1-102-6", "1-101-", "-1-2-3", "1-101-5,"} {
		if _, err := parseMariaPos(bad); err == nil {
			t.Errorf("parseMariaPos(%q) accepted", bad)
		}
	}
}

func TestMySQLPos(t *testing.T) {
	g, err := parseGTIDSet(FlavorMySQL, "3e11fa47-71ca-11e1-9e33-c80aa9429562:1-5")
	if err != nil {
		t.Fatal(err)
	}
	if err := g.commit(txnGTID{mysql: "3e11fa47-71ca-11e1-9e33-c80aa9429562:6"}); err != nil {
		t.Fatal(err)
	}
	if got := g.String(); got != "3e11fa47-71ca-11e1-9e33-c80aa9429562:1-6" {
		t.Fatalf("String = %q", got)
	}
	if _, err := parseGTIDSet(FlavorMySQL, "nonsense"); err == nil {
		t.Error("bad MySQL set accepted")
	}
}

// FuzzParseMariaPos checks that every accepted position prints in a
// canonical form that parses back to itself.
func FuzzParseMariaPos(f *testing.F) {
	f.Add("1-101-42,2-102-7")
	f.Add("0-0-0")
	f.Add("4294967295-4294967295-18446744073709551615")
	f.Add(" 3-1-1 , 1-1-1")
	f.Fuzz(func(t *testing.T, s string) {
		p, err := parseMariaPos(s)
		if err != nil {
			return
		}
		canon := p.String()
		q, err := parseMariaPos(canon)
		if err != nil {
			t.Fatalf("canonical form %q of %q does not parse: %v", canon, s, err)
		}
		if q.String() != canon {
			t.Fatalf("%q → %q → %q", s, canon, q.String())
		}
		if n := strings.Count(canon, ","); canon != "" && n+1 != len(p.gtids) {
			t.Fatalf("%q has %d entries, printed %q", s, len(p.gtids), canon)
		}
		for i := 1; i < len(p.gtids); i++ {
			if p.gtids[i-1].DomainID >= p.gtids[i].DomainID {
				t.Fatalf("domains out of order in %q", canon)
			}
		}
	})
}
