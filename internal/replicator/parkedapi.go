package replicator

import (
	"context"
	"database/sql"
	"errors"
	"net/http"
	"slices"
	"strconv"

	"go.uber.org/zap"

	"github.com/tandemdb/tandem/pkg/admin"
	"github.com/tandemdb/tandem/pkg/pipeline"
	"github.com/tandemdb/tandem/pkg/schema"
)

// registerParkedAdmin adds the endpoints for messages parked in
// _tandem_parked (without the tenant registry, where a message that
// cannot be applied is parked there and the partition moves on):
//
//	GET  /v1/parked[?status=parked|retried|skipped|all]  list them, oldest first (no payloads)
//	POST /v1/parked/retry[?origin=peer]                  apply them again, oldest first; stop at one that still fails
//	POST /v1/parked/{id}/skip                            give up on one (it stays listed, as skipped)
//
// Retrying is what the operator does after fixing the cause (typically a
// column or table missing at this site after a schema change that reached
// another site first): pipeline.Applier.ReplayParked applies each message
// exactly once, by compare-and-set, so changes the rows received since
// with greater versions stay.
func (r *Replicator) registerParkedAdmin(s *admin.Server) {
	s.Handle("GET /v1/parked", http.HandlerFunc(r.parkedList))
	s.Handle("POST /v1/parked/retry", http.HandlerFunc(r.parkedRetry))
	s.Handle("POST /v1/parked/{id}/skip", http.HandlerFunc(r.parkedSkip))
}

// parkedMessage is a _tandem_parked row as the API shows it.
type parkedMessage struct {
	ID        int64  `json:"id"`
	At        string `json:"at"` // UTC, as the server stored it
	Topic     string `json:"topic"`
	Partition int    `json:"partition"`
	Offset    int64  `json:"offset"`
	Tenant    string `json:"tenant,omitempty"`
	Reason    string `json:"reason"`
	Error     string `json:"error"`
	Status    string `json:"status"`
}

// parkedStatuses are the values of _tandem_parked.status.
var parkedStatuses = []string{"parked", "retried", "skipped"}

// parkedListLimit bounds one listing.
const parkedListLimit = 1000

func (r *Replicator) parkedTable() string {
	return schema.TableRef{Schema: r.cfg.Schema.MetaSchema, Table: schema.Parked}.Quoted()
}

func (r *Replicator) parkedList(w http.ResponseWriter, req *http.Request) {
	status := req.URL.Query().Get("status")
	where, args := " WHERE status = ?", []any{"parked"}
	switch {
	case status == "all":
		where, args = "", nil
	case status != "":
		if !slices.Contains(parkedStatuses, status) {
			writeJSON(w, http.StatusBadRequest, map[string]any{"error": "status " + strconv.Quote(status) + " is not known",
				"allowed": append(append([]string{}, parkedStatuses...), "all")})
			return
		}
		args = []any{status}
	}
	rows, err := r.db.QueryContext(req.Context(), "SELECT id, at, COALESCE(topic, ''), COALESCE(part, -1), COALESCE(msg_offset, -1), "+
		"COALESCE(tenant, ''), COALESCE(reason, ''), COALESCE(error, ''), status FROM "+r.parkedTable()+where+
		" ORDER BY id LIMIT "+strconv.Itoa(parkedListLimit), args...)
	if err != nil {
		writeJSON(w, http.StatusServiceUnavailable, map[string]any{"error": "read " + r.parkedTable() + ": " + err.Error()})
		return
	}
	defer rows.Close()
	out := []parkedMessage{}
	for rows.Next() {
		var m parkedMessage
		if err := rows.Scan(&m.ID, &m.At, &m.Topic, &m.Partition, &m.Offset, &m.Tenant, &m.Reason, &m.Error, &m.Status); err != nil {
			writeJSON(w, http.StatusServiceUnavailable, map[string]any{"error": err.Error()})
			return
		}
		out = append(out, m)
	}
	if err := rows.Err(); err != nil {
		writeJSON(w, http.StatusServiceUnavailable, map[string]any{"error": err.Error()})
		return
	}
	writeJSON(w, http.StatusOK, map[string]any{"parked": out, "limit": parkedListLimit})
}

