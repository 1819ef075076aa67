-- ratesync PostgreSQL schema, version 1. {{S}} is the quoted schema,
-- {{T}} the quoted table, {{P}} a quoted name prefix for the other objects
-- (the table name followed by "_"), {{UNLOGGED}} "UNLOGGED " or "".
--
-- One row per (limiter key, policy kind): kind 1 token bucket (tat),
-- 2 sliding window (entries), 3 concurrency (lease_ids/lease_exps). Times
-- are nanoseconds since the epoch on the server's clock. expires_at is when
-- the row is equivalent to no row; the sweeper deletes rows past it.
CREATE SCHEMA IF NOT EXISTS {{S}};

CREATE {{UNLOGGED}}TABLE IF NOT EXISTS {{S}}.{{T}} (
  key        text     NOT NULL,
  kind       smallint NOT NULL,
  tat        bigint,
  entries    bigint[],
  lease_ids  text[],
  lease_exps bigint[],
  expires_at bigint   NOT NULL DEFAULT 0,
  ok         boolean,  -- the last single-bucket decision's answer (fast path)
  PRIMARY KEY (key, kind)
) WITH (fillfactor = 70);

-- _now: the server's clock in nanoseconds (microsecond resolution), or the
-- test clock when given.
CREATE OR REPLACE FUNCTION {{S}}.{{P}}now(p_now bigint) RETURNS bigint
LANGUAGE sql VOLATILE AS $$
  SELECT coalesce(p_now, (extract(epoch FROM clock_timestamp()) * 1000000)::bigint * 1000)
$$;

-- _check answers one check against its row (locked by the caller when
-- p_take) and, when p_take and the check passes, writes the row. Returns
-- {allowed, remaining, retry ns (-1: never), reset ns}.
CREATE OR REPLACE FUNCTION {{S}}.{{P}}check(p_key text, p_kind smallint, p_a bigint, p_b bigint,
  p_cost int, p_token text, p_now bigint, p_take boolean) RETURNS bigint[]
LANGUAGE plpgsql AS $$
DECLARE
  v_tat bigint; v_entries bigint[]; v_ids text[]; v_exps bigint[];
  d bigint; nd bigint; cap bigint; avail bigint;
  cnt int; k int; remaining bigint; reset bigint; retry bigint;
  first_e bigint; last_e bigint; e bigint; new_ids text[]; new_exps bigint[];
BEGIN
  SELECT t.tat, t.entries, t.lease_ids, t.lease_exps INTO v_tat, v_entries, v_ids, v_exps
    FROM {{S}}.{{T}} t WHERE t.key = p_key AND t.kind = p_kind;
  IF p_kind = 1 THEN
    d := greatest(coalesce(v_tat, 0) - p_now, 0);
    cap := p_b * p_a;
    avail := CASE WHEN cap > d THEN (cap - d) / p_a ELSE 0 END;
    IF p_cost > p_b THEN RETURN ARRAY[0, avail, -1, d]; END IF;
    nd := d + p_cost * p_a;
    IF nd > cap THEN RETURN ARRAY[0, avail, nd - cap, d]; END IF;
    IF NOT p_take THEN RETURN ARRAY[1, avail, 0, d]; END IF;
    UPDATE {{S}}.{{T}} SET tat = p_now + nd, expires_at = p_now + nd WHERE key = p_key AND kind = 1;
    RETURN ARRAY[1, CASE WHEN cap > nd THEN (cap - nd) / p_a ELSE 0 END, 0, nd];
  ELSIF p_kind = 2 THEN
    v_entries := coalesce(v_entries, '{}');
    cnt := cardinality(v_entries);
    k := 1;
    WHILE k <= cnt AND v_entries[k] <= p_now - p_a LOOP k := k + 1; END LOOP;
    IF k > 1 THEN v_entries := v_entries[k:cnt]; cnt := cnt - k + 1; END IF;
    remaining := greatest(p_b - cnt, 0);
    reset := CASE WHEN cnt > 0 THEN v_entries[cnt] + p_a - p_now ELSE 0 END;
    IF p_cost > p_b THEN RETURN ARRAY[0, remaining, -1, reset]; END IF;
    IF cnt + p_cost > p_b THEN
      RETURN ARRAY[0, remaining, v_entries[cnt + p_cost - p_b] + p_a - p_now, reset];
    END IF;
    IF NOT p_take THEN RETURN ARRAY[1, remaining, 0, reset]; END IF;
    v_entries := v_entries || array_fill(p_now, ARRAY[p_cost]);
    UPDATE {{S}}.{{T}} SET entries = v_entries, expires_at = p_now + p_a WHERE key = p_key AND kind = 2;
    RETURN ARRAY[1, p_b - cnt - p_cost, 0, p_a];
  ELSE
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
    UPDATE {{S}}.{{T}} SET lease_ids = new_ids, lease_exps = new_exps, expires_at = last_e
      WHERE key = p_key AND kind = 3;
    retry := CASE WHEN cnt + 1 >= p_b THEN first_e - p_now ELSE 0 END;
    RETURN ARRAY[1, p_b - cnt - 1, retry, last_e - p_now];
  END IF;
