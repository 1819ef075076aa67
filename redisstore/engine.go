package redisstore

import (
	"fmt"
	nurl "net/url"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/rate-sync/ratesync-go"
	"github.com/rate-sync/ratesync-go/driver"
)

func init() { ratesync.RegisterEngine("redis", open) }

// open builds a store and the client it owns from a [stores.NAME] table
// with engine = "redis". See docs/redis.md for the keys.
func open(cfg *ratesync.StoreConfig) (driver.Store, error) {
	url, err := cfg.String("url", "")
	if err != nil {
		return nil, err
	}
	nodes, err := cfg.Strings("cluster_nodes")
	if err != nil {
		return nil, err
	}
	master, err := cfg.String("sentinel_master", "")
	if err != nil {
		return nil, err
	}
	sentinels, err := cfg.Strings("sentinel_nodes")
	if err != nil {
		return nil, err
	}
	db, err := cfg.Int("db", -1)
	if err != nil {
		return nil, err
	}
	password, err := cfg.String("password", "")
	if err != nil {
		return nil, err
	}
	prefix, err := cfg.String("key_prefix", DefaultKeyPrefix)
	if err != nil {
		return nil, err
	}
	poolMax, err := cfg.Int("pool_max_size", 0)
	if err != nil {
		return nil, err
	}
	poolMin, err := cfg.Int("pool_min_size", 0)
	if err != nil {
		return nil, err
	}
	readTimeout, err := cfg.Seconds("socket_timeout", 5*time.Second)
	if err != nil {
		return nil, err
	}
	dialTimeout, err := cfg.Seconds("socket_connect_timeout", 5*time.Second)
	if err != nil {
		return nil, err
	}
	batchWorkers, err := cfg.Int("batch_workers", 0)
	if err != nil {
		return nil, err
	}
	batchSize, err := cfg.Int("batch_size", 0)
	if err != nil {
		return nil, err
	}
	groups, err := colocateGroups(cfg)
	if err != nil {
		return nil, err
	}
	switch {
	case prefix == "":
		return nil, cfg.Errorf("key_prefix", "must not be empty")
	case poolMax < 0:
		return nil, cfg.Errorf("pool_max_size", "must be >= 1")
	case poolMin < 0:
		return nil, cfg.Errorf("pool_min_size", "must be >= 0")
	case poolMax > 0 && poolMin > poolMax:
		return nil, cfg.Errorf("pool_min_size", "must not exceed pool_max_size (%d)", poolMax)
	case readTimeout <= 0:
		return nil, cfg.Errorf("socket_timeout", "must be > 0")
	case dialTimeout <= 0:
		return nil, cfg.Errorf("socket_connect_timeout", "must be > 0")
	case batchWorkers < 0:
		return nil, cfg.Errorf("batch_workers", "must be >= 1")
	case batchSize < 0:
		return nil, cfg.Errorf("batch_size", "must be >= 1")
	}
	modes := 0
	for _, set := range []bool{url != "", len(nodes) > 0, master != ""} {
		if set {
			modes++
		}
	}
	if modes != 1 {
		return nil, cfg.Errorf("url", "set exactly one of url (one server), cluster_nodes (Redis Cluster) or sentinel_master with sentinel_nodes (Sentinel)")
	}

	// One dial attempt per call: go-redis's default of 5, 100 ms apart,
	// outlasts the call timeout, so a refused connection would be reported
	// as a timeout instead of its cause; the pipeline retries anyway.
	const dialRetries = 1
	var c Client
	switch {
	case url != "":
		o, err := redis.ParseURL(url)
		if err != nil {
			return nil, cfg.Errorf("url", "%s", strings.ReplaceAll(err.Error(), url, "<url>"))
		}
		if u, _ := nurl.Parse(url); db >= 0 && u != nil && strings.Trim(u.Path, "/") == "" {
			o.DB = db // a db in the URL path wins, as in rate-sync
		}
		if password != "" && o.Password == "" {
			o.Password = password
		}
		o.PoolSize, o.MinIdleConns = poolMax, poolMin
		o.ReadTimeout, o.WriteTimeout, o.DialTimeout = readTimeout, readTimeout, dialTimeout
		o.DialerRetries = dialRetries
		o.ContextTimeoutEnabled = true
		c = redis.NewClient(o)
	case len(nodes) > 0:
		if db > 0 {
			return nil, cfg.Errorf("db", "Redis Cluster has only db 0")
		}
		c = redis.NewClusterClient(&redis.ClusterOptions{
			Addrs: nodes, Password: password,
			PoolSize: poolMax, MinIdleConns: poolMin,
			ReadTimeout: readTimeout, WriteTimeout: readTimeout, DialTimeout: dialTimeout,
			DialerRetries: dialRetries, ContextTimeoutEnabled: true,
		})
	default:
		if len(sentinels) == 0 {
			return nil, cfg.Errorf("sentinel_nodes", "required with sentinel_master: the sentinels' host:port addresses")
		}
		c = redis.NewFailoverClient(&redis.FailoverOptions{
			MasterName: master, SentinelAddrs: sentinels, Password: password, DB: max(db, 0),
			PoolSize: poolMax, MinIdleConns: poolMin,
			ReadTimeout: readTimeout, WriteTimeout: readTimeout, DialTimeout: dialTimeout,
			DialerRetries: dialRetries, ContextTimeoutEnabled: true,
		})
	}
	opts := []Option{WithKeyPrefix(prefix), WithBatching(batchWorkers, batchSize)}
	for _, g := range groups {
		opts = append(opts, WithColocation(g...))
	}
	s, err := New(c, opts...)
	if err != nil {
		if cl, ok := c.(interface{ Close() error }); ok {
			cl.Close()
		}
		return nil, fmt.Errorf("stores.%s: %w", cfg.Name, err)
	}
	s.owned = true
	return s, nil
}

// colocateGroups reads the colocate option: a list of groups, each a list
// of rule names, such as [["login_ip", "login_account"]] (WithColocation).
func colocateGroups(cfg *ratesync.StoreConfig) ([][]string, error) {
	if !cfg.Has("colocate") {
		return nil, nil
	}
	const want = `a list of groups of rule names, such as [["login_ip", "login_account"]]`
	var groups [][]string
	switch v := cfg.Options["colocate"].(type) {
	case [][]string:
		groups = v
	case []any:
		for i, item := range v {
			var g []string
			switch item := item.(type) {
			case []string:
				g = item
			case []any:
				for _, name := range item {
					str, ok := name.(string)
					if !ok {
						return nil, cfg.Errorf("colocate", "group %d: want rule names (strings), got %T", i+1, name)
					}
					g = append(g, str)
				}
			default:
				return nil, cfg.Errorf("colocate", "item %d: want %s", i+1, want)
			}
			groups = append(groups, g)
		}
	default:
		return nil, cfg.Errorf("colocate", "want %s", want)
	}
	for i, g := range groups {
		if len(g) < 2 {
			return nil, cfg.Errorf("colocate", "group %d: name at least two rules", i+1)
		}
	}
	if _, err := colocation(groups); err != nil {
		return nil, cfg.Errorf("colocate", "%s", strings.TrimPrefix(err.Error(), "ratesync/redisstore: WithColocation: "))
	}
	return groups, nil
}
