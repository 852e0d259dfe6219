// Package lease is the site-level leader lease of Tandem's high
// availability (DESIGN.md §5): several replicators of one site run, the one
// holding the lease in Redis replicates, the others wait. Each acquisition
// gets a fencing epoch, greater than every earlier one, which the sinks
// check against _tandem_offsets in every apply transaction, so a leader
// that was paused past its lease can never write after the next one took
// over.
//
// The lease is a Redis key holding "holder/epoch" with a time to live; the
// leader renews it well before it expires and stops replicating once it can
// no longer be sure it holds it. Every write of shared state (the reader's
// checkpoint) goes through a script that checks the key first, so a former
// leader's write is refused.
package lease

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"
)

// ErrLost is returned when the lease is held by another replicator (or by
// nobody) although this one believed it held it.
var ErrLost = errors.New("lease: lost: another replicator holds the site's lease, or it expired")

// Config names the lease.
type Config struct {
	Client redis.UniversalClient
	// Prefix namespaces the keys (as tenants.redis.key_prefix does).
	Prefix string
	// Site is the site's name: one lease per site.
	Site string
	// Holder identifies this replicator in the lease (host name and pid,
	// say); it shows in logs and in Holder.
	Holder string
	// TTL is how long the lease lives without renewal.
	TTL time.Duration
}

// Lease is one replicator's handle on its site's lease.
type Lease struct {
	cfg                     Config
	key, epochKey, stateKey string
	mu                      sync.Mutex
	epoch                   uint64
	value                   string // "holder/epoch" while held
	acquire, renew, release *redis.Script
	saveState               *redis.Script
}

// keys are the Redis keys of a site's lease, its epoch counter and its
// shared state.
type keys struct{ lease, epoch, state string }

func keysOf(prefix, site string) keys {
	base := prefix + "ha/" + site
	return keys{lease: base + "/lease", epoch: base + "/epoch", state: base + "/state"}
}

// New returns a handle; nothing is acquired yet.
func New(cfg Config) (*Lease, error) {
	if cfg.Client == nil || cfg.Site == "" || cfg.Holder == "" || cfg.TTL <= 0 {
		return nil, errors.New("lease: Client, Site, Holder and a positive TTL are required")
	}
	k := keysOf(cfg.Prefix, cfg.Site)
	return &Lease{
		cfg: cfg, key: k.lease, epochKey: k.epoch, stateKey: k.state,
		acquire:   redis.NewScript(acquireLua),
		renew:     redis.NewScript(renewLua),
		release:   redis.NewScript(releaseLua),
		saveState: redis.NewScript(saveStateLua),
	}, nil
}

// acquireLua takes the lease when nobody holds it. The epoch is one above
// the last one handed out and above ARGV[3] (the highest epoch the caller
// found in its database, so that a Redis that lost its data cannot hand out
// an epoch the sinks would refuse). Returns the epoch, or the current
// holder's value when the lease is taken.
const acquireLua = `
local cur = redis.call('GET', KEYS[1])
if cur then return {0, cur} end
local e = redis.call('INCR', KEYS[2])
local floor = tonumber(ARGV[3])
if e <= floor then
  e = floor + 1
  redis.call('SET', KEYS[2], e)
end
local v = ARGV[1] .. '/' .. e
redis.call('SET', KEYS[1], v, 'PX', ARGV[2])
return {e, v}
`

const renewLua = `
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return 0
`

const releaseLua = `
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
`

const saveStateLua = `
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('HSET', KEYS[2], ARGV[2], ARGV[3])
  return 1
end
return 0
`

// TryAcquire takes the lease if nobody holds it. It returns whether it did
// and, if not, who holds it. floor is the highest fencing epoch the caller
// has seen (its _tandem_offsets); the new epoch is above it.
func (l *Lease) TryAcquire(ctx context.Context, floor uint64) (ok bool, holder string, err error) {
	res, err := l.acquire.Run(ctx, l.cfg.Client, []string{l.key, l.epochKey},
		l.cfg.Holder, l.cfg.TTL.Milliseconds(), floor).Slice()
	if err != nil {
		return false, "", fmt.Errorf("lease: acquire %s: %w", l.key, err)
	}
	if len(res) != 2 {
		return false, "", fmt.Errorf("lease: acquire %s: unexpected answer %v", l.key, res)
	}
	e, _ := res[0].(int64)
	v, _ := res[1].(string)
	if e == 0 {
		return false, v, nil
	}
	l.mu.Lock()
	l.epoch, l.value = uint64(e), v
	l.mu.Unlock()
	return true, v, nil
}

