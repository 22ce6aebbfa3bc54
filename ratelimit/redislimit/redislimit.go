// Package redislimit keeps ratelimit state in Redis, so that several nodes
// share one budget per key: [Store] implements ratelimit.Store and
// [WarmupStore] implements ratelimit.WarmupStore.
//
// # Atomicity
//
// Every operation is one Lua script (run with EVALSHA, loaded on first
// use), so it is atomic with respect to every other client. A reservation
// over several budgets is the GCRA step of all of them in one script; a
// connection slot set is a sorted set of lease names scored by their expiry,
// and a lease that is not renewed (its node crashed) drops out once expired,
// giving its slot back.
//
// # Time
//
// Several nodes need one clock, so by default the scripts read the Redis
// server's TIME, and every decision is relative to it; node clocks do not
// matter. Config.Now replaces it with the caller's clock, for tests with a
// controlled clock. Times are kept in microseconds (exact in Lua's
// doubles); intervals are rounded up to whole microseconds, which can only
// make a budget slightly stricter.
//
// # Keys
//
// Keys start with Config.Prefix. Rate budgets expire a minute after their
// theoretical arrival time passes, slot sets a minute after their last
// lease would expire, warm-up counters after three days. One script
// touches several keys, so with Redis Cluster the prefix must carry a hash
// tag ("{mta-rl}:") that puts every key on one shard.
package redislimit

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/mtakit/mta/ratelimit"
	"github.com/redis/go-redis/v9"
)

// Config configures a [Store] or [WarmupStore].
type Config struct {
	// Client is the Redis client (required): a *redis.Client, a
	// *redis.ClusterClient (see the package doc on hash tags) or a failover
	// client. Several Stores may share one.
	Client redis.UniversalClient
	// Prefix starts every key. Empty: "mta:rl:".
	Prefix string
	// Now, when set, replaces the Redis server's clock (for tests). Nil:
	// Redis TIME, which every node shares.
	Now func() time.Time
}

// ErrConfig is returned for an unusable Config.
var ErrConfig = errors.New("redislimit: invalid config")

func (c *Config) check() error {
	if c.Client == nil {
		return fmt.Errorf("%w: nil Client", ErrConfig)
	}
	if c.Prefix == "" {
		c.Prefix = "mta:rl:"
	}
	return nil
}

// nowArg is the time argument of the scripts: the injected clock in
// microseconds, or -1 for Redis TIME.
func (c *Config) nowArg() int64 {
	if c.Now == nil {
		return -1
	}
	return c.Now().UnixMicro()
}

// Store is a ratelimit.Store in Redis. It is safe for concurrent use.
type Store struct {
	cfg Config
}

var _ ratelimit.Store = (*Store)(nil)

// New returns a Store. Errors wrap [ErrConfig].
func New(cfg Config) (*Store, error) {
	if err := cfg.check(); err != nil {
		return nil, err
	}
	return &Store{cfg: cfg}, nil
}

// luaNow reads the time argument or Redis TIME, in microseconds.
const luaNow = `
local now = tonumber(ARGV[1])
if now < 0 then
  local t = redis.call('TIME')
  now = tonumber(t[1]) * 1000000 + tonumber(t[2])
end
`

// reserveScript: KEYS = budgets; ARGV = now, n, maxDelay (µs, -1: none),
// then interval (µs) and burst per budget. Returns {ok, delay, now, tat...}.
var reserveScript = redis.NewScript(luaNow + `
local n = tonumber(ARGV[2])
local maxd = tonumber(ARGV[3])
local delay = 0
local old = {}
for i = 1, #KEYS do
  local iv = tonumber(ARGV[2 + 2*i])
  local burst = tonumber(ARGV[3 + 2*i])
  local tat = tonumber(redis.call('GET', KEYS[i]) or '0')
  old[i] = tat
  if tat < now then tat = now end
  local d = tat + n*iv - burst*iv - now
  if d > delay then delay = d end
end
if maxd >= 0 and delay > maxd then
  return {0, delay, now}
end
local at = now + delay
local out = {1, delay, now}
for i = 1, #KEYS do
  local iv = tonumber(ARGV[2 + 2*i])
  local tat = old[i]
  if tat < at then tat = at end
  tat = tat + n*iv
  redis.call('SET', KEYS[i], string.format('%.0f', tat), 'PX', math.floor((tat - now) / 1000) + 60000)
  out[#out + 1] = tat
end
return out
`)

// cancelScript: KEYS = budgets; ARGV = n, then interval and TAT per budget.
var cancelScript = redis.NewScript(`
local n = tonumber(ARGV[1])
for i = 1, #KEYS do
  local iv = tonumber(ARGV[2*i])
  local want = tonumber(ARGV[2*i + 1])
  local cur = redis.call('GET', KEYS[i])
  if cur and tonumber(cur) == want then
    redis.call('SET', KEYS[i], string.format('%.0f', want - n*iv), 'KEEPTTL')
  end
end
return 1
`)

