package replicator

import (
	"bytes"
	"testing"
)

func TestReassertKeyWhere(t *testing.T) {
	tb := &reassertTable{pk: []string{"id", "raw", "na`me"}, binary: []bool{false, true, false}}
	where, args, err := tb.keyWhere(`["42","0x00ff","a\"b"]`)
	if err != nil {
		t.Fatal(err)
	}
	if want := "`id` = ? AND `raw` = ? AND `na``me` = ?"; where != want {
		t.Fatalf("where = %s, want %s", where, want)
	}
	if args[0] != "42" || !bytes.Equal(args[1].([]byte), []byte{0, 0xff}) || args[2] != `a"b` {
		t.Fatalf("args = %#v", args)
	}
	for _, bad := range []string{
		`["42","0x00"]`,        // too few values
		`["42","0xzz","x"]`,    // bytes not hex
		`not json`,             // not a JSON array
		`["1","0x00","x","y"]`, // too many values
	} {
		if _, _, err := tb.keyWhere(bad); err == nil {
			t.Errorf("keyWhere(%s) accepted", bad)
		}
	}
}
