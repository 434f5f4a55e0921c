DROP INDEX certificates_renewed_idx;
ALTER TABLE certificates DROP COLUMN renewed_at;
