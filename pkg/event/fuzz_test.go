package event_test

import (
	"testing"

	"github.com/tandemdb/tandem/pkg/event"
)

// FuzzDecode checks that Decode never panics on any input and that whatever
// it accepts re-encodes to a message that decodes to the identical txn.
//
// Each input is tried twice: as it is (mostly stopped by the checksum) and
// re-framed with a correct length and CRC (see frame), so that mutations
// reach the structural checks behind the checksum.
func FuzzDecode(f *testing.F) {
	seeds := []event.Txn{multiTable(), bigTxn(), {Origin: 1}, {Origin: 9, Fragment: 3, Tenant: "t"}}
	for _, tt := range edgeValues {
		seeds = append(seeds, oneValue(tt.v))
	}
	for _, s := range seeds {
		b, err := event.Encode(nil, &s)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
		f.Add(payloadOf(b))
	}
	f.Add([]byte{})
	f.Add([]byte("TD\x01"))
	f.Fuzz(func(t *testing.T, data []byte) {
		checkDecode(t, data)
		checkDecode(t, frame(payloadOf(data)))
	})
}

func checkDecode(t *testing.T, msg []byte) {
	txn, err := event.Decode(msg)
	if err != nil {
		return
	}
	b, err := event.Encode(nil, &txn)
	if err != nil {
		t.Fatalf("decoded txn does not re-encode: %v\ninput %x", err, msg)
	}
	again, err := event.Decode(b)
	if err != nil {
		t.Fatalf("re-encoded txn does not decode: %v\ninput %x", err, msg)
	}
	if d := diffTxn(&txn, &again); d != "" {
		t.Fatalf("decode → encode → decode changed the txn: %s\ninput %x", d, msg)
	}
}
