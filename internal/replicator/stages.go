package replicator

import (
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/tandemdb/tandem/pkg/metrics"
	"github.com/tandemdb/tandem/pkg/pipeline"
)

// stageMetrics is tandem_stage_seconds{origin,stage,size}: the time from a
// transaction's source commit to each pipeline stage (pipeline.StageFunc).
// Heartbeat lag says how far behind a direction is; the stages say where
// the time goes (reader, Kafka round, fetch, apply), which is what an
// operator needs to act on lag. size tells small transactions (fewer than
// bulkRows row changes, the OLTP traffic whose lag matters) from bulk
// ones, so a bulk load's own long stages do not hide how long the small
// ones waited behind it. One observation per transaction and stage, with
// no tenant label, so it stays cheap at any tenant count.
type stageMetrics struct {
	h *prometheus.HistogramVec
}

func newStageMetrics(reg prometheus.Registerer) *stageMetrics {
	m := &stageMetrics{h: prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name: "tandem_stage_seconds",
		Help: "Time from a transaction's source commit (its greatest row version) until it was read by the origin's reader (stage=read), " +
			"acknowledged by Kafka (acked), taken into an apply batch here (fetched; after the batch before it committed) and committed here (applied), by origin site and size " +
			"(small: fewer than 100 row changes; bulk: more).",
		Buckets: metrics.LagBuckets,
	}, []string{"origin", "stage", "size"})}
	if reg != nil {
		reg.MustRegister(m.h)
	}
	return m
}

// forOrigin returns the StageFunc of one origin, with its label values
// resolved once rather than per observation.
func (m *stageMetrics) forOrigin(origin string) pipeline.StageFunc {
	obs := map[string][2]prometheus.Observer{}
	for _, st := range []string{"read", "acked", "fetched", "applied"} {
		obs[st] = [2]prometheus.Observer{m.h.WithLabelValues(origin, st, "small"), m.h.WithLabelValues(origin, st, "bulk")}
	}
	return func(stage string, rows int, d time.Duration) {
		if o, ok := obs[stage]; ok {
			size := 0
			if rows >= bulkRows {
				size = 1
			}
			o[size].Observe(max(d, 0).Seconds())
		}
	}
}

// bulkRows is where the size label of tandem_stage_seconds turns from
// "small" to "bulk".
const bulkRows = 100
