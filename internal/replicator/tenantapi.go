package replicator

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"slices"
	"strconv"

	"go.uber.org/zap"

	"github.com/tandemdb/tandem/pkg/admin"
	"github.com/tandemdb/tandem/pkg/event"
	"github.com/tandemdb/tandem/pkg/tenant"
)

// registerTenantAdmin adds the tenant endpoints (admin.Server authenticates
// every one):
//
//	GET  /v1/tenants                          registry status, every tenant with an entry or a queue
//	GET  /v1/tenants/{id}                     one tenant (defaults when it has no entry) and its queues
//	PUT  /v1/tenants/{id}                     set mode/limits: JSON {mode, home_site, rate_limit, priority, conflict_policy}; omitted fields keep their value
//	DELETE /v1/tenants/{id}                   drop the entry (back to the defaults)
//	GET  /v1/tenants/{id}/dlq                 dead-lettered and waiting messages, per origin
//	POST /v1/tenants/{id}/dlq/retry[?origin=] replay the dead-lettered head again (after fixing the target)
//	POST /v1/tenants/{id}/dlq/skip[?origin=]  drop the dead-lettered head for good (returned in the answer)
func (r *Replicator) registerTenantAdmin(s *admin.Server) {
	s.Handle("GET /v1/tenants", http.HandlerFunc(r.tenantList))
	s.Handle("GET /v1/tenants/{id}", http.HandlerFunc(r.tenantGet))
	s.Handle("PUT /v1/tenants/{id}", http.HandlerFunc(r.tenantPut))
	s.Handle("DELETE /v1/tenants/{id}", http.HandlerFunc(r.tenantDelete))
	s.Handle("GET /v1/tenants/{id}/dlq", http.HandlerFunc(r.tenantDLQ))
	s.Handle("POST /v1/tenants/{id}/dlq/retry", r.tenantDLQAction(true))
	s.Handle("POST /v1/tenants/{id}/dlq/skip", r.tenantDLQAction(false))
}

// tenantView is a tenant as the API shows it.
type tenantView struct {
	tenant.Tenant
	// Configured is false for a tenant running on the defaults.
	Configured bool `json:"configured"`
	// Queues are its durable queues, by origin site.
	Queues map[string]tenant.Stat `json:"queues,omitempty"`
}

func (r *Replicator) tenantsOff(w http.ResponseWriter) bool {
	if r.tenants != nil {
		return false
	}
	writeJSON(w, http.StatusServiceUnavailable, map[string]any{
		"error":   "tenants are not enabled on this replicator",
		"allowed": "set tenants.redis.addr in the config (docs/tenants.md)",
	})
	return true
}

func (r *Replicator) tenantQueues(id string) map[string]tenant.Stat {
	out := map[string]tenant.Stat{}
	for i, a := range r.applier {
		if q := a.Queues(); q != nil {
			if st, ok := q.Stats()[id]; ok {
				out[r.cfg.Peers[i].Name] = st
			}
		}
	}
	return out
}

func (r *Replicator) view(snap *tenant.Snapshot, id string) tenantView {
	return tenantView{Tenant: snap.Get(id), Configured: snap.Has(id), Queues: r.tenantQueues(id)}
}

func (r *Replicator) tenantList(w http.ResponseWriter, _ *http.Request) {
	if r.tenantsOff(w) {
		return
	}
	snap := r.tenants.registry.Snapshot()
	ids := map[string]bool{}
	for _, t := range snap.List() {
		ids[t.ID] = true
	}
	for _, a := range r.applier {
		if q := a.Queues(); q != nil {
			for id := range q.Stats() {
				ids[id] = true
			}
		}
	}
	sorted := make([]string, 0, len(ids))
	for id := range ids {
		sorted = append(sorted, id)
	}
	slices.Sort(sorted)
	out := make([]tenantView, len(sorted))
	for i, id := range sorted {
		out[i] = r.view(snap, id)
	}
	writeJSON(w, http.StatusOK, map[string]any{"registry": r.tenants.registry.Status(), "tenants": out})
}

func (r *Replicator) tenantGet(w http.ResponseWriter, req *http.Request) {
	if r.tenantsOff(w) {
		return
	}
	writeJSON(w, http.StatusOK, r.view(r.tenants.registry.Snapshot(), req.PathValue("id")))
}

