-- ratesync PostgreSQL schema, version 2. {{S}} is the quoted schema,
-- {{T}} the quoted table, {{P}} a quoted name prefix for the other objects
-- (the table name followed by "_"), {{REL}} the table's qualified name as
-- a string literal, {{UNLOGGED}} "UNLOGGED " or "".
--
-- One row per (limiter key, policy kind): kind 1 token bucket (tat, at),
-- 2 sliding window (entries, counts, units), 3 concurrency (lease_ids,
-- lease_exps). key is the key's bytes, any bytes; a key longer than 256
-- bytes is its first 256 bytes followed by the SHA-256 of all of it.
-- Times are nanoseconds since the epoch on the server's clock. expires_at
-- is a time (rounded up, see _expiry) after which the row is equivalent to
-- no row; the sweeper deletes rows past it.

-- Upgrade from version 1 (text keys, one window entry per unit): the
-- old functions go (they take text keys), keys become bytes, window
-- entries become (time, count) pairs.
DO $rs_upgrade$
BEGIN
  IF (SELECT atttypid FROM pg_attribute
      WHERE attrelid = to_regclass({{REL}}) AND attname = 'key' AND NOT attisdropped) = 'text'::regtype THEN
    DROP FUNCTION IF EXISTS {{S}}.{{P}}decide(boolean, text, bigint, text[], smallint[], bigint[], bigint[], integer[]);
    DROP FUNCTION IF EXISTS {{S}}.{{P}}check(text, smallint, bigint, bigint, integer, text, bigint, boolean);
    DROP FUNCTION IF EXISTS {{S}}.{{P}}release(text, text, text);
    DROP FUNCTION IF EXISTS {{S}}.{{P}}extend(text, text, bigint, bigint);
    ALTER TABLE {{S}}.{{T}}
      ALTER COLUMN key TYPE bytea USING CASE WHEN octet_length(key) <= 256 THEN convert_to(key, 'UTF8')
        ELSE substr(convert_to(key, 'UTF8'), 1, 256) || sha256(convert_to(key, 'UTF8')) END,
      ADD COLUMN IF NOT EXISTS at bigint,
      ADD COLUMN IF NOT EXISTS counts bigint[],
      ADD COLUMN IF NOT EXISTS units bigint,
      DROP COLUMN IF EXISTS ok;
    UPDATE {{S}}.{{T}} SET entries = ARRAY(SELECT e FROM unnest(entries) e ORDER BY e),
        counts = array_fill(1::bigint, ARRAY[cardinality(entries)]), units = cardinality(entries)
      WHERE kind = 2 AND cardinality(entries) > 0;
  END IF;
END $rs_upgrade$;

CREATE SCHEMA IF NOT EXISTS {{S}};

CREATE {{UNLOGGED}}TABLE IF NOT EXISTS {{S}}.{{T}} (
  key        bytea    NOT NULL,
  kind       smallint NOT NULL,
  tat        bigint,   -- 1: theoretical arrival time
  at         bigint,   -- 1: when the single-bucket statement last admitted
  entries    bigint[], -- 2: admission times, oldest first
  counts     bigint[], -- 2: units admitted at each of entries
  units      bigint,   -- 2: the sum of counts
  lease_ids  text[],   -- 3: held leases
  lease_exps bigint[], -- 3: their expiries
  expires_at bigint   NOT NULL DEFAULT 0,
  PRIMARY KEY (key, kind)
) WITH (fillfactor = 70);

-- The sweeper's DELETE finds idle rows through this index.
CREATE INDEX IF NOT EXISTS {{P}}expires ON {{S}}.{{T}} (expires_at);

-- _expiry is the expires_at of a row whose state lasts until p_new and
-- whose expires_at was p_old: p_new rounded up to a multiple of 2^36 ns
-- (about 69 s), never earlier than p_old. The rounding leaves the indexed
-- column as it was in most updates of a busy row, so they stay HOT (no
-- index writes); the sweeper deletes a row at most 69 s after it idled.
CREATE OR REPLACE FUNCTION {{S}}.{{P}}expiry(p_old bigint, p_new bigint) RETURNS bigint
LANGUAGE sql IMMUTABLE AS $$
  SELECT greatest(p_old, ((p_new + 68719476735) >> 36) << 36)
$$;

-- _now: the server's clock in nanoseconds (microsecond resolution), or the
-- test clock when given.
CREATE OR REPLACE FUNCTION {{S}}.{{P}}now(p_now bigint) RETURNS bigint
LANGUAGE sql VOLATILE AS $$
  SELECT coalesce(p_now, (extract(epoch FROM clock_timestamp()) * 1000000)::bigint * 1000)