END $$;

-- _decide applies every check of one decision or none, and returns
-- {all allowed, then per check: allowed, remaining, retry, reset}. Rows are
-- created and locked in (key, kind) order, so concurrent decisions never
-- deadlock; a denial rolls back what earlier checks wrote.
CREATE OR REPLACE FUNCTION {{S}}.{{P}}decide(p_consume boolean, p_token text, p_now bigint,
  p_keys text[], p_kinds smallint[], p_a bigint[], p_b bigint[], p_cost int[]) RETURNS bigint[]
LANGUAGE plpgsql AS $$
DECLARE
  n int := cardinality(p_keys);
  now_ns bigint := coalesce(p_now, (extract(epoch FROM clock_timestamp()) * 1000000)::bigint * 1000);
  r bigint[]; out_ bigint[] := ARRAY[1]::bigint[]; i int; allowed boolean := true;
BEGIN
  IF NOT p_consume THEN
    FOR i IN 1 .. n LOOP
      r := {{S}}.{{P}}check(p_keys[i], p_kinds[i], p_a[i], p_b[i], p_cost[i], p_token, now_ns, false);
      IF r[1] = 0 THEN out_[1] := 0; END IF;
      out_ := out_ || r;
    END LOOP;
    RETURN out_;
  END IF;
  -- A check that fails on the latest committed state fails on the locked
  -- one too (buckets and windows only fill up between the two; a lease
  -- released in between is seen by the next attempt): answer such denials
  -- without taking a row lock, so an overloaded key does not queue its
  -- refusals behind its admissions.
  FOR i IN 1 .. n LOOP
    r := {{S}}.{{P}}check(p_keys[i], p_kinds[i], p_a[i], p_b[i], p_cost[i], p_token, now_ns, false);
    IF r[1] = 0 THEN out_[1] := 0; END IF;
    out_ := out_ || r;
  END LOOP;
  IF out_[1] = 0 THEN RETURN out_; END IF;
  out_ := ARRAY[1]::bigint[];
  -- A decision need not wait for its WAL flush: after a crash the last few
  -- hundred milliseconds of decisions may be lost (as if they had not been
  -- made), never a state that is torn. This takes the fsync off the row
  -- lock's critical path.
  PERFORM set_config('synchronous_commit', 'off', true);
  IF n = 1 THEN
    PERFORM 1 FROM {{S}}.{{T}} WHERE key = p_keys[1] AND kind = p_kinds[1] FOR UPDATE;
    IF NOT FOUND THEN
      INSERT INTO {{S}}.{{T}} (key, kind) VALUES (p_keys[1], p_kinds[1]) ON CONFLICT DO NOTHING;
      PERFORM 1 FROM {{S}}.{{T}} WHERE key = p_keys[1] AND kind = p_kinds[1] FOR UPDATE;
    END IF;
    r := {{S}}.{{P}}check(p_keys[1], p_kinds[1], p_a[1], p_b[1], p_cost[1], p_token, now_ns, true);
    RETURN ARRAY[r[1]] || r;
  END IF;
  INSERT INTO {{S}}.{{T}} (key, kind)
    SELECT DISTINCT k, kd FROM unnest(p_keys, p_kinds) AS u(k, kd) ORDER BY 1, 2
    ON CONFLICT DO NOTHING;
  PERFORM 1 FROM {{S}}.{{T}} t
    WHERE (t.key, t.kind) IN (SELECT k, kd FROM unnest(p_keys, p_kinds) AS u(k, kd))
    ORDER BY t.key, t.kind FOR UPDATE;
  BEGIN
    FOR i IN 1 .. n LOOP
      r := {{S}}.{{P}}check(p_keys[i], p_kinds[i], p_a[i], p_b[i], p_cost[i], p_token, now_ns, true);
      out_ := out_ || r;
      IF r[1] = 0 THEN
        RAISE EXCEPTION USING ERRCODE = 'RSDNY'; -- undo the checks that passed
      END IF;
    END LOOP;
    RETURN out_;
  EXCEPTION WHEN SQLSTATE 'RSDNY' THEN
    allowed := false;
  END;
  out_ := ARRAY[0]::bigint[];
  FOR i IN 1 .. n LOOP
    out_ := out_ || {{S}}.{{P}}check(p_keys[i], p_kinds[i], p_a[i], p_b[i], p_cost[i], p_token, now_ns, false);
  END LOOP;
  RETURN out_;
