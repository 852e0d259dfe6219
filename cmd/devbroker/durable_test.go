package main

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"maps"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/segmentio/kafka-go"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/tandemdb/tandem/internal/testenv"
)

// partState is what a client can observe of one partition.
type partState struct {
	Start, End int64    // log start offset and high watermark
	Values     []string // the values at Start, Start+1, ..., End-1
}

// state maps topic → partition → what is in it.
type state map[string]map[int]partState

func (s state) diff(o state) string {
	var b strings.Builder
	for _, topic := range slices.Sorted(maps.Keys(s)) {
		if _, ok := o[topic]; !ok {
			fmt.Fprintf(&b, "topic %s: gone\n", topic)
			continue
		}
		for p, ps := range s[topic] {
			ops, ok := o[topic][p]
			switch {
			case !ok:
				fmt.Fprintf(&b, "%s/%d: gone\n", topic, p)
			case ps.Start != ops.Start || ps.End != ops.End:
				fmt.Fprintf(&b, "%s/%d: offsets [%d, %d), want [%d, %d)\n", topic, p, ops.Start, ops.End, ps.Start, ps.End)
			default:
				for i := range ps.Values {
					if ps.Values[i] != ops.Values[i] {
						fmt.Fprintf(&b, "%s/%d offset %d: %q, want %q\n", topic, p, ps.Start+int64(i), ops.Values[i], ps.Values[i])
					}
				}
			}
		}
		if len(o[topic]) != len(s[topic]) {
			fmt.Fprintf(&b, "topic %s: %d partitions, want %d\n", topic, len(o[topic]), len(s[topic]))
		}
	}
	for topic := range o {
		if _, ok := s[topic]; !ok {
			fmt.Fprintf(&b, "topic %s: unexpected\n", topic)
		}
	}
	return b.String()
}

// observe reads every record of topics with kafka-go partition readers.
func observe(t *testing.T, addr string, topics ...string) state {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	s := make(state)
	for _, topic := range topics {
		conn, err := kafka.DialContext(ctx, "tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		parts, err := conn.ReadPartitions(topic)
		conn.Close()
		if err != nil {
			t.Fatalf("partitions of %s: %v", topic, err)
		}
		s[topic] = make(map[int]partState)
		for _, p := range parts {
			s[topic][p.ID] = observePartition(t, ctx, addr, topic, p.ID)
		}
	}
	return s
}

func observePartition(t *testing.T, ctx context.Context, addr, topic string, partition int) partState {
	t.Helper()
	conn, err := kafka.DialLeader(ctx, "tcp", addr, topic, partition)
	if err != nil {
		t.Fatalf("%s/%d: %v", topic, partition, err)
	}
	start, end, err := conn.ReadOffsets()
	conn.Close()
	if err != nil {
		t.Fatalf("%s/%d offsets: %v", topic, partition, err)
	}
	ps := partState{Start: start, End: end}
	if start == end {
		return ps
	}
	r := kafka.NewReader(kafka.ReaderConfig{
		Brokers:   []string{addr},
		Topic:     topic,
		Partition: partition,
		MaxWait:   100 * time.Millisecond,
	})
	defer r.Close()
	if err := r.SetOffset(start); err != nil {
		t.Fatal(err)
	}
	for off := start; off < end; off++ {
		m, err := r.ReadMessage(ctx)
		if err != nil {
			t.Fatalf("%s/%d offset %d: %v", topic, partition, off, err)
		}
		if m.Offset != off {
			t.Fatalf("%s/%d: read offset %d, want %d", topic, partition, m.Offset, off)
		}
		ps.Values = append(ps.Values, string(m.Value))
	}
	return ps
}

// newClient returns a kafka-go client with its own transport: after a
// restart, pooled connections of a shared one are dead.
func newClient(t *testing.T, addr string) *kafka.Client {
	tr := &kafka.Transport{}
	t.Cleanup(tr.CloseIdleConnections)
	return &kafka.Client{Addr: kafka.TCP(addr), Timeout: 20 * time.Second, Transport: tr}
}

// produce appends values to one partition with acks=all and returns the
// offset of the first, failing the test unless it is wantBase.
func produce(t *testing.T, c *kafka.Client, topic string, partition int, wantBase int64, values ...string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	recs := make([]kafka.Record, len(values))
	for i, v := range values {
		recs[i] = kafka.Record{Value: kafka.NewBytes([]byte(v))}
	}
	resp, err := c.Produce(ctx, &kafka.ProduceRequest{
		Topic:        topic,
		Partition:    partition,
		RequiredAcks: kafka.RequireAll,
		Records:      kafka.NewRecordReader(recs...),
	})
	if err == nil {
		err = resp.Error
	}
	if err != nil {
		t.Fatalf("produce to %s/%d: %v", topic, partition, err)
	}
	if resp.BaseOffset != wantBase {
		t.Fatalf("produce to %s/%d: base offset %d, want %d", topic, partition, resp.BaseOffset, wantBase)
	}
}

func write(t *testing.T, addr, topic string, values ...string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	tr := &kafka.Transport{}
	defer tr.CloseIdleConnections()
	w := &kafka.Writer{
		Addr:         kafka.TCP(addr),
		Topic:        topic,
		Balancer:     &kafka.RoundRobin{},
		RequiredAcks: kafka.RequireAll,
		BatchTimeout: time.Millisecond,
		Transport:    tr,
	}
	msgs := make([]kafka.Message, len(values))
	for i, v := range values {
		msgs[i] = kafka.Message{Value: []byte(v)}
	}
	err := w.WriteMessages(ctx, msgs...)
	if cerr := w.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		t.Fatalf("write to %s: %v", topic, err)
	}
}