// acquireScript: KEYS = slot sets; ARGV = now, lease, ttl (µs), then max
// per set. Returns {ok, retry µs}.
var acquireScript = redis.NewScript(luaNow + `
local lease = ARGV[2]
local ttl = tonumber(ARGV[3])
for i = 1, #KEYS do
  redis.call('ZREMRANGEBYSCORE', KEYS[i], '-inf', now)
  if not redis.call('ZSCORE', KEYS[i], lease) then
    if redis.call('ZCARD', KEYS[i]) >= tonumber(ARGV[3 + i]) then
      local first = redis.call('ZRANGE', KEYS[i], 0, 0, 'WITHSCORES')
      local retry = 0
      if first[2] then retry = tonumber(first[2]) - now end
      return {0, retry}
    end
  end
end
for i = 1, #KEYS do
  redis.call('ZADD', KEYS[i], string.format('%.0f', now + ttl), lease)
  redis.call('PEXPIRE', KEYS[i], math.floor(ttl / 1000) + 60000)
end
return {1, 0}
`)

// renewScript: KEYS = slot sets; ARGV = now, lease, ttl (µs).
var renewScript = redis.NewScript(luaNow + `
local lease = ARGV[2]
local ttl = tonumber(ARGV[3])
for i = 1, #KEYS do
  local s = redis.call('ZSCORE', KEYS[i], lease)
  if s and tonumber(s) > now then
    redis.call('ZADD', KEYS[i], 'XX', string.format('%.0f', now + ttl), lease)
    redis.call('PEXPIRE', KEYS[i], math.floor(ttl / 1000) + 60000)
  end
end
return 1
`)

// micros rounds d up to whole microseconds.
func micros(d time.Duration) int64 {
	return int64((d + time.Microsecond - 1) / time.Microsecond)
}

// Reserve implements ratelimit.Store.
func (s *Store) Reserve(ctx context.Context, req ratelimit.ReserveRequest) (ratelimit.ReserveResult, error) {
	if err := ctx.Err(); err != nil {
		return ratelimit.ReserveResult{}, err
	}
	if req.N <= 0 {
		return ratelimit.ReserveResult{}, fmt.Errorf("%w: reserve %d units", ratelimit.ErrInvalid, req.N)
	}
	keys := make([]string, len(req.Buckets))
	args := make([]any, 0, 3+2*len(req.Buckets))
	md := int64(-1)
	if req.MaxDelay >= 0 {
		md = int64(req.MaxDelay / time.Microsecond)
	}
	args = append(args, s.cfg.nowArg(), req.N, md)
	for i, b := range req.Buckets {
		if b.Interval <= 0 || b.Burst <= 0 {
			return ratelimit.ReserveResult{}, fmt.Errorf("%w: bucket %s: interval %v burst %d", ratelimit.ErrInvalid, b.ID, b.Interval, b.Burst)
		}
		if req.N > b.Burst {
			return ratelimit.ReserveResult{}, fmt.Errorf("%w: %d units, burst %d in %s", ratelimit.ErrExceedsBurst, req.N, b.Burst, b.ID)
		}
		keys[i] = s.cfg.Prefix + b.ID
		args = append(args, micros(b.Interval), b.Burst)
	}
	v, err := reserveScript.Run(ctx, s.cfg.Client, keys, args...).Int64Slice()
	if err != nil {
		return ratelimit.ReserveResult{}, err
	}
	if len(v) < 3 {
		return ratelimit.ReserveResult{}, fmt.Errorf("redislimit: reserve: short reply %v", v)
	}
	res := ratelimit.ReserveResult{
		OK:    v[0] == 1,
		Delay: time.Duration(v[1]) * time.Microsecond,
		Now:   time.UnixMicro(v[2]),
	}
	if res.OK {
		res.TATs = v[3:]
	}
	return res, nil
}

// Cancel implements ratelimit.Store.
func (s *Store) Cancel(ctx context.Context, req ratelimit.CancelRequest) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	if len(req.TATs) != len(req.Buckets) {
		return fmt.Errorf("%w: cancel: %d TATs for %d buckets", ratelimit.ErrInvalid, len(req.TATs), len(req.Buckets))
	}
	keys := make([]string, len(req.Buckets))
	args := []any{req.N}
	for i, b := range req.Buckets {
		keys[i] = s.cfg.Prefix + b.ID
		args = append(args, micros(b.Interval), req.TATs[i])
	}
	return cancelScript.Run(ctx, s.cfg.Client, keys, args...).Err()
}

