//! The tables of `migrations/{postgres,sqlite}`, in the column types both backends
//! share. `tests/registry.rs` checks this file against the migrated databases.

diesel::table! {
    device_models (code) {
        code -> Text,
        name -> Text,
        description -> Text,
        publish_topics -> Text,
        subscribe_topics -> Text,
        max_qos -> Integer,
        retain_allowed -> Bool,
        config -> Text,
        created_at -> Timestamp,
        updated_at -> Timestamp,
        credential -> Text,
    }
}

diesel::table! {
    bootstrap_keys (id) {
        id -> Text,
        batch -> Text,
        prefix -> Text,
        key_hash -> Text,
        model_code -> Nullable<Text>,
        max_uses -> Integer,
        not_before -> Timestamp,
        expires_at -> Timestamp,
        active -> Bool,
        created_at -> Timestamp,
        updated_at -> Timestamp,
    }
}

diesel::table! {
    bootstrap_key_uses (key_id, shard) {
        key_id -> Text,
        shard -> Integer,
        max_uses -> Integer,
        uses -> Integer,
        active -> Bool,
    }
}

diesel::table! {
    devices (id) {
        id -> Text,
        serial -> Text,
        name -> Text,
        model_code -> Nullable<Text>,
        location -> Text,
        firmware_version -> Text,
        status -> Text,
        bootstrap_key_id -> Nullable<Text>,
        batch -> Nullable<Text>,
        config -> Text,
        metadata -> Text,
        created_at -> Timestamp,
        updated_at -> Timestamp,
        activated_at -> Nullable<Timestamp>,
        last_seen_at -> Nullable<Timestamp>,
        decommissioned_at -> Nullable<Timestamp>,
        credential -> Text,
    }
}

diesel::table! {
    certificates (id) {
        id -> Text,
        device_id -> Text,
        serial -> Text,
        fingerprint -> Text,
        subject -> Text,
        issuer -> Text,
        key_algorithm -> Text,
        not_before -> Timestamp,
        not_after -> Timestamp,
        status -> Text,
        revoked_at -> Nullable<Timestamp>,
        revocation_reason -> Nullable<Text>,
        pem -> Text,
        created_at -> Timestamp,
        renewed_at -> Nullable<Timestamp>,
    }
}

diesel::table! {
    credential_bundles (id) {
        id -> Text,
        device_id -> Text,
        token_hash -> Text,
        content -> Nullable<Binary>,
        expires_at -> Timestamp,
        downloaded_at -> Nullable<Timestamp>,
        created_at -> Timestamp,
    }
}

diesel::table! {
    mqtt_credentials (id) {
        id -> Text,
        device_id -> Text,
        username -> Text,
        password_hash -> Text,
        active -> Bool,
        created_at -> Timestamp,
        updated_at -> Timestamp,
    }
}

diesel::table! {
    rotations (device_id) {
        device_id -> Text,
        state -> Text,
        queued_at -> Nullable<Timestamp>,
        started_at -> Nullable<Timestamp>,
        deadline_at -> Nullable<Timestamp>,
        completed_at -> Nullable<Timestamp>,
        attempts -> Integer,
        old_secret_encrypted -> Nullable<Binary>,
        new_certificate_id -> Nullable<Text>,
        last_error -> Nullable<Text>,
        updated_at -> Timestamp,
        generation -> BigInt,
        notified_at -> Nullable<Timestamp>,
    }
}

diesel::table! {
    rotation_schedule (name) {
        name -> Text,
        last_run_at -> Timestamp,
        updated_at -> Timestamp,
        generation -> BigInt,
        generation_at -> Nullable<Timestamp>,
        cursor_device_id -> Nullable<Text>,
    }
}

diesel::table! {
    audit_events (id) {
        id -> Text,
        occurred_at -> Timestamp,
        actor -> Text,
        action -> Text,
        outcome -> Text,
        reason -> Nullable<Text>,
        device_id -> Nullable<Text>,
        serial -> Nullable<Text>,
        key_prefix -> Nullable<Text>,
        remote_addr -> Nullable<Text>,
        details -> Text,
    }
}

diesel::table! {
    crls (number) {
        number -> BigInt,
        this_update -> Timestamp,
        next_update -> Timestamp,
        der -> Binary,
    }
}

diesel::table! {
    pending_effects (id) {
        id -> Text,
        kind -> Text,
        device_id -> Nullable<Text>,
        created_at -> Timestamp,
        attempts -> Integer,
        last_error -> Nullable<Text>,
        next_attempt_at -> Timestamp,
    }
}

diesel::table! {
    model_firmware (model_code) {
        model_code -> Text,
        version -> Text,
        sha256 -> Text,
        size -> BigInt,
        project -> Text,
        idf_version -> Text,
        uploaded_at -> Timestamp,
    }
}

diesel::table! {
    aws_resources (device_id) {
        device_id -> Text,
        thing_name -> Text,
        thing_arn -> Text,
        certificate_id -> Text,
        certificate_arn -> Text,
        certificate_fingerprint -> Text,
        created_at -> Timestamp,
        updated_at -> Timestamp,
    }
}

diesel::table! {
    console_sessions (id_hash) {
        id_hash -> Text,
        token_name -> Text,
        created_at -> Timestamp,
        last_seen_at -> Timestamp,
    }
}

diesel::joinable!(aws_resources -> devices (device_id));
diesel::joinable!(bootstrap_keys -> device_models (model_code));
diesel::joinable!(devices -> device_models (model_code));
diesel::joinable!(model_firmware -> device_models (model_code));
diesel::joinable!(devices -> bootstrap_keys (bootstrap_key_id));
diesel::joinable!(bootstrap_key_uses -> bootstrap_keys (key_id));
diesel::joinable!(certificates -> devices (device_id));
diesel::joinable!(credential_bundles -> devices (device_id));
diesel::joinable!(mqtt_credentials -> devices (device_id));
diesel::joinable!(rotations -> devices (device_id));

diesel::allow_tables_to_appear_in_same_query!(
    device_models,
    bootstrap_keys,
    bootstrap_key_uses,
    devices,
    certificates,
    credential_bundles,
    mqtt_credentials,
    rotations,
    rotation_schedule,
    audit_events,
    crls,
    pending_effects,
    model_firmware,
    aws_resources,
    console_sessions,
);
