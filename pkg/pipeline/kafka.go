// Package pipeline wires Tandem's stages together: a Source (binlog reader →
// Kafka, with checkpoints) for the local site, and an Applier per other site
// (that site's topic → local database through a sink).
package pipeline

import (
	"cmp"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"hash/fnv"
	"time"

	"github.com/segmentio/kafka-go"
	"github.com/segmentio/kafka-go/sasl"
	"github.com/segmentio/kafka-go/sasl/plain"
	"github.com/segmentio/kafka-go/sasl/scram"
)

// KafkaConfig is what the pipeline needs to reach the brokers.
type KafkaConfig struct {
	Brokers           []string
	Partitions        int // partitions of topics Tandem creates
	ReplicationFactor int // of topics Tandem creates
	Timeout           time.Duration
	// TLS, when set, encrypts every connection (producer, admin calls and
	// partition readers alike); an empty ServerName checks each broker's
	// host.
	TLS *tls.Config
	// SASL, when set, authenticates every connection (see NewSASL).
	SASL sasl.Mechanism
	// ClientID names Tandem's connections to the brokers (their logs,
	// quotas and ACL audit); default "tandem".
	ClientID string
	// AcksOne makes produce requests wait for the partition leader only
	// (acks=1) instead of every in-sync replica (acks=all). It loses
	// acknowledged changes when a leader fails: for benchmarks only.
	AcksOne bool
}

func (k KafkaConfig) clientID() string {
	if k.ClientID == "" {
		return "tandem"
	}
	return k.ClientID
}

// NewSASL returns the SASL mechanism named as Kafka's sasl.mechanism names
// it: PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512.
func NewSASL(mechanism, user, password string) (sasl.Mechanism, error) {
	switch mechanism {
	case "PLAIN":
		return plain.Mechanism{Username: user, Password: password}, nil
	case "SCRAM-SHA-256":
		return scram.Mechanism(scram.SHA256, user, password)
	case "SCRAM-SHA-512":
		return scram.Mechanism(scram.SHA512, user, password)
	}
	return nil, fmt.Errorf("kafka: SASL mechanism %q is not supported; allowed PLAIN, SCRAM-SHA-256, SCRAM-SHA-512", mechanism)
}

// dialer is what partition readers connect with.
func (k KafkaConfig) dialer() *kafka.Dialer {
	return &kafka.Dialer{
		Timeout:       10 * time.Second,
		DualStack:     true,
		ClientID:      k.clientID(),
		TLS:           k.TLS,
		SASLMechanism: k.SASL,
	}
}

func (k KafkaConfig) client() *kafka.Client {
	timeout := k.Timeout
	if timeout <= 0 {
		timeout = 10 * time.Second
	}
	return &kafka.Client{
		Addr:    kafka.TCP(k.Brokers...),
		Timeout: timeout,
		Transport: &kafka.Transport{
			DialTimeout: 5 * time.Second,
			IdleTimeout: 30 * time.Second,
			MetadataTTL: 5 * time.Second,
			ClientID:    k.clientID(),
			TLS:         k.TLS,
			SASL:        k.SASL,
		},
	}
}

// Probe connects to the brokers the way every Tandem connection does (TLS,
// SASL) and asks for the cluster's brokers, trying each broker in turn
// until one answers. (Metadata, unlike ApiVersions, is refused to a client
// that has not authenticated.) A wrong password, an untrusted certificate
// or a listener expecting TLS shows here with its own error, where
// kafka-go's pooled clients report only a lost connection ("unexpected
// EOF").
func Probe(ctx context.Context, k KafkaConfig) error {
	var errs []error
	for _, addr := range k.Brokers {
		err := probe(ctx, k, addr)
		if err == nil {
			return nil
		}
		errs = append(errs, fmt.Errorf("broker %s: %w", addr, err))
		if ctx.Err() != nil {
			break
		}
	}
	return fmt.Errorf("kafka: no broker of %v answered: %w", k.Brokers, errors.Join(errs...))
}

