package compare

import (
	"sort"
	"testing"
)

// TestKeyOrderMatchesServer: the merge needs the order the server sorted
// the keys in: numbers by value (negative first), other keys byte-wise.
func TestKeyOrderMatchesServer(t *testing.T) {
	keys := []string{"10", "-5", "2", "0", "-10", "100", "9"}
	sort.Slice(keys, func(i, j int) bool { return cmpValue([]byte(keys[i]), []byte(keys[j])) < 0 })
	want := []string{"-10", "-5", "0", "2", "9", "10", "100"}
	for i := range want {
		if keys[i] != want[i] {
			t.Fatalf("order %v, want %v", keys, want)
		}
	}
	if cmpValue([]byte("abc"), []byte("abd")) >= 0 || cmpValue([]byte("b"), []byte("a")) <= 0 {
		t.Fatal("byte-wise order broken")
	}
	if isNum([]byte("-")) || isNum([]byte("1-")) || !isNum([]byte("-1")) {
		t.Fatal("isNum")
	}
}
