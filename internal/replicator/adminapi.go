package replicator

import (
	"encoding/json"
	"net/http"

	"github.com/tandemdb/tandem/pkg/admin"
	"github.com/tandemdb/tandem/pkg/pipeline"
)

// registerAdmin adds the replicator's operator endpoints; admin.Server
// authenticates every one of them.
//
//	GET  /v1/status                      checkpoint, appliers and whether they are paused
//	POST /v1/appliers/pause[?origin=b]   stop applying (all peers, or one)
//	POST /v1/appliers/resume[?origin=b]  resume
//	/v1/parked…                          messages parked without the tenant registry (parkedapi.go)
func (r *Replicator) registerAdmin(s *admin.Server) {
	s.Handle("GET /v1/status", http.HandlerFunc(r.status))
	s.Handle("POST /v1/appliers/pause", r.setPaused(true))
	s.Handle("POST /v1/appliers/resume", r.setPaused(false))
	r.registerTenantAdmin(s) // tenantapi.go
	r.registerParkedAdmin(s) // parkedapi.go
}

type applierStatus struct {
	Origin string `json:"origin"`
	Topic  string `json:"topic"`
	Paused bool   `json:"paused"`
	Ready  bool   `json:"ready"`
}

func (r *Replicator) appliersJSON() []applierStatus {
	out := make([]applierStatus, len(r.applier))
	for i, a := range r.applier {
		out[i] = applierStatus{Origin: r.cfg.Peers[i].Name, Topic: a.Topic(), Paused: a.Paused(), Ready: a.Ready()}
	}
	return out
}

func (r *Replicator) status(w http.ResponseWriter, _ *http.Request) {
	st := r.source.Stats()
	writeJSON(w, http.StatusOK, map[string]any{
		"site":       r.cfg.Site.Name,
		"site_id":    r.cfg.Site.ID,
		"topic":      r.cfg.LocalTopic(),
		"checkpoint": st.Checkpoint(),
		"published":  st.MessagesPublished.Load(),
		"appliers":   r.appliersJSON(),
	})
}

func (r *Replicator) setPaused(paused bool) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		appliers, ok := r.appliersFor(w, req.URL.Query().Get("origin"))
		if !ok {
			return
		}
		for _, a := range appliers {
			if paused {
				a.Pause()
			} else {
				a.Resume()
			}
		}
		writeJSON(w, http.StatusOK, map[string]any{"appliers": r.appliersJSON()})
	})
}

// appliersFor returns the applier of peer origin, or every applier for
// "". For an origin that is no peer it answers 404, naming the peers, and
// returns false.
func (r *Replicator) appliersFor(w http.ResponseWriter, origin string) ([]*pipeline.Applier, bool) {
	if origin == "" {
		return r.applier, true
	}
	names := make([]string, len(r.cfg.Peers))
	for i, p := range r.cfg.Peers {
		if p.Name == origin {
			return r.applier[i : i+1], true
		}
		names[i] = p.Name
	}
	writeJSON(w, http.StatusNotFound, map[string]any{"error": "no applier for origin " + origin, "allowed": names})
	return nil, false
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	json.NewEncoder(w).Encode(v) //nolint:errchkjson // the client went away
}