$$;

-- _check answers one check against its row r (NULL fields: no state) at
-- p_now and, when p_take and the check passes, writes the row (which the
-- caller has locked). Returns {allowed, remaining, retry ns (-1: never),
-- reset ns}.
CREATE OR REPLACE FUNCTION {{S}}.{{P}}check(r {{S}}.{{T}}, p_kind smallint, p_a bigint, p_b bigint,
  p_cost bigint, p_token text, p_now bigint, p_take boolean) RETURNS bigint[]
LANGUAGE plpgsql AS $$
DECLARE
  v_entries bigint[]; v_counts bigint[]; v_ids text[]; v_exps bigint[];
  d bigint; nd bigint; cap bigint; avail bigint; v_units bigint; need bigint;
  cnt int; k int; j int; remaining bigint; reset bigint; retry bigint;
  first_e bigint; last_e bigint; e bigint; new_ids text[]; new_exps bigint[];
BEGIN
  IF p_kind = 1 THEN
    d := greatest(coalesce(r.tat, 0) - p_now, 0);
    cap := p_b * p_a;
    avail := CASE WHEN cap > d THEN (cap - d) / p_a ELSE 0 END;
    IF p_cost > p_b THEN RETURN ARRAY[0, avail, -1, d]; END IF;
    nd := d + p_cost * p_a;
    IF nd > cap THEN RETURN ARRAY[0, avail, nd - cap, d]; END IF;
    IF NOT p_take THEN RETURN ARRAY[1, avail, 0, d]; END IF;
    UPDATE {{S}}.{{T}} SET tat = p_now + nd, expires_at = {{S}}.{{P}}expiry(expires_at, p_now + nd)
      WHERE key = r.key AND kind = 1;
    RETURN ARRAY[1, CASE WHEN cap > nd THEN (cap - nd) / p_a ELSE 0 END, 0, nd];
  ELSIF p_kind = 2 THEN
    v_entries := coalesce(r.entries, '{}');
    v_counts := coalesce(r.counts, '{}');
    v_units := coalesce(r.units, 0);
    cnt := cardinality(v_entries);
    k := 1;
    WHILE k <= cnt AND v_entries[k] <= p_now - p_a LOOP
      v_units := v_units - v_counts[k];
      k := k + 1;
    END LOOP;
    remaining := greatest(p_b - v_units, 0);
    reset := CASE WHEN k <= cnt THEN v_entries[cnt] + p_a - p_now ELSE 0 END;
    IF p_cost > p_b THEN RETURN ARRAY[0, remaining, -1, reset]; END IF;
    IF v_units + p_cost > p_b THEN
      -- The entry holding the (units + cost - limit)-th oldest unit must
      -- leave the window.
      need := v_units + p_cost - p_b - v_counts[k];
      j := k;
      WHILE need > 0 LOOP
        j := j + 1;
        need := need - v_counts[j];
      END LOOP;
      RETURN ARRAY[0, remaining, v_entries[j] + p_a - p_now, reset];
    END IF;
    IF NOT p_take THEN RETURN ARRAY[1, remaining, 0, reset]; END IF;
    IF k > cnt THEN
      v_entries := ARRAY[p_now]; v_counts := ARRAY[p_cost];
    ELSE
      IF k > 1 THEN
        v_entries := v_entries[k:cnt]; v_counts := v_counts[k:cnt]; cnt := cnt - k + 1;
      END IF;
      IF v_entries[cnt] >= p_now THEN
        -- The same instant (or a clock stepped back): one entry, so the
        -- log stays in time order.
        v_counts[cnt] := v_counts[cnt] + p_cost;
      ELSE
        v_entries := v_entries || p_now; v_counts := v_counts || p_cost;
      END IF;
    END IF;
    e := v_entries[cardinality(v_entries)] + p_a;
    UPDATE {{S}}.{{T}} SET entries = v_entries, counts = v_counts, units = v_units + p_cost,
      expires_at = {{S}}.{{P}}expiry(expires_at, e) WHERE key = r.key AND kind = 2;
    RETURN ARRAY[1, p_b - v_units - p_cost, 0, e - p_now];
  ELSE
    v_ids := r.lease_ids; v_exps := r.lease_exps;
    new_ids := '{}'; new_exps := '{}';
    FOR k IN 1 .. coalesce(cardinality(v_ids), 0) LOOP
      e := v_exps[k];
      IF e > p_now THEN
        new_ids := new_ids || v_ids[k]; new_exps := new_exps || e;
        IF first_e IS NULL OR e < first_e THEN first_e := e; END IF;
        IF last_e IS NULL OR e > last_e THEN last_e := e; END IF;
      END IF;
    END LOOP;
    cnt := cardinality(new_ids);
    remaining := greatest(p_b - cnt, 0);
    reset := CASE WHEN cnt > 0 THEN last_e - p_now ELSE 0 END;
    retry := CASE WHEN cnt >= p_b AND cnt > 0 THEN first_e - p_now ELSE 0 END;
    IF cnt >= p_b OR NOT p_take THEN
      RETURN ARRAY[CASE WHEN cnt < p_b THEN 1 ELSE 0 END, remaining, retry, reset];
    END IF;
    e := p_now + p_a;
    new_ids := new_ids || p_token; new_exps := new_exps || e;
    IF first_e IS NULL OR e < first_e THEN first_e := e; END IF;
    IF last_e IS NULL OR e > last_e THEN last_e := e; END IF;
    UPDATE {{S}}.{{T}} SET lease_ids = new_ids, lease_exps = new_exps,
      expires_at = {{S}}.{{P}}expiry(expires_at, last_e) WHERE key = r.key AND kind = 3;
    retry := CASE WHEN cnt + 1 >= p_b THEN first_e - p_now ELSE 0 END;
    RETURN ARRAY[1, p_b - cnt - 1, retry, last_e - p_now];
  END IF;