// TestRestartKeepsOffsets is the acceptance test's promise: a broker killed
// with SIGKILL and started again serves the same records at the same
// offsets, and kafka-go clients keep appending after them.
func TestRestartKeepsOffsets(t *testing.T) {
	t.Parallel()
	b := testenv.NewBroker(t)
	topic := testenv.Topic(t)
	testenv.CreateTopic(t, b, topic, 3)

	c := newClient(t, b.Addr)
	next := make([]int64, 3)
	batch := func(round, partition, n int) []string {
		vs := make([]string, n)
		for i := range vs {
			vs[i] = fmt.Sprintf("r%d-p%d-%d-%s", round, partition, i, strings.Repeat("x", 100))
		}
		return vs
	}
	for round := range 12 {
		p := round % 3
		vs := batch(round, p, 1+round*7%40)
		produce(t, c, topic, p, next[p], vs...)
		next[p] += int64(len(vs))
	}
	write(t, b.Addr, topic, batch(100, -1, 90)...)
	before := observe(t, b.Addr, topic)
	for p, ps := range before[topic] {
		if ps.End != next[p]+30 {
			t.Fatalf("partition %d ends at %d before the crash, want %d", p, ps.End, next[p]+30)
		}
		next[p] = ps.End
	}

	addr := b.Addr
	b.Kill(t)
	b.Start(t)
	if b.Addr != addr {
		t.Fatalf("restarted on %s, want %s", b.Addr, addr)
	}
	if d := before.diff(observe(t, b.Addr, topic)); d != "" {
		t.Fatalf("after SIGKILL and restart:\n%s", d)
	}

	// Appending continues where the log ended, with both kafka-go APIs.
	c = newClient(t, b.Addr)
	for round := 200; round < 206; round++ {
		p := round % 3
		vs := batch(round, p, 5)
		produce(t, c, topic, p, next[p], vs...)
		next[p] += int64(len(vs))
	}
	write(t, b.Addr, topic, batch(300, -1, 30)...)
	more := observe(t, b.Addr, topic)
	for p, ps := range more[topic] {
		old := before[topic][p]
		if ps.End != next[p]+10 || !slices.Equal(ps.Values[:len(old.Values)], old.Values) {
			t.Fatalf("partition %d after appending: ends at %d (want %d), or its first %d records changed", p, ps.End, next[p]+10, len(old.Values))
		}
	}

	// The second crash replays records appended after the first replay.
	b.Kill(t)
	b.Start(t)
	if d := more.diff(observe(t, b.Addr, topic)); d != "" {
		t.Fatalf("after a second SIGKILL and restart:\n%s", d)
	}
}