// Epoch is the fencing epoch of the current (or last) acquisition; 0
// before the first.
func (l *Lease) Epoch() uint64 {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.epoch
}

func (l *Lease) held() (string, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.value == "" {
		return "", ErrLost
	}
	return l.value, nil
}

// Renew extends the lease by its TTL. It returns ErrLost when another
// replicator holds it, and a Redis error as such (the caller decides how
// long it can go on without a renewal: less than the TTL).
func (l *Lease) Renew(ctx context.Context) error {
	v, err := l.held()
	if err != nil {
		return err
	}
	n, err := l.renew.Run(ctx, l.cfg.Client, []string{l.key}, v, l.cfg.TTL.Milliseconds()).Int()
	if err != nil {
		return fmt.Errorf("lease: renew %s: %w", l.key, err)
	}
	if n != 1 {
		l.drop()
		return ErrLost
	}
	return nil
}

func (l *Lease) drop() {
	l.mu.Lock()
	l.value = ""
	l.mu.Unlock()
}

// Release gives the lease up at once (a clean shutdown), so that a standby
// takes over without waiting for the TTL.
func (l *Lease) Release(ctx context.Context) error {
	v, err := l.held()
	if err != nil {
		return nil
	}
	l.drop()
	if err := l.release.Run(ctx, l.cfg.Client, []string{l.key}, v).Err(); err != nil {
		return fmt.Errorf("lease: release %s: %w", l.key, err)
	}
	return nil
}

// SaveState stores field = value in the site's shared state, only while
// this replicator holds the lease (ErrLost otherwise).
func (l *Lease) SaveState(ctx context.Context, field, value string) error {
	v, err := l.held()
	if err != nil {
		return err
	}
	n, err := l.saveState.Run(ctx, l.cfg.Client, []string{l.key, l.stateKey}, v, field, value).Int()
	if err != nil {
		return fmt.Errorf("lease: save %s of %s: %w", field, l.stateKey, err)
	}
	if n != 1 {
		l.drop()
		return ErrLost
	}
	return nil
}

// LoadState reads a field of the site's shared state.
func (l *Lease) LoadState(ctx context.Context, field string) (string, bool, error) {
	return loadState(ctx, l.cfg.Client, l.stateKey, field)
}

func loadState(ctx context.Context, c redis.UniversalClient, key, field string) (string, bool, error) {
	v, err := c.HGet(ctx, key, field).Result()
	if errors.Is(err, redis.Nil) {
		return "", false, nil
	}
	if err != nil {
		return "", false, fmt.Errorf("lease: load %s of %s: %w", field, key, err)
	}
	return v, true, nil
}

// Holder returns who holds the site's lease now ("" when nobody) and the
// epoch of that holding.
func Holder(ctx context.Context, c redis.UniversalClient, prefix, site string) (string, uint64, error) {
	v, err := c.Get(ctx, keysOf(prefix, site).lease).Result()
	if errors.Is(err, redis.Nil) {
		return "", 0, nil
	}
	if err != nil {
		return "", 0, err
	}
	i := strings.LastIndexByte(v, '/')
	e, perr := strconv.ParseUint(v[i+1:], 10, 64)
	if i < 0 || perr != nil {
		return "", 0, fmt.Errorf("lease: %q is not holder/epoch", v)
	}
	return v[:i], e, nil
}

// ForceState sets field of site's shared state to value ("" deletes it)
// whoever holds the lease: for operators' commands run while the site's
// replicators are stopped (`replicator checkpoint reset`).
func ForceState(ctx context.Context, c redis.UniversalClient, prefix, site, field, value string) error {
	key := keysOf(prefix, site).state
	var err error
	if value == "" {
		err = c.HDel(ctx, key, field).Err()
	} else {
		err = c.HSet(ctx, key, field, value).Err()
	}
	if err != nil {
		return fmt.Errorf("lease: set %s of %s: %w", field, key, err)
	}
	return nil
}

// LoadState reads field of site's shared state without a handle.
func LoadState(ctx context.Context, c redis.UniversalClient, prefix, site, field string) (string, bool, error) {
	return loadState(ctx, c, keysOf(prefix, site).state, field)
}