END $$;

-- _decide applies every check of one decision or none, and returns
-- {all allowed, then per check: allowed, remaining, retry, reset}. The
-- clock is read after the state it decides on: after the rows are read
-- (denials) or locked (admissions). Rows are created and locked in (key,
-- kind) order, so concurrent decisions never deadlock; a denial rolls back
-- what earlier checks wrote.
CREATE OR REPLACE FUNCTION {{S}}.{{P}}decide(p_consume boolean, p_token text, p_now bigint,
  p_keys bytea[], p_kinds smallint[], p_a bigint[], p_b bigint[], p_cost bigint[]) RETURNS bigint[]
LANGUAGE plpgsql AS $$
DECLARE
  n int := cardinality(p_keys);
  v_now bigint; v_row {{S}}.{{T}}; v_rows {{S}}.{{T}}[];
  r bigint[]; out_ bigint[] := ARRAY[1]::bigint[]; i int;
BEGIN
  -- A check that fails on the latest committed state fails on the locked
  -- one too (buckets and windows only fill up between the two; a lease
  -- released in between is seen by the next attempt): answer such denials
  -- without taking a row lock, so an overloaded key does not queue its
  -- refusals behind its admissions, and a denial writes nothing.
  IF n = 1 THEN
    SELECT t.* INTO v_row FROM {{S}}.{{T}} t WHERE t.key = p_keys[1] AND t.kind = p_kinds[1];
    v_now := {{S}}.{{P}}now(p_now);
    r := {{S}}.{{P}}check(v_row, p_kinds[1], p_a[1], p_b[1], p_cost[1], p_token, v_now, false);
    IF r[1] = 0 OR NOT p_consume THEN RETURN ARRAY[r[1]] || r; END IF;
  ELSE
    SELECT array_agg(t ORDER BY u.i) INTO v_rows
      FROM unnest(p_keys, p_kinds) WITH ORDINALITY AS u(k, kd, i)
      LEFT JOIN {{S}}.{{T}} t ON t.key = u.k AND t.kind = u.kd;
    v_now := {{S}}.{{P}}now(p_now);
    FOR i IN 1 .. n LOOP
      r := {{S}}.{{P}}check(v_rows[i], p_kinds[i], p_a[i], p_b[i], p_cost[i], p_token, v_now, false);
      IF r[1] = 0 THEN out_[1] := 0; END IF;
      out_ := out_ || r;
    END LOOP;
    IF out_[1] = 0 OR NOT p_consume THEN RETURN out_; END IF;
    out_ := ARRAY[1]::bigint[];
  END IF;
  -- A decision need not wait for its WAL flush: after a crash the last few
  -- hundred milliseconds of decisions may be lost (as if they had not been
  -- made), never a state that is torn. This takes the fsync off the row
  -- lock's critical path.
  PERFORM set_config('synchronous_commit', 'off', true);
  IF n = 1 THEN
    SELECT t.* INTO v_row FROM {{S}}.{{T}} t WHERE t.key = p_keys[1] AND t.kind = p_kinds[1] FOR UPDATE;
    IF NOT FOUND THEN
      INSERT INTO {{S}}.{{T}} (key, kind) VALUES (p_keys[1], p_kinds[1]) ON CONFLICT DO NOTHING;
      SELECT t.* INTO v_row FROM {{S}}.{{T}} t WHERE t.key = p_keys[1] AND t.kind = p_kinds[1] FOR UPDATE;
    END IF;
    v_now := {{S}}.{{P}}now(p_now); -- after the lock: the row cannot change under this reading
    r := {{S}}.{{P}}check(v_row, p_kinds[1], p_a[1], p_b[1], p_cost[1], p_token, v_now, true);
    RETURN ARRAY[r[1]] || r;
  END IF;
  INSERT INTO {{S}}.{{T}} (key, kind)
    SELECT DISTINCT k, kd FROM unnest(p_keys, p_kinds) AS u(k, kd) ORDER BY 1, 2
    ON CONFLICT DO NOTHING;
  PERFORM 1 FROM {{S}}.{{T}} t
    WHERE (t.key, t.kind) IN (SELECT k, kd FROM unnest(p_keys, p_kinds) AS u(k, kd))
    ORDER BY t.key, t.kind FOR UPDATE;
  v_now := {{S}}.{{P}}now(p_now);
  BEGIN
    FOR i IN 1 .. n LOOP
      -- Read after the earlier checks' writes: two checks may share a row.
      SELECT t.* INTO v_row FROM {{S}}.{{T}} t WHERE t.key = p_keys[i] AND t.kind = p_kinds[i];
      r := {{S}}.{{P}}check(v_row, p_kinds[i], p_a[i], p_b[i], p_cost[i], p_token, v_now, true);
      out_ := out_ || r;
      IF r[1] = 0 THEN
        RAISE EXCEPTION USING ERRCODE = 'RSDNY'; -- undo the checks that passed
      END IF;
    END LOOP;
    RETURN out_;
  EXCEPTION WHEN SQLSTATE 'RSDNY' THEN
    NULL;
  END;
  out_ := ARRAY[0]::bigint[];
  FOR i IN 1 .. n LOOP
    SELECT t.* INTO v_row FROM {{S}}.{{T}} t WHERE t.key = p_keys[i] AND t.kind = p_kinds[i];
    out_ := out_ || {{S}}.{{P}}check(v_row, p_kinds[i], p_a[i], p_b[i], p_cost[i], p_token, v_now, false);
  END LOOP;
  RETURN out_;
