-- For an active certificate of a device that holds a newer active one: when the
-- newest of those was created (its renewal's grace period runs from then). NULL
-- for every other certificate. The registry keeps it up to date whenever a
-- device's set of active certificates changes, so the reconciler finds the
-- renewals whose grace is over in this partial index instead of grouping every
-- active certificate of the fleet.
ALTER TABLE certificates ADD COLUMN renewed_at TIMESTAMP;
UPDATE certificates SET renewed_at = (
    SELECT max(n.created_at) FROM certificates n
    WHERE n.device_id = certificates.device_id
      AND n.status = 'active'
      AND n.created_at > certificates.created_at
) WHERE status = 'active';
CREATE INDEX certificates_renewed_idx ON certificates (renewed_at) WHERE renewed_at IS NOT NULL;
