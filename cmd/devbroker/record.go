package main

import (
	"fmt"
	"math"
	"math/rand/v2"
	"sort"
	"sync/atomic"

	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kmsg"
)

// recorder journals the requests that change kfake's state, from kfake
// control functions.
//
// kfake runs control functions one at a time, in its request loop, right
// before it handles the request itself when the function returns
// handled=false; nothing else runs in between. So the journal order is the
// order kfake applies requests in, and replaying the journal into an empty
// cluster repeats every decision kfake made: a request it rejected (unknown
// topic, corrupt batch, ...) is rejected again on replay and the offsets of
// everything after it still line up. A control function cannot see kfake's
// response, so requests are journaled whether or not they will succeed;
// what keeps replay exact is removing everything that does not depend on the
// journal alone:
//
//   - requests kfake rejects wholesale (unsupported version, transactional
//     or bad-acks produce) are not journaled: they change nothing, and an
//     unsupported version would make kfake drop the replay connection;
//   - topic IDs are random per run, so requests naming topics by ID are
//     journaled with the names the IDs stand for at that moment;
//   - defaults that come from flags (-partitions) are written out, so a
//     restart with other flags replays the same topics;
//   - topics created by metadata requests (auto-creation) are journaled as
//     the CreateTopics request they amount to;
//   - produce requests are journaled with acks=-1, so that replay gets a
//     response to each (kfake appends the same for acks 0, 1 and -1, but
//     after an acks=0 request it answers nothing more on that connection);
//   - kfake's idempotent-producer state (random producer IDs, sequence
//     windows) is not in the journal, so the broker hands out producer IDs
//     itself and kfake never tracks sequences: see initProducerID.
type recorder struct {
	c          *kfake.Cluster
	j          *journal // set before recording is switched on
	partitions int32
	autoCreate bool
	// versions are kfake's supported [min, max] versions per request key,
	// from its ApiVersions response. Set before recording starts.
	versions  map[int16][2]int16
	recording atomic.Bool // off while the journal is replayed
}

// install registers the control functions. They pass requests through
// until recording is switched on.
func (r *recorder) install() {
	for key, fn := range map[int16]func(kmsg.Request) error{
		0:  r.produce,
		3:  r.metadata,
		19: r.createTopics,
		20: r.deleteTopics,
		21: r.asIs, // DeleteRecords
		33: r.asIs, // AlterConfigs
		37: r.asIs, // CreatePartitions
		44: r.asIs, // IncrementalAlterConfigs
	} {
		r.c.ControlKey(key, r.control(fn))
	}
	r.c.ControlKey(22, r.initProducerID)
}

func (r *recorder) control(journal func(kmsg.Request) error) func(kmsg.Request) (kmsg.Response, error, bool) {
	return func(req kmsg.Request) (kmsg.Response, error, bool) {
		if !r.recording.Load() || !r.supported(req) {
			return nil, nil, false
		}
		if err := journal(req); err != nil {
			// Handled with an error: kfake closes the client's connection
			// without applying or acknowledging the request.
			r.c.KeepControl()
			return nil, err, true
		}
		return nil, nil, false
	}
}

func (r *recorder) supported(req kmsg.Request) bool {
	v, ok := r.versions[req.Key()]
	return ok && req.GetVersion() >= v[0] && req.GetVersion() <= v[1]
}

func (r *recorder) write(req kmsg.Request) error {
	_, err := r.j.append(req.Key(), req.GetVersion(), req.AppendTo)
	return err
}

func (r *recorder) asIs(req kmsg.Request) error { return r.write(req) }

func (r *recorder) produce(kreq kmsg.Request) error {
	req := kreq.(*kmsg.ProduceRequest)
	if req.TransactionID != nil {
		return nil // kfake rejects every partition of transactional produces
	}
	switch req.Acks {
	case -1, 0, 1:
	default:
		return nil // InvalidRequiredAcks for every partition
	}
	rec := *req
	// kfake appends the same way for every acks; -1 makes replay get a
	// response for each request, which it counts on.
	rec.Acks = -1
	if req.Version >= 13 {
		// v13 names topics by ID only; v12 is the same request by name.
		rec.Version = 12
		rec.Topics = make([]kmsg.ProduceRequestTopic, 0, len(req.Topics))
		for _, t := range req.Topics {
			info := r.c.TopicIDInfo(t.TopicID)
			if info == nil {
				continue // UnknownTopicID: nothing appended
			}
			t.Topic, t.TopicID = info.Topic, [16]byte{}
			rec.Topics = append(rec.Topics, t)
		}
	}
	if len(rec.Topics) == 0 {
		return nil
	}
	return r.write(&rec)
}

func (r *recorder) createTopics(kreq kmsg.Request) error {
	req := kreq.(*kmsg.CreateTopicsRequest)
	rec := *req
	rec.Topics = make([]kmsg.CreateTopicsRequestTopic, len(req.Topics))
	copy(rec.Topics, req.Topics)
	for i := range rec.Topics {
		if rec.Topics[i].NumPartitions < 0 {
			rec.Topics[i].NumPartitions = r.partitions // kfake's default
		}
	}
	return r.write(&rec)
}