func (r *Replicator) parkedRetry(w http.ResponseWriter, req *http.Request) {
	if r.tenants != nil {
		writeJSON(w, http.StatusConflict, map[string]any{
			"error":   "with the tenant registry, messages that cannot be applied wait in their tenant's dead-letter queue",
			"allowed": "POST /v1/tenants/{id}/dlq/retry (docs/tenants.md)",
		})
		return
	}
	appliers, ok := r.appliersFor(w, req.URL.Query().Get("origin"))
	if !ok {
		return
	}
	r.parkedMu.Lock()
	defer r.parkedMu.Unlock()
	ctx := req.Context()
	retried := []int64{}
	for _, a := range appliers {
		n, err := r.retryParkedOf(ctx, a, &retried)
		if err != nil {
			code := http.StatusConflict
			if errors.Is(err, errParkedStore) {
				code = http.StatusServiceUnavailable
			}
			body := map[string]any{"retried": retried, "error": err.Error()}
			if n > 0 {
				body["failed"] = n
				if errors.Is(err, pipeline.ErrNotReplayable) {
					body["allowed"] = "POST /v1/parked/" + strconv.FormatInt(n, 10) + "/skip"
				}
			}
			writeJSON(w, code, body)
			return
		}
	}
	writeJSON(w, http.StatusOK, map[string]any{"retried": retried})
}

// errParkedStore marks a failure to read or write _tandem_parked itself.
var errParkedStore = errors.New("parked messages")

// retryParkedOf replays a's parked messages, oldest first, appending the
// ids done to retried; it returns the id of the one that failed, if any.
func (r *Replicator) retryParkedOf(ctx context.Context, a *pipeline.Applier, retried *[]int64) (failed int64, err error) {
	rows, err := r.db.QueryContext(ctx, "SELECT id FROM "+r.parkedTable()+" WHERE status = 'parked' AND topic = ? ORDER BY id", a.Topic())
	if err != nil {
		return 0, errors.Join(errParkedStore, err)
	}
	var ids []int64
	for rows.Next() {
		var id int64
		if err := rows.Scan(&id); err != nil {
			rows.Close()
			return 0, errors.Join(errParkedStore, err)
		}
		ids = append(ids, id)
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return 0, errors.Join(errParkedStore, err)
	}
	for _, id := range ids {
		var payload []byte
		err := r.db.QueryRowContext(ctx, "SELECT payload FROM "+r.parkedTable()+" WHERE id = ? AND status = 'parked'", id).Scan(&payload)
		if errors.Is(err, sql.ErrNoRows) {
			continue // skipped meanwhile
		}
		if err != nil {
			return 0, errors.Join(errParkedStore, err)
		}
		if _, err := a.ReplayParked(ctx, id, payload); err != nil {
			// Kept as parked, with the latest error.
			r.db.ExecContext(ctx, "UPDATE "+r.parkedTable()+" SET error = ? WHERE id = ?", err.Error(), id) //nolint:errcheck // the answer carries the error
			return id, err
		}
		// Applied (or found applied by an earlier retry cut off here).
		if _, err := r.db.ExecContext(ctx, "UPDATE "+r.parkedTable()+" SET status = 'retried' WHERE id = ?", id); err != nil {
			return 0, errors.Join(errParkedStore, err)
		}
		*retried = append(*retried, id)
	}
	return 0, nil
}

func (r *Replicator) parkedSkip(w http.ResponseWriter, req *http.Request) {
	id, err := strconv.ParseInt(req.PathValue("id"), 10, 64)
	if err != nil || id <= 0 {
		writeJSON(w, http.StatusBadRequest, map[string]any{"error": "id " + strconv.Quote(req.PathValue("id")) + " is not a parked message id", "allowed": "a positive integer from GET /v1/parked"})
		return
	}
	r.parkedMu.Lock()
	defer r.parkedMu.Unlock()
	res, err := r.db.ExecContext(req.Context(), "UPDATE "+r.parkedTable()+" SET status = 'skipped' WHERE id = ? AND status = 'parked'", id)
	if err != nil {
		writeJSON(w, http.StatusServiceUnavailable, map[string]any{"error": err.Error()})
		return
	}
	if n, _ := res.RowsAffected(); n == 0 {
		writeJSON(w, http.StatusNotFound, map[string]any{"error": "no parked message with id " + strconv.FormatInt(id, 10), "allowed": "GET /v1/parked lists them"})
		return
	}
	r.log.Warn("parked message skipped by the operator; the rows it carried may differ between the sites (verifier check)", zap.Int64("id", id))
	writeJSON(w, http.StatusOK, map[string]any{"skipped": id})
}