// Acquire implements ratelimit.Store.
func (s *Store) Acquire(ctx context.Context, req ratelimit.AcquireRequest) (ratelimit.AcquireResult, error) {
	if err := ctx.Err(); err != nil {
		return ratelimit.AcquireResult{}, err
	}
	if req.TTL <= 0 || req.Lease == "" {
		return ratelimit.AcquireResult{}, fmt.Errorf("%w: acquire: lease %q ttl %v", ratelimit.ErrInvalid, req.Lease, req.TTL)
	}
	keys := make([]string, len(req.Slots))
	args := []any{s.cfg.nowArg(), req.Lease, micros(req.TTL)}
	for i, sl := range req.Slots {
		keys[i] = s.cfg.Prefix + sl.ID
		args = append(args, sl.Max)
	}
	v, err := acquireScript.Run(ctx, s.cfg.Client, keys, args...).Int64Slice()
	if err != nil {
		return ratelimit.AcquireResult{}, err
	}
	if len(v) != 2 {
		return ratelimit.AcquireResult{}, fmt.Errorf("redislimit: acquire: bad reply %v", v)
	}
	return ratelimit.AcquireResult{OK: v[0] == 1, Retry: time.Duration(v[1]) * time.Microsecond}, nil
}

// Release implements ratelimit.Store.
func (s *Store) Release(ctx context.Context, slots []ratelimit.Slot, lease string) error {
	if len(slots) == 0 {
		return nil
	}
	_, err := s.cfg.Client.Pipelined(ctx, func(p redis.Pipeliner) error {
		for _, sl := range slots {
			p.ZRem(ctx, s.cfg.Prefix+sl.ID, lease)
		}
		return nil
	})
	return err
}

// Renew implements ratelimit.Store.
func (s *Store) Renew(ctx context.Context, slots []ratelimit.Slot, lease string, ttl time.Duration) error {
	if len(slots) == 0 {
		return nil
	}
	keys := make([]string, len(slots))
	for i, sl := range slots {
		keys[i] = s.cfg.Prefix + sl.ID
	}
	return renewScript.Run(ctx, s.cfg.Client, keys, s.cfg.nowArg(), lease, micros(ttl)).Err()
}

// WarmupStore is a ratelimit.WarmupStore in Redis, shared by every node.
// It is safe for concurrent use. Counters expire after three days.
type WarmupStore struct {
	cfg Config
}

var _ ratelimit.WarmupStore = (*WarmupStore)(nil)

// NewWarmupStore returns a WarmupStore. Config.Now is not used (start
// times come from the caller). Errors wrap [ErrConfig].
func NewWarmupStore(cfg Config) (*WarmupStore, error) {
	if err := cfg.check(); err != nil {
		return nil, err
	}
	return &WarmupStore{cfg: cfg}, nil
}

var startScript = redis.NewScript(`
local v = redis.call('GET', KEYS[1])
if v then return v end
redis.call('SET', KEYS[1], ARGV[1])
return ARGV[1]
`)

// tryAddScript: KEYS[1] = counter; ARGV = n, limit. Returns 1 if added.
var tryAddScript = redis.NewScript(`
local n = tonumber(ARGV[1])
local cur = tonumber(redis.call('GET', KEYS[1]) or '0')
if n > 0 and cur + n > tonumber(ARGV[2]) then return 0 end
local v = cur + n
if v < 0 then v = 0 end
redis.call('SET', KEYS[1], string.format('%.0f', v), 'EX', 259200)
return 1
`)

func (s *WarmupStore) startKey(source string) string {
	return s.cfg.Prefix + "w:start:" + strconv.Quote(source)
}

func (s *WarmupStore) counterKey(c ratelimit.Counter) string {
	return s.cfg.Prefix + "w:count:" + strconv.Quote(c.Source) + ":" + strconv.Quote(c.Site) + ":" + strconv.Itoa(c.Day)
}

// Start implements ratelimit.WarmupStore.
func (s *WarmupStore) Start(ctx context.Context, source string, now time.Time) (time.Time, error) {
	if err := ctx.Err(); err != nil {
		return time.Time{}, err
	}
	v, err := startScript.Run(ctx, s.cfg.Client, []string{s.startKey(source)}, strconv.FormatInt(now.UnixNano(), 10)).Text()
	if err != nil {
		return time.Time{}, err
	}
	ns, err := strconv.ParseInt(v, 10, 64)
	if err != nil {
		return time.Time{}, fmt.Errorf("redislimit: bad start time %q for %q", v, source)
	}
	return time.Unix(0, ns), nil
}

// TryAdd implements ratelimit.WarmupStore.
func (s *WarmupStore) TryAdd(ctx context.Context, c ratelimit.Counter, n, limit int64) (bool, error) {
	if err := ctx.Err(); err != nil {
		return false, err
	}
	v, err := tryAddScript.Run(ctx, s.cfg.Client, []string{s.counterKey(c)}, n, limit).Int64()
	if err != nil {
		return false, err
	}
	return v == 1, nil
}

// Count implements ratelimit.WarmupStore.
func (s *WarmupStore) Count(ctx context.Context, c ratelimit.Counter) (int64, error) {
	if err := ctx.Err(); err != nil {
		return 0, err
	}
	v, err := s.cfg.Client.Get(ctx, s.counterKey(c)).Int64()
	if errors.Is(err, redis.Nil) {
		return 0, nil
	}
	return v, err
}