func probe(ctx context.Context, k KafkaConfig, addr string) error {
	timeout := cmp.Or(k.Timeout, 10*time.Second)
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	conn, err := k.dialer().DialContext(ctx, "tcp", addr)
	if err != nil {
		return err
	}
	defer conn.Close()
	if err := conn.SetDeadline(time.Now().Add(timeout)); err != nil {
		return err
	}
	_, err = conn.Brokers()
	return err
}

// EnsureTopic creates topic when it does not exist and returns its number
// of partitions. An existing topic keeps its partition count.
func EnsureTopic(ctx context.Context, k KafkaConfig, topic string) (int, error) {
	c := k.client()
	defer closeTransport(c)
	if n, err := topicPartitions(ctx, c, topic); err == nil && n > 0 {
		return n, nil
	}
	parts, rf := k.Partitions, k.ReplicationFactor
	if parts <= 0 {
		parts = 1
	}
	if rf <= 0 {
		rf = 1
	}
	resp, err := c.CreateTopics(ctx, &kafka.CreateTopicsRequest{Topics: []kafka.TopicConfig{{
		Topic: topic, NumPartitions: parts, ReplicationFactor: rf,
	}}})
	if err != nil {
		return 0, fmt.Errorf("kafka: create topic %s on %v: %w", topic, k.Brokers, err)
	}
	if terr := resp.Errors[topic]; terr != nil && !errors.Is(terr, kafka.TopicAlreadyExists) {
		return 0, fmt.Errorf("kafka: create topic %s (%d partitions, replication factor %d): %w", topic, parts, rf, terr)
	}
	// A topic just created (here or by another replicator at the same
	// moment) can show no partitions, or none yet, in the metadata for a
	// while; 0 partitions would leave an applier with nothing to run, never
	// ready, and a producer dividing by zero.
	for wait := 50 * time.Millisecond; ; wait *= 2 {
		n, err := topicPartitions(ctx, c, topic)
		if err == nil && n > 0 {
			return n, nil
		}
		if wait > 2*time.Second {
			if err == nil {
				err = fmt.Errorf("kafka: topic %s has no partitions in the metadata of %v yet", topic, k.Brokers)
			}
			return 0, err
		}
		select {
		case <-ctx.Done():
			return 0, ctx.Err()
		case <-time.After(wait):
		}
	}
}

func topicPartitions(ctx context.Context, c *kafka.Client, topic string) (int, error) {
	md, err := c.Metadata(ctx, &kafka.MetadataRequest{Topics: []string{topic}})
	if err != nil {
		return 0, fmt.Errorf("kafka: metadata for %s: %w", topic, err)
	}
	for _, t := range md.Topics {
		if t.Name == topic {
			if t.Error != nil {
				return 0, fmt.Errorf("kafka: metadata for %s: %w", topic, t.Error)
			}
			return len(t.Partitions), nil
		}
	}
	return 0, fmt.Errorf("kafka: topic %s: %w", topic, errTopicNotFound)
}

var errTopicNotFound = errors.New("topic not found")

// EndOffsets returns, for every partition of topic, the offset the next
// record produced to it will get: a reader that starts there reads only
// what is produced from now on. A topic that does not exist yet has no
// partitions (an empty map): everything it will ever hold comes later.
func EndOffsets(ctx context.Context, k KafkaConfig, topic string) (map[int]int64, error) {
	return listOffsets(ctx, k, topic, false)
}

// FirstOffsets returns, for every partition of topic, the offset of the
// oldest record the brokers still hold (retention deletes older ones); in
// an empty partition it equals the end offset. A topic that does not exist
// yet has no partitions (an empty map).
func FirstOffsets(ctx context.Context, k KafkaConfig, topic string) (map[int]int64, error) {
	return listOffsets(ctx, k, topic, true)
}

