package pipeline

import (
	"context"
	"fmt"
	"time"

	"github.com/segmentio/kafka-go"
)

// ScanPartition reads the records of topic/part at offsets [from, to), in
// order, and calls fn with each record's offset and value; an error from
// fn stops the scan and is returned. It is for operator commands that must
// look at what a topic holds (replicator seed --backup-gtid), not for the
// apply path, which streams (Applier).
func ScanPartition(ctx context.Context, k KafkaConfig, topic string, part int, from, to int64, fn func(offset int64, value []byte) error) error {
	if from >= to {
		return nil
	}
	r := kafka.NewReader(kafka.ReaderConfig{
		Brokers:   k.Brokers,
		Dialer:    k.dialer(),
		Topic:     topic,
		Partition: part,
		MinBytes:  1,
		MaxBytes:  16 << 20,
		MaxWait:   250 * time.Millisecond,
	})
	defer r.Close()
	if err := r.SetOffset(from); err != nil {
		return fmt.Errorf("kafka: seek %s/%d to offset %d: %w", topic, part, from, err)
	}
	for {
		m, err := r.FetchMessage(ctx)
		if err != nil {
			return fmt.Errorf("kafka: read %s/%d at offset %d or later: %w", topic, part, from, err)
		}
		if m.Offset >= to {
			return nil
		}
		if err := fn(m.Offset, m.Value); err != nil {
			return err
		}
		if m.Offset == to-1 {
			return nil
		}
	}
}
