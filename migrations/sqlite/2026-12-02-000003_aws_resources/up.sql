-- Where a device lives in AWS IoT Core: its Thing and the certificate registered
-- there. Written in the registration's transaction together with the device; removed
-- when the device is decommissioned (and its AWS resources deleted).
CREATE TABLE aws_resources (
    device_id               TEXT PRIMARY KEY REFERENCES devices (id) ON DELETE CASCADE,
    thing_name              TEXT NOT NULL,
    thing_arn               TEXT NOT NULL,
    certificate_id          TEXT NOT NULL,
    certificate_arn         TEXT NOT NULL,
    certificate_fingerprint TEXT NOT NULL,
    created_at              TIMESTAMP NOT NULL,
    updated_at              TIMESTAMP NOT NULL
);