// listOffsets is FirstOffsets (first) or EndOffsets.
func listOffsets(ctx context.Context, k KafkaConfig, topic string, first bool) (map[int]int64, error) {
	which, req := "end", kafka.LastOffsetOf
	if first {
		which, req = "first", kafka.FirstOffsetOf
	}
	c := k.client()
	defer closeTransport(c)
	n, err := topicPartitions(ctx, c, topic)
	if errors.Is(err, errTopicNotFound) || errors.Is(err, kafka.UnknownTopicOrPartition) {
		return map[int]int64{}, nil
	}
	if err != nil {
		return nil, err
	}
	reqs := make([]kafka.OffsetRequest, n)
	for p := range reqs {
		reqs[p] = req(p)
	}
	resp, err := c.ListOffsets(ctx, &kafka.ListOffsetsRequest{Topics: map[string][]kafka.OffsetRequest{topic: reqs}})
	if err != nil {
		return nil, fmt.Errorf("kafka: %s offsets of %s: %w", which, topic, err)
	}
	out := make(map[int]int64, n)
	for _, po := range resp.Topics[topic] {
		if po.Error != nil {
			return nil, fmt.Errorf("kafka: %s offset of %s/%d: %w", which, topic, po.Partition, po.Error)
		}
		if first {
			out[po.Partition] = po.FirstOffset
		} else {
			out[po.Partition] = po.LastOffset
		}
	}
	if len(out) != n {
		return nil, fmt.Errorf("kafka: %s offsets of %s: %d of %d partitions answered", which, topic, len(out), n)
	}
	return out, nil
}

func closeTransport(c *kafka.Client) {
	if t, ok := c.Transport.(*kafka.Transport); ok {
		t.CloseIdleConnections()
	}
}

// PartitionFor maps a message key to a partition exactly like kafka-go's
// Hash balancer (and Sarama's hash partitioner), so that other producers of
// the same topic agree.
func PartitionFor(key []byte, partitions int) int {
	h := fnv.New32a()
	h.Write(key)
	p := int32(h.Sum32()) % int32(partitions)
	if p < 0 {
		p = -p
	}
	return int(p)
}

// Message is one record to produce.
type Message struct {
	Key, Value []byte
}

// Producer sends records to one topic and waits for the brokers'
// acknowledgement (acks=all, or acks=1 with KafkaConfig.AcksOne). It uses
// kafka-go's Client.Produce directly rather than kafka.Writer: Writer holds
// a partial batch for BatchTimeout, which would add that delay to every
// quiet-period transaction.
type Producer struct {
	client     *kafka.Client
	topic      string
	partitions int
	acks       kafka.RequiredAcks
}

// NewProducer returns a producer for topic with the given partition count.
func NewProducer(k KafkaConfig, topic string, partitions int) *Producer {
	acks := kafka.RequireAll
	if k.AcksOne {
		acks = kafka.RequireOne
	}
	return &Producer{client: k.client(), topic: topic, partitions: partitions, acks: acks}
}

// Close releases idle connections.
func (p *Producer) Close() { closeTransport(p.client) }

// Partitions is the partition count the producer hashes keys over.
func (p *Producer) Partitions() int { return p.partitions }

// ProducePartition writes msgs, in order, to partition part (which the
// caller chose with PartitionFor) and returns once all were acknowledged.
func (p *Producer) ProducePartition(ctx context.Context, part int, msgs []Message) error {
	recs := make([]kafka.Record, len(msgs))
	for i, m := range msgs {
		recs[i] = kafka.Record{Key: kafka.NewBytes(m.Key), Value: kafka.NewBytes(m.Value)}
	}
	return p.produce(ctx, part, recs)
}

func (p *Producer) produce(ctx context.Context, part int, recs []kafka.Record) error {
	resp, err := p.client.Produce(ctx, &kafka.ProduceRequest{
		Topic:        p.topic,
		Partition:    part,
		RequiredAcks: p.acks,
		Records:      kafka.NewRecordReader(recs...),
	})
	if err == nil && resp.Error != nil {
		err = resp.Error
	}
	if err == nil && len(resp.RecordErrors) > 0 {
		for i, rerr := range resp.RecordErrors {
			err = fmt.Errorf("record %d: %w", i, rerr)
			break
		}
	}
	if err != nil {
		return fmt.Errorf("kafka: produce %d records to %s/%d: %w", len(recs), p.topic, part, err)
	}
	return nil
}
