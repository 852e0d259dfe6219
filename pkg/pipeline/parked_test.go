package pipeline

import (
	"strings"
	"testing"
)

// TestParkedTopic: the pseudo topic of a topic's parked replays is the
// topic and a suffix, and stays within _tandem_offsets.topic's 249
// characters, distinct per topic, for the longest topic names too.
func TestParkedTopic(t *testing.T) {
	if got := ParkedTopic("tandem.s1"); got != "tandem.s1~parked" {
		t.Errorf("ParkedTopic(tandem.s1) = %q", got)
	}
	long1, long2 := strings.Repeat("a", 249), strings.Repeat("a", 248)+"b"
	p1, p2 := ParkedTopic(long1), ParkedTopic(long2)
	if len(p1) != 249 || len(p2) != 249 || p1 == p2 || !strings.HasSuffix(p1, "~parked") {
		t.Errorf("long topics: %q (%d), %q (%d)", p1, len(p1), p2, len(p2))
	}
}
