ALTER TABLE bootstrap_keys ADD COLUMN uses INTEGER NOT NULL DEFAULT 0 CHECK (uses >= 0);
UPDATE bootstrap_keys SET uses = (
    SELECT COALESCE(SUM(u.uses), 0) FROM bootstrap_key_uses u WHERE u.key_id = bootstrap_keys.id
);
DROP TABLE bootstrap_key_uses;
