package main

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/segmentio/kafka-go"
)

// BenchmarkProduce1KB measures kafka-go writers pushing 1 KiB records with
// acks=all into a 3-partition topic, with the log in memory and with the
// journal (one fsync per group of produce requests):
//
//	go test ./cmd/devbroker -run '^$' -bench Produce1KB -benchtime 200000x
func BenchmarkProduce1KB(b *testing.B) {
	for _, mode := range []string{"memory", "journal"} {
		b.Run(mode, func(b *testing.B) {
			args := []string{"-topics", "bench:3"}
			if mode == "journal" {
				args = append(args, "-data-dir", b.TempDir())
			}
			addr, stop := runInProcess(b, args...)
			defer stop()
			benchProduce(b, addr)
		})
	}
}

func benchProduce(b *testing.B, addr string) {
	const (
		writers = 4    // concurrent WriteMessages calls, as a sink with several workers
		chunk   = 1000 // messages per WriteMessages call
	)
	tr := &kafka.Transport{}
	defer tr.CloseIdleConnections()
	w := &kafka.Writer{
		Addr:         kafka.TCP(addr),
		Topic:        "bench",
		Balancer:     &kafka.RoundRobin{},
		RequiredAcks: kafka.RequireAll,
		BatchSize:    chunk,
		BatchBytes:   4 << 20,
		BatchTimeout: 5 * time.Millisecond,
		Transport:    tr,
	}
	defer w.Close()
	value := make([]byte, 1024)
	msgs := make([]kafka.Message, chunk)
	for i := range msgs {
		msgs[i] = kafka.Message{Key: fmt.Appendf(nil, "k%d", i), Value: value}
	}
	ctx := context.Background()
	work := make(chan int)
	var wg sync.WaitGroup
	errs := make(chan error, writers)
	b.SetBytes(1024)
	b.ResetTimer()
	start := time.Now()
	for range writers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for n := range work {
				if err := w.WriteMessages(ctx, msgs[:n]...); err != nil {
					errs <- err
					for range work { // let the feeder finish
					}
					return
				}
			}
		}()
	}
	for left := b.N; left > 0; left -= chunk {
		work <- min(left, chunk)
	}
	close(work)
	wg.Wait()
	b.StopTimer()
	close(errs)
	for err := range errs {
		b.Fatal(err)
	}
	b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "records/s")
}