// recordBatch encodes values as one v2 record batch.
func recordBatch(producerID int64, firstSeq int32, values ...string) []byte {
	var recs []byte
	for i, v := range values {
		var r []byte
		r = append(r, 0)                     // attributes
		r = binary.AppendVarint(r, 0)        // timestamp delta
		r = binary.AppendVarint(r, int64(i)) // offset delta
		r = binary.AppendVarint(r, -1)       // null key
		r = binary.AppendVarint(r, int64(len(v)))
		r = append(r, v...)
		r = binary.AppendVarint(r, 0) // no headers
		recs = binary.AppendVarint(recs, int64(len(r)))
		recs = append(recs, r...)
	}
	epoch := int16(-1)
	if producerID >= 0 {
		epoch = 0
	}
	now := time.Now().UnixMilli()
	b := kmsg.RecordBatch{
		PartitionLeaderEpoch: -1,
		Magic:                2,
		LastOffsetDelta:      int32(len(values) - 1),
		FirstTimestamp:       now,
		MaxTimestamp:         now,
		ProducerID:           producerID,
		ProducerEpoch:        epoch,
		FirstSequence:        firstSeq,
		NumRecords:           int32(len(values)),
		Records:              recs,
	}
	out := b.AppendTo(nil)
	binary.BigEndian.PutUint32(out[8:], uint32(len(out)-12))
	binary.BigEndian.PutUint32(out[17:], crc32.Checksum(out[21:], castagnoli))
	return out
}

type produceTo struct {
	topic     string
	id        [16]byte
	partition int32
	batch     []byte
}

func produceRequest(version int16, acks int16, to ...produceTo) *kmsg.ProduceRequest {
	req := kmsg.NewPtrProduceRequest()
	req.SetVersion(version)
	req.Acks = acks
	req.TimeoutMillis = 10000
	for _, p := range to {
		t := kmsg.NewProduceRequestTopic()
		t.Topic, t.TopicID = p.topic, p.id
		rp := kmsg.NewProduceRequestTopicPartition()
		rp.Partition, rp.Records = p.partition, p.batch
		t.Partitions = append(t.Partitions, rp)
		req.Topics = append(req.Topics, t)
	}
	return req
}

// produceResults flattens a produce response to "partition:error@offset".
func produceResults(t *testing.T, resp kmsg.Response, err error) []string {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, rt := range resp.(*kmsg.ProduceResponse).Topics {
		for _, p := range rt.Partitions {
			if p.ErrorCode != 0 {
				out = append(out, fmt.Sprintf("%d:%s", p.Partition, kerr.ErrorForCode(p.ErrorCode).(*kerr.Error).Message))
			} else {
				out = append(out, fmt.Sprintf("%d:ok@%d", p.Partition, p.BaseOffset))
			}
		}
	}
	slices.Sort(out)
	return out
}