END $$;

-- _release removes one lease and notifies waiters; idempotent.
CREATE OR REPLACE FUNCTION {{S}}.{{P}}release(p_key text, p_lease text, p_channel text) RETURNS boolean
LANGUAGE plpgsql AS $$
DECLARE v_ids text[]; v_exps bigint[]; i int;
BEGIN
  PERFORM set_config('synchronous_commit', 'off', true);
  SELECT lease_ids, lease_exps INTO v_ids, v_exps FROM {{S}}.{{T}} WHERE key = p_key AND kind = 3 FOR UPDATE;
  i := array_position(v_ids, p_lease);
  IF i IS NULL THEN RETURN false; END IF;
  UPDATE {{S}}.{{T}} SET lease_ids = v_ids[:i-1] || v_ids[i+1:], lease_exps = v_exps[:i-1] || v_exps[i+1:]
    WHERE key = p_key AND kind = 3;
  PERFORM pg_notify(p_channel, p_key);
  RETURN true;
END $$;

-- _extend moves a live lease's expiry to now + ttl.
CREATE OR REPLACE FUNCTION {{S}}.{{P}}extend(p_key text, p_lease text, p_ttl bigint, p_now bigint) RETURNS boolean
LANGUAGE plpgsql AS $$
DECLARE v_ids text[]; v_exps bigint[]; i int;
  now_ns bigint := coalesce(p_now, (extract(epoch FROM clock_timestamp()) * 1000000)::bigint * 1000);
BEGIN
  SELECT lease_ids, lease_exps INTO v_ids, v_exps FROM {{S}}.{{T}} WHERE key = p_key AND kind = 3 FOR UPDATE;
  i := array_position(v_ids, p_lease);
  IF i IS NULL OR v_exps[i] <= now_ns THEN RETURN false; END IF;
  v_exps[i] := now_ns + p_ttl;
  UPDATE {{S}}.{{T}} SET lease_exps = v_exps,
    expires_at = (SELECT max(e) FROM unnest(v_exps) e) WHERE key = p_key AND kind = 3;
  RETURN true;
END $$;