// tenantPatch is the body of PUT /v1/tenants/{id}; omitted fields keep
// their current value.
type tenantPatch struct {
	Mode           *string  `json:"mode"`
	HomeSite       *int     `json:"home_site"`
	RateLimit      *float64 `json:"rate_limit"`
	Priority       *int     `json:"priority"`
	ConflictPolicy *string  `json:"conflict_policy"`
}

const tenantBodyAllowed = `a JSON object with any of "mode" (active-active, home-only, paused, excluded), "home_site" (1..255), "rate_limit" (rows/s, 0 = unlimited), "priority" (integer), "conflict_policy" (lww, home-wins)`

func badRequest(w http.ResponseWriter, msg string) {
	writeJSON(w, http.StatusBadRequest, map[string]any{"error": msg, "allowed": tenantBodyAllowed})
}

func (r *Replicator) tenantPut(w http.ResponseWriter, req *http.Request) {
	if r.tenantsOff(w) {
		return
	}
	id := req.PathValue("id")
	if err := tenant.CheckID(id); err != nil {
		badRequest(w, err.Error())
		return
	}
	dec := json.NewDecoder(io.LimitReader(req.Body, 64<<10))
	dec.DisallowUnknownFields()
	var p tenantPatch
	if err := dec.Decode(&p); err != nil {
		badRequest(w, "body: "+err.Error())
		return
	}
	t := r.tenants.registry.Snapshot().Get(id)
	if p.Mode != nil {
		m, err := tenant.ParseMode(*p.Mode)
		if err != nil {
			badRequest(w, err.Error())
			return
		}
		t.Mode = m
	}
	if p.HomeSite != nil {
		if *p.HomeSite < 0 || *p.HomeSite > 255 {
			badRequest(w, fmt.Sprintf("home_site %d is out of range; allowed 1..255 (0 = none)", *p.HomeSite))
			return
		}
		t.HomeSite = uint8(*p.HomeSite)
	}
	if p.RateLimit != nil {
		t.RateLimit = *p.RateLimit
	}
	if p.Priority != nil {
		t.Priority = *p.Priority
	}
	if p.ConflictPolicy != nil {
		t.ConflictPolicy = *p.ConflictPolicy
	}
	if err := t.Validate(); err != nil {
		badRequest(w, err.Error())
		return
	}
	v, err := r.tenants.registry.Put(req.Context(), t)
	if err != nil {
		writeJSON(w, http.StatusServiceUnavailable, map[string]any{"error": err.Error(), "allowed": "retry once the tenant registry's Redis is reachable"})
		return
	}
	r.log.Info("tenant updated", zap.String("tenant", id), zap.String("mode", string(t.Mode)),
		zap.Float64("rate_limit", t.RateLimit), zap.Uint8("home_site", t.HomeSite), zap.Uint64("version", v))
	writeJSON(w, http.StatusOK, map[string]any{"version": v, "tenant": r.view(r.tenants.registry.Snapshot(), id)})
}

func (r *Replicator) tenantDelete(w http.ResponseWriter, req *http.Request) {
	if r.tenantsOff(w) {
		return
	}
	id := req.PathValue("id")
	v, err := r.tenants.registry.Delete(req.Context(), id)
	if err != nil {
		writeJSON(w, http.StatusServiceUnavailable, map[string]any{"error": err.Error(), "allowed": "retry once the tenant registry's Redis is reachable"})
		return
	}
	writeJSON(w, http.StatusOK, map[string]any{"version": v, "tenant": r.view(r.tenants.registry.Snapshot(), id)})
}

// dlqEntry is a queued message as the API shows it (payload summarised).
type dlqEntry struct {
	Seq          uint64 `json:"seq"`
	Partition    int    `json:"partition"`
	Offset       int64  `json:"offset"`
	Cause        string `json:"cause"`
	Dead         bool   `json:"dead"`
	Reason       string `json:"reason,omitempty"`
	Error        string `json:"error,omitempty"`
	Attempts     int    `json:"attempts,omitempty"`
	Queued       string `json:"queued"`
	GTID         string `json:"gtid,omitempty"`
	Rows         int    `json:"rows"`
	PayloadBytes int    `json:"payload_bytes"`
}