END $$;

-- _release removes one lease and notifies waiters with the key in hex (a
-- payload of at most 576 bytes, whatever the key); idempotent.
CREATE OR REPLACE FUNCTION {{S}}.{{P}}release(p_key bytea, p_lease text, p_channel text) RETURNS boolean
LANGUAGE plpgsql AS $$
DECLARE v_ids text[]; v_exps bigint[]; i int;
BEGIN
  PERFORM set_config('synchronous_commit', 'off', true);
  SELECT lease_ids, lease_exps INTO v_ids, v_exps FROM {{S}}.{{T}} WHERE key = p_key AND kind = 3 FOR UPDATE;
  i := array_position(v_ids, p_lease);
  IF i IS NULL THEN RETURN false; END IF;
  UPDATE {{S}}.{{T}} SET lease_ids = v_ids[:i-1] || v_ids[i+1:], lease_exps = v_exps[:i-1] || v_exps[i+1:]
    WHERE key = p_key AND kind = 3;
  PERFORM pg_notify(p_channel, encode(p_key, 'hex'));
  RETURN true;
END $$;

-- _extend moves a live lease's expiry to now + ttl, on a clock read after
-- the row is locked.
CREATE OR REPLACE FUNCTION {{S}}.{{P}}extend(p_key bytea, p_lease text, p_ttl bigint, p_now bigint) RETURNS boolean
LANGUAGE plpgsql AS $$
DECLARE v_ids text[]; v_exps bigint[]; i int; v_now bigint;
BEGIN
  SELECT lease_ids, lease_exps INTO v_ids, v_exps FROM {{S}}.{{T}} WHERE key = p_key AND kind = 3 FOR UPDATE;
  v_now := {{S}}.{{P}}now(p_now);
  i := array_position(v_ids, p_lease);
  IF i IS NULL OR v_exps[i] <= v_now THEN RETURN false; END IF;
  v_exps[i] := v_now + p_ttl;
  UPDATE {{S}}.{{T}} SET lease_exps = v_exps,
    expires_at = {{S}}.{{P}}expiry(expires_at, (SELECT max(e) FROM unnest(v_exps) e)) WHERE key = p_key AND kind = 3;
  RETURN true;
END $$;
