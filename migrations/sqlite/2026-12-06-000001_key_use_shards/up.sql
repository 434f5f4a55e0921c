-- A key's uses are counted in up to 16 rows of their own (shards), each with its
-- share of the key's max_uses, instead of one counter on the key's row: every
-- registration with a batch key took that one row's lock and held it through its
-- commit, so concurrent registrations of one batch ran one at a time. A
-- registration takes a use from a shard no other transaction holds; the shards'
-- max_uses add up to the key's, so the key is never used more often than that.
-- `active` is the key's, copied here so that the statement taking a use checks it
-- on the very row it locks (a deactivation updates both and waits for the uses
-- in flight). A key's uses are the sum of its shards'.
CREATE TABLE bootstrap_key_uses (
    key_id   TEXT NOT NULL REFERENCES bootstrap_keys (id) ON DELETE CASCADE,
    shard    INTEGER NOT NULL CHECK (shard >= 0),
    max_uses INTEGER NOT NULL CHECK (max_uses > 0),
    uses     INTEGER NOT NULL DEFAULT 0 CHECK (uses >= 0 AND uses <= max_uses),
    active   BOOLEAN NOT NULL,
    PRIMARY KEY (key_id, shard)
);
-- Shard i of a key with M uses in n = min(M, 16) shards holds M / n uses, one more
-- for the first M % n; the uses already taken fill the shards in order.
INSERT INTO bootstrap_key_uses (key_id, shard, max_uses, uses, active)
SELECT k.id, s.i, k.q + CASE WHEN s.i < k.r THEN 1 ELSE 0 END,
       max(0, min(k.q + CASE WHEN s.i < k.r THEN 1 ELSE 0 END,
                         k.uses - (s.i * k.q + min(s.i, k.r)))),
       k.active
FROM (SELECT id, uses, active, min(max_uses, 16) AS n,
             max_uses / min(max_uses, 16) AS q, max_uses % min(max_uses, 16) AS r
      FROM bootstrap_keys) AS k
JOIN (SELECT column1 AS i FROM (VALUES (0), (1), (2), (3), (4), (5), (6), (7), (8), (9), (10), (11),
                                     (12), (13), (14), (15))) AS s ON s.i < k.n;
ALTER TABLE bootstrap_keys DROP COLUMN uses;