func dialRaw(t *testing.T, addr string) *rawClient {
	t.Helper()
	conn, err := net.DialTimeout("tcp", addr, 10*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	c := newRawClient(conn)
	t.Cleanup(func() { c.Close() })
	return c
}

func wantErrors(t *testing.T, what string, got []int16, want ...int16) {
	t.Helper()
	if !slices.Equal(got, want) {
		t.Fatalf("%s: error codes %v, want %v", what, got, want)
	}
}

// TestRestartReplaysEveryDecision journals requests kfake rejects in whole
// or in part next to ones it accepts, with everything the journal rewrites
// (topic IDs, acks=0, default partitions, auto-creation, producer IDs), and
// checks that the restarted broker holds exactly what the first one did.
func TestRestartReplaysEveryDecision(t *testing.T) {
	t.Parallel()
	b := testenv.NewBroker(t)
	base := testenv.Topic(t)
	t1, t2, t3 := base+"-a", base+"-b", base+"-auto"
	c := dialRaw(t, b.Addr)
	res := func(resp kmsg.Response, err error) []string {
		t.Helper()
		return produceResults(t, resp, err)
	}

	// Produce before the topic exists: rejected now, so on replay too.
	got := res(c.do(produceRequest(7, -1, produceTo{topic: t1, batch: recordBatch(-1, 0, "early")})))
	if want := []string{"0:" + kerr.UnknownTopicOrPartition.Message}; !slices.Equal(got, want) {
		t.Fatalf("produce to a missing topic: %v, want %v", got, want)
	}

	create := kmsg.NewPtrCreateTopicsRequest()
	create.SetVersion(7)
	for _, tp := range []struct {
		name  string
		parts int32
	}{{t1, 2}, {t2, -1}} {
		ct := kmsg.NewCreateTopicsRequestTopic()
		ct.Topic, ct.NumPartitions, ct.ReplicationFactor = tp.name, tp.parts, -1
		create.Topics = append(create.Topics, ct)
	}
	resp, err := c.do(create)
	if err != nil {
		t.Fatal(err)
	}
	var ids = make(map[string][16]byte)
	var codes []int16
	for _, ct := range resp.(*kmsg.CreateTopicsResponse).Topics {
		ids[ct.Topic] = ct.TopicID
		codes = append(codes, ct.ErrorCode)
	}
	wantErrors(t, "create topics", codes, 0, 0)

	corrupt := recordBatch(-1, 0, "corrupt")
	corrupt[len(corrupt)-1] ^= 0xff
	got = res(c.do(produceRequest(7, -1,
		produceTo{topic: t1, partition: 0, batch: recordBatch(-1, 0, "a0", "a1")},
		produceTo{topic: t1, partition: 1, batch: corrupt},
		produceTo{topic: t1, partition: 5, batch: recordBatch(-1, 0, "nowhere")},
	)))
	if want := []string{"0:ok@0", "1:" + kerr.CorruptMessage.Message, "5:" + kerr.UnknownTopicOrPartition.Message}; !slices.Equal(got, want) {
		t.Fatalf("mixed produce: %v, want %v", got, want)
	}

	// v13 names topics by ID, which change across restarts.
	got = res(c.do(produceRequest(13, -1,
		produceTo{id: ids[t1], partition: 1, batch: recordBatch(-1, 0, "b0")},
		produceTo{id: [16]byte{1, 2, 3}, partition: 0, batch: recordBatch(-1, 0, "unknown id")},
	)))
	if want := []string{"0:" + kerr.UnknownTopicID.Message, "1:ok@0"}; !slices.Equal(got, want) {
		t.Fatalf("produce by topic ID: %v, want %v", got, want)
	}

	// acks=0 has no response (and kfake answers nothing else on that
	// connection afterwards), so wait for the record to show up.
	conn, err := net.DialTimeout("tcp", b.Addr, 10*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	frame := kmsg.NewRequestFormatter().AppendRequest(nil, produceRequest(7, 0, produceTo{topic: t1, batch: recordBatch(-1, 0, "c0")}), 1)
	if _, err := conn.Write(frame); err != nil {
		t.Fatal(err)
	}
	testenv.WaitFor(t, 10*time.Second, "the acks=0 record", func() bool {
		lo := kmsg.NewPtrListOffsetsRequest()
		lo.SetVersion(1)
		lt := kmsg.NewListOffsetsRequestTopic()
		lt.Topic = t1
		lp := kmsg.NewListOffsetsRequestTopicPartition()
		lp.Partition, lp.Timestamp = 0, -1
		lt.Partitions = append(lt.Partitions, lp)
		lo.Topics = append(lo.Topics, lt)
		resp, err := c.do(lo)
		return err == nil && resp.(*kmsg.ListOffsetsResponse).Topics[0].Partitions[0].Offset == 3
	})

	// An idempotent producer: the broker does not deduplicate its
	// batches, neither now nor on replay, so offsets agree.
	initPID := kmsg.NewPtrInitProducerIDRequest()
	initPID.SetVersion(1)
	resp, err = c.do(initPID)
	if err != nil {
		t.Fatal(err)
	}
	pid := resp.(*kmsg.InitProducerIDResponse)
	if pid.ErrorCode != 0 || pid.ProducerID < 0 {
		t.Fatalf("InitProducerID: error %d, producer ID %d", pid.ErrorCode, pid.ProducerID)
	}
	for i, seq := range []int32{0, 0, 7} {
		got = res(c.do(produceRequest(7, -1, produceTo{topic: t1, partition: 1, batch: recordBatch(pid.ProducerID, seq, fmt.Sprintf("d%d", i))})))
		if want := []string{fmt.Sprintf("1:ok@%d", 1+i)}; !slices.Equal(got, want) {
			t.Fatalf("idempotent produce %d: %v, want %v", i, got, want)
		}
	}

	// Delete by topic ID, then recreate with the default partition count.
	del := kmsg.NewPtrDeleteTopicsRequest()
	del.SetVersion(6)
	dt := kmsg.NewDeleteTopicsRequestTopic()
	dt.TopicID = ids[t2]
	del.Topics = append(del.Topics, dt)
	resp, err = c.do(del)
	if err != nil {
		t.Fatal(err)
	}
	wantErrors(t, "delete by ID", []int16{resp.(*kmsg.DeleteTopicsResponse).Topics[0].ErrorCode}, 0)
	delMissing := kmsg.NewPtrDeleteTopicsRequest()
	delMissing.SetVersion(1)
	delMissing.TopicNames = []string{base + "-never"}
	if _, err := c.do(delMissing); err != nil {
		t.Fatal(err)
	}
	create2 := kmsg.NewPtrCreateTopicsRequest()
	create2.SetVersion(4)
	ct := kmsg.NewCreateTopicsRequestTopic()
	ct.Topic, ct.NumPartitions, ct.ReplicationFactor = t2, -1, -1
	create2.Topics = append(create2.Topics, ct)
	ct1 := kmsg.NewCreateTopicsRequestTopic()
	ct1.Topic, ct1.NumPartitions, ct1.ReplicationFactor = t1, 9, -1
	create2.Topics = append(create2.Topics, ct1)
	resp, err = c.do(create2)
	if err != nil {
		t.Fatal(err)
	}
	codes = nil
	for _, ct := range resp.(*kmsg.CreateTopicsResponse).Topics {
		codes = append(codes, ct.ErrorCode)
	}
	wantErrors(t, "recreate", codes, 0, kerr.TopicAlreadyExists.Code)
	got = res(c.do(produceRequest(7, -1, produceTo{topic: t2, batch: recordBatch(-1, 0, "g0")})))
	if want := []string{"0:ok@0"}; !slices.Equal(got, want) {
		t.Fatalf("produce to the recreated topic: %v, want %v", got, want)
	}

	// Auto-creation by a metadata request.
	meta := kmsg.NewPtrMetadataRequest()
	meta.SetVersion(7)
	meta.AllowAutoTopicCreation = true
	mt := kmsg.NewMetadataRequestTopic()
	mt.Topic = kmsg.StringPtr(t3)
	meta.Topics = append(meta.Topics, mt, mt)
	if _, err := c.do(meta); err != nil {
		t.Fatal(err)
	}
	got = res(c.do(produceRequest(7, -1, produceTo{topic: t3, batch: recordBatch(-1, 0, "e0")})))
	if want := []string{"0:ok@0"}; !slices.Equal(got, want) {
		t.Fatalf("produce to the auto-created topic: %v, want %v", got, want)
	}

	// More partitions, then drop records below offset 1 of partition 0.
	cp := kmsg.NewPtrCreatePartitionsRequest()
	cp.SetVersion(1)
	cpt := kmsg.NewCreatePartitionsRequestTopic()
	cpt.Topic, cpt.Count = t1, 3
	cp.Topics = append(cp.Topics, cpt)
	resp, err = c.do(cp)
	if err != nil {
		t.Fatal(err)
	}
	wantErrors(t, "create partitions", []int16{resp.(*kmsg.CreatePartitionsResponse).Topics[0].ErrorCode}, 0)
	got = res(c.do(produceRequest(7, -1, produceTo{topic: t1, partition: 2, batch: recordBatch(-1, 0, "f0")})))
	if want := []string{"2:ok@0"}; !slices.Equal(got, want) {
		t.Fatalf("produce to the new partition: %v, want %v", got, want)
	}
	dr := kmsg.NewPtrDeleteRecordsRequest()
	dr.SetVersion(1)
	drt := kmsg.NewDeleteRecordsRequestTopic()
	drt.Topic = t1
	drp := kmsg.NewDeleteRecordsRequestTopicPartition()
	drp.Partition, drp.Offset = 0, 1
	drt.Partitions = append(drt.Partitions, drp)
	dr.Topics = append(dr.Topics, drt)
	resp, err = c.do(dr)
	if err != nil {
		t.Fatal(err)
	}
	wantErrors(t, "delete records", []int16{resp.(*kmsg.DeleteRecordsResponse).Topics[0].Partitions[0].ErrorCode}, 0)

	want := state{
		t1: {
			0: {Start: 1, End: 3, Values: []string{"a1", "c0"}},
			1: {Start: 0, End: 4, Values: []string{"b0", "d0", "d1", "d2"}},
			2: {Start: 0, End: 1, Values: []string{"f0"}},
		},
		t2: {0: {Start: 0, End: 1, Values: []string{"g0"}}},
		t3: {0: {Start: 0, End: 1, Values: []string{"e0"}}},
	}
	if d := want.diff(observe(t, b.Addr, t1, t2, t3)); d != "" {
		t.Fatalf("before the crash:\n%s", d)
	}
	b.Kill(t)
	b.Start(t)
	if d := want.diff(observe(t, b.Addr, t1, t2, t3)); d != "" {
		t.Fatalf("after SIGKILL and restart:\n%s", d)
	}
	produce(t, newClient(t, b.Addr), t1, 0, 3, "after")
}

// devbroker is a cmd/devbroker process on a data directory the test owns.
type devbroker struct {
	bin, dir, ready, logPath string
	addr                     string
	cmd                      *exec.Cmd
	exited                   chan struct{}
}

func newDevbroker(t *testing.T) *devbroker {
	t.Helper()
	if testing.Short() {
		t.Skip("starts devbroker processes")
	}
	root := t.TempDir()
	d := &devbroker{
		bin:     testenv.BuildBinary(t, "./cmd/devbroker"),
		dir:     filepath.Join(root, "data"),
		ready:   filepath.Join(root, "ready"),
		logPath: filepath.Join(root, "devbroker.log"),
		addr:    "127.0.0.1:0",
	}
	t.Cleanup(func() {
		d.kill(t)
		if t.Failed() {
			data, _ := os.ReadFile(d.logPath)
			t.Logf("devbroker log:\n%s", data)
		}
	})
	return d
}

// launch starts the process without waiting for it to be ready.
func (d *devbroker) launch(t *testing.T, args ...string) {
	t.Helper()
	if err := os.Remove(d.ready); err != nil && !errors.Is(err, os.ErrNotExist) {
		t.Fatal(err)
	}
	logf, err := os.OpenFile(d.logPath, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	defer logf.Close()
	args = append([]string{"-listen", d.addr, "-data-dir", d.dir, "-ready-file", d.ready, "-log-level", "warn"}, args...)
	d.cmd = exec.Command(d.bin, args...)
	d.cmd.Stdout, d.cmd.Stderr = logf, logf
	if err := d.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	d.exited = make(chan struct{})
	go func(cmd *exec.Cmd, exited chan struct{}) {
		cmd.Wait()
		close(exited)
	}(d.cmd, d.exited)
}

// start launches the process and waits for its ready file.
func (d *devbroker) start(t *testing.T, args ...string) {
	t.Helper()
	d.launch(t, args...)
	testenv.WaitFor(t, 60*time.Second, "the devbroker ready file", func() bool {
		select {
		case <-d.exited:
			data, _ := os.ReadFile(d.logPath)
			t.Fatalf("devbroker exited: %s", data)
		default:
		}
		data, err := os.ReadFile(d.ready)
		if err != nil {
			return false
		}
		d.addr = strings.TrimSpace(string(data))
		return true
	})
}

func (d *devbroker) kill(t *testing.T) {
	t.Helper()
	if d.cmd == nil {
		return
	}
	d.cmd.Process.Kill()
	<-d.exited
	d.cmd = nil
}

func (d *devbroker) log(t *testing.T) string {
	t.Helper()
	data, err := os.ReadFile(d.logPath)
	if err != nil {
		t.Fatal(err)
	}
	return string(data)
}

// TestRestartDropsTornTail appends half a frame to the journal, as a crash
// in the middle of a write leaves it, and checks that the broker drops it,
// keeps everything before it and appends readable frames after it.
func TestRestartDropsTornTail(t *testing.T) {
	t.Parallel()
	d := newDevbroker(t)
	d.start(t, "-topics", "torn:2")
	c := newClient(t, d.addr)
	produce(t, c, "torn", 0, 0, "a", "b")
	produce(t, c, "torn", 1, 0, "c")
	before := observe(t, d.addr, "torn")
	d.kill(t)

	f, err := os.OpenFile(filepath.Join(d.dir, journalName), os.O_WRONLY|os.O_APPEND, 0)
	if err != nil {
		t.Fatal(err)
	}
	torn := binary.BigEndian.AppendUint32(nil, 1000) // claims 1000 bytes
	torn = append(torn, 0xde, 0xad, 0xbe, 0xef, 0, 0, 0, 7, 'h', 'a', 'l', 'f')
	if _, err := f.Write(torn); err != nil {
		t.Fatal(err)
	}
	f.Close()

	d.start(t, "-topics", "torn:2")
	if want := fmt.Sprintf("dropped a torn tail of %d bytes", len(torn)); !strings.Contains(d.log(t), want) {
		t.Fatalf("log does not say %q:\n%s", want, d.log(t))
	}
	if diff := before.diff(observe(t, d.addr, "torn")); diff != "" {
		t.Fatalf("after a torn tail:\n%s", diff)
	}
	produce(t, newClient(t, d.addr), "torn", 0, 2, "d")
	after := observe(t, d.addr, "torn")

	d.kill(t)
	if err := os.Truncate(d.logPath, 0); err != nil {
		t.Fatal(err)
	}
	d.start(t, "-topics", "torn:2")
	if strings.Contains(d.log(t), "torn tail") {
		t.Fatalf("the truncated journal still has a torn tail:\n%s", d.log(t))
	}
	if diff := after.diff(observe(t, d.addr, "torn")); diff != "" {
		t.Fatalf("after appending behind a dropped tail:\n%s", diff)
	}
}

// TestClientsWaitForReplay connects while a restarted broker is still
// replaying a large journal: the client must see the whole log, never a
// partial one.
func TestClientsWaitForReplay(t *testing.T) {
	t.Parallel()
	d := newDevbroker(t)
	d.start(t, "-topics", "big:1")
	c := newClient(t, d.addr)
	const batches, per = 300, 100
	value := strings.Repeat("v", 200)
	for i := range batches {
		vs := make([]string, per)
		for j := range vs {
			vs[j] = value
		}
		produce(t, c, "big", 0, int64(i*per), vs...)
	}
	d.kill(t)

	d.launch(t, "-topics", "big:1")
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	var conn *kafka.Conn
	testenv.WaitFor(t, 60*time.Second, "the restarted broker's port", func() bool {
		var err error
		conn, err = kafka.DialContext(ctx, "tcp", d.addr)
		return err == nil
	})
	_, readyEarly := os.Stat(d.ready)
	conn.Close()
	lc, err := kafka.DialLeader(ctx, "tcp", d.addr, "big", 0)
	if err != nil {
		t.Fatal(err)
	}
	end, err := lc.ReadLastOffset()
	lc.Close()
	if err != nil {
		t.Fatal(err)
	}
	if end != batches*per {
		t.Fatalf("a client connecting during replay saw the log end at %d, want %d", end, batches*per)
	}
	t.Logf("connected %s the ready file existed", map[bool]string{true: "before", false: "after"}[readyEarly != nil])
}

func TestDataDirLockedWhileInUse(t *testing.T) {
	t.Parallel()
	d := newDevbroker(t)
	d.start(t)
	var stderr bytes.Buffer
	code := run(context.Background(), []string{"-data-dir", d.dir, "-log-level", "none"}, &stderr)
	if code != 1 || !strings.Contains(stderr.String(), "in use by another devbroker") {
		t.Fatalf("exit code %d, stderr %q; want 1 and a message that the data dir is in use", code, stderr.String())
	}
}

// runInProcess runs the broker in this process (so the race detector sees
// the journal and the control functions) until the returned stop is called.
func runInProcess(t testing.TB, args ...string) (addr string, stop func()) {
	t.Helper()
	ready := filepath.Join(t.TempDir(), "ready")
	ctx, cancel := context.WithCancel(context.Background())
	var (
		wg     sync.WaitGroup
		code   int
		stderr bytes.Buffer // written by run only; read after wg.Wait
	)
	wg.Add(1)
	go func() {
		defer wg.Done()
		code = run(ctx, append([]string{"-ready-file", ready, "-log-level", "none"}, args...), &stderr)
	}()
	stopped := false
	stop = func() {
		if stopped {
			return
		}
		stopped = true
		cancel()
		wg.Wait()
		if code != 0 {
			t.Fatalf("exit code %d, want 0; stderr: %s", code, stderr.String())
		}
	}
	t.Cleanup(stop)
	testenv.WaitFor(t, 30*time.Second, "the ready file", func() bool {
		data, err := os.ReadFile(ready)
		addr = strings.TrimSpace(string(data))
		return err == nil
	})
	return addr, stop
}

// TestStopAndRestartInProcess restarts after a clean stop, with other
// -partitions: the journal, not the flags, decides what exists.
func TestStopAndRestartInProcess(t *testing.T) {
	dir := t.TempDir()
	addr, stop := runInProcess(t, "-data-dir", dir, "-topics", "seeded:3", "-partitions", "2")
	c := newClient(t, addr)
	for p := range 3 {
		produce(t, c, "seeded", p, 0, fmt.Sprintf("s%d", p))
	}
	write(t, addr, "seeded", "w0", "w1", "w2")
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	// Through c, whose transport then knows the topic.
	resp, err := c.CreateTopics(ctx, &kafka.CreateTopicsRequest{
		Topics: []kafka.TopicConfig{{Topic: "defaulted", NumPartitions: -1, ReplicationFactor: -1}},
	})
	if err == nil {
		err = resp.Errors["defaulted"]
	}
	if err != nil {
		t.Fatal(err)
	}
	produce(t, c, "defaulted", 1, 0, "x")
	before := observe(t, addr, "seeded", "defaulted")
	stop()

	addr, _ = runInProcess(t, "-data-dir", dir, "-topics", "seeded:3", "-partitions", "5", "-listen", addr)
	if d := before.diff(observe(t, addr, "seeded", "defaulted")); d != "" {
		t.Fatalf("after a clean restart:\n%s", d)
	}
	produce(t, newClient(t, addr), "seeded", 0, 2, "more")
}

// TestNoFsyncSurvivesKill: with -fsync=false every acknowledged record is
// still in the journal's file (written before the acknowledgement), so a
// SIGKILLed broker restarts with all of it.
func TestNoFsyncSurvivesKill(t *testing.T) {
	t.Parallel()
	d := newDevbroker(t)
	topic := testenv.Topic(t)
	d.start(t, "-fsync=false", "-topics", topic+":2")
	vs := make([]string, 200)
	for i := range vs {
		vs[i] = fmt.Sprintf("record-%d", i)
	}
	write(t, d.addr, topic, vs...)
	before := observe(t, d.addr, topic)
	d.kill(t)
	d.start(t, "-fsync=false")
	if diff := before.diff(observe(t, d.addr, topic)); diff != "" {
		t.Fatalf("after SIGKILL and restart:\n%s", diff)
	}
}