func toDLQEntry(e tenant.Entry) dlqEntry {
	d := dlqEntry{Seq: e.Seq, Partition: e.Partition, Offset: e.Offset, Cause: e.Cause, Dead: e.Dead, Reason: e.Reason,
		Error: e.Err, Attempts: e.Attempts, Queued: e.Queued.UTC().Format("2006-01-02T15:04:05.000Z"), PayloadBytes: len(e.Payload)}
	if t, err := event.Decode(e.Payload); err == nil {
		d.GTID, d.Rows = t.GTID, len(t.Changes)
	}
	return d
}

func (r *Replicator) tenantDLQ(w http.ResponseWriter, req *http.Request) {
	if r.tenantsOff(w) {
		return
	}
	id := req.PathValue("id")
	limit := 100
	if s := req.URL.Query().Get("limit"); s != "" {
		n, err := strconv.Atoi(s)
		if err != nil || n < 1 || n > 10000 {
			writeJSON(w, http.StatusBadRequest, map[string]any{"error": "limit " + strconv.Quote(s), "allowed": "1..10000"})
			return
		}
		limit = n
	}
	type origin struct {
		Origin  string     `json:"origin"`
		Depth   int        `json:"depth"`
		Dead    int        `json:"dead"`
		Entries []dlqEntry `json:"entries"`
	}
	var out []origin
	for i, a := range r.applier {
		q := a.Queues()
		if q == nil {
			continue
		}
		st := q.Stats()[id]
		o := origin{Origin: r.cfg.Peers[i].Name, Depth: st.Depth, Dead: st.Dead, Entries: []dlqEntry{}}
		es, err := q.Head(id, limit, 1<<62)
		if err != nil {
			writeJSON(w, http.StatusInternalServerError, map[string]any{"error": err.Error()})
			return
		}
		for _, e := range es {
			o.Entries = append(o.Entries, toDLQEntry(e))
		}
		out = append(out, o)
	}
	writeJSON(w, http.StatusOK, map[string]any{"tenant": id, "origins": out})
}

func (r *Replicator) tenantDLQAction(retry bool) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		if r.tenantsOff(w) {
			return
		}
		id := req.PathValue("id")
		only := req.URL.Query().Get("origin")
		type done struct {
			Origin string   `json:"origin"`
			Entry  dlqEntry `json:"entry"`
			// Payload is the skipped message itself, so that nothing is
			// lost without a trace.
			Payload []byte `json:"payload,omitempty"`
		}
		var acted []done
		for i, a := range r.applier {
			name := r.cfg.Peers[i].Name
			q := a.Queues()
			if q == nil || only != "" && name != only {
				continue
			}
			var e tenant.Entry
			var err error
			if retry {
				e, err = q.Retry(id)
			} else {
				e, err = q.Skip(id)
			}
			if errors.Is(err, tenant.ErrNoDeadLetter) {
				continue
			}
			if err != nil {
				writeJSON(w, http.StatusInternalServerError, map[string]any{"error": err.Error()})
				return
			}
			d := done{Origin: name, Entry: toDLQEntry(e)}
			if !retry {
				d.Payload = e.Payload
				r.log.Warn("dead-lettered message skipped by the operator", zap.String("tenant", id), zap.String("origin", name),
					zap.Int("partition", e.Partition), zap.Int64("offset", e.Offset), zap.String("reason", e.Reason), zap.String("error", e.Err))
			} else {
				r.log.Info("dead-lettered message retried by the operator", zap.String("tenant", id), zap.String("origin", name),
					zap.Int("partition", e.Partition), zap.Int64("offset", e.Offset))
			}
			a.Kick()
			acted = append(acted, d)
		}
		if len(acted) == 0 {
			writeJSON(w, http.StatusNotFound, map[string]any{"error": fmt.Sprintf("tenant %q has no dead-lettered message%s", id, originSuffix(only)),
				"allowed": "GET /v1/tenants/{id}/dlq lists them"})
			return
		}
		key := "skipped"
		if retry {
			key = "retried"
		}
		writeJSON(w, http.StatusOK, map[string]any{"tenant": id, key: acted})
	})
}

func originSuffix(o string) string {
	if o == "" {
		return ""
	}
	return " from origin " + o
}