func (r *recorder) deleteTopics(kreq kmsg.Request) error {
	req := kreq.(*kmsg.DeleteTopicsRequest)
	if req.Version <= 5 {
		return r.write(req) // names only
	}
	rec := *req
	rec.Topics = make([]kmsg.DeleteTopicsRequestTopic, len(req.Topics))
	copy(rec.Topics, req.Topics)
	for i := range rec.Topics {
		t := &rec.Topics[i]
		if t.Topic != nil {
			if t.TopicID != ([16]byte{}) {
				return nil // both name and ID: kfake rejects the whole request
			}
			continue
		}
		// kfake looks the ID up without checking that it exists, so an
		// unknown ID stands for the topic named "" - mirror that.
		name := ""
		if info := r.c.TopicIDInfo(t.TopicID); info != nil {
			name = info.Topic
		}
		t.Topic, t.TopicID = kmsg.StringPtr(name), [16]byte{}
	}
	return r.write(&rec)
}

// metadata journals the topics a metadata request is about to auto-create,
// as one CreateTopics request with kfake's defaults written out.
func (r *recorder) metadata(kreq kmsg.Request) error {
	req := kreq.(*kmsg.MetadataRequest)
	if !r.autoCreate || !req.AllowAutoTopicCreation {
		return nil
	}
	var missing []string
	seen := make(map[string]bool)
	for _, t := range req.Topics {
		if t.TopicID != ([16]byte{}) || t.Topic == nil || seen[*t.Topic] {
			continue // kfake never auto-creates by ID
		}
		seen[*t.Topic] = true
		if r.c.TopicInfo(*t.Topic) == nil {
			missing = append(missing, *t.Topic)
		}
	}
	if len(missing) == 0 {
		return nil
	}
	return r.write(r.createTopicsRequest(missing))
}

// createTopicsRequest asks for topics with the -partitions default and
// kfake's default replication, exactly what auto-creation makes.
func (r *recorder) createTopicsRequest(topics []string) *kmsg.CreateTopicsRequest {
	req := kmsg.NewPtrCreateTopicsRequest()
	req.SetVersion(r.versions[req.Key()][1])
	req.TimeoutMillis = 60000
	for _, name := range topics {
		t := kmsg.NewCreateTopicsRequestTopic()
		t.Topic = name
		t.NumPartitions = r.partitions
		t.ReplicationFactor = -1
		req.Topics = append(req.Topics, t)
	}
	return req
}

// initProducerID answers non-transactional InitProducerID requests in
// kfake's place. kfake would remember the random producer ID and from then
// on check the sequence numbers of that producer's batches, dropping
// duplicates and rejecting gaps; that state is not in the journal (the ID
// is not even known until after the control function), so a replay would
// append batches kfake once dropped and shift every later offset. With IDs
// kfake has never issued, it treats every batch as coming from a
// non-idempotent producer, now and on replay: the same offsets, at the cost
// of not deduplicating a producer's retries (at-least-once, like kafka-go).
func (r *recorder) initProducerID(kreq kmsg.Request) (kmsg.Response, error, bool) {
	req := kreq.(*kmsg.InitProducerIDRequest)
	if !r.recording.Load() || !r.supported(req) || req.TransactionalID != nil {
		return nil, nil, false // kfake answers: transactions are unsupported anyway
	}
	r.c.KeepControl()
	resp := req.ResponseKind().(*kmsg.InitProducerIDResponse)
	resp.ProducerID = rand.Int64N(math.MaxInt64)
	resp.ProducerEpoch = 0
	return resp, nil, true
}

// missingTopics returns, sorted, the topics of want that do not exist.
func (r *recorder) missingTopics(want map[string]int32) []string {
	var missing []string
	for name := range want {
		if r.c.TopicInfo(name) == nil {
			missing = append(missing, name)
		}
	}
	sort.Strings(missing)
	return missing
}

// seedRequest creates the -topics that do not exist yet. It goes through
// kfake like any client request, so it is journaled like one.
func (r *recorder) seedRequest(topics map[string]int32) *kmsg.CreateTopicsRequest {
	missing := r.missingTopics(topics)
	if len(missing) == 0 {
		return nil
	}
	req := r.createTopicsRequest(missing)
	for i := range req.Topics {
		req.Topics[i].NumPartitions = topics[req.Topics[i].Topic]
	}
	return req
}

// checkVersions records kfake's supported versions and checks that kfake
// still handles every key the journal may hold.
func (r *recorder) checkVersions(resp *kmsg.ApiVersionsResponse) error {
	r.versions = make(map[int16][2]int16, len(resp.ApiKeys))
	for _, k := range resp.ApiKeys {
		r.versions[k.ApiKey] = [2]int16{k.MinVersion, k.MaxVersion}
	}
	for _, key := range []int16{0, 3, 19, 20, 21, 22, 33, 37, 44} {
		if _, ok := r.versions[key]; !ok {
			return fmt.Errorf("kfake does not handle request key %d (%s), which the journal needs", key, kmsg.NameForKey(key))
		}
	}
	return nil
}
