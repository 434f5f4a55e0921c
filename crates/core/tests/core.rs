//! Use cases against real databases (both backends), real files and the openssl CLI.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;
use std::process::Command;
use std::sync::Arc;

use chrono::{Duration, TimeZone, Utc};
use onboard_core::domain::ManualClock;
use onboard_core::{CaInit, CoreError, Onboard, Settings};
use onboard_registry::testing::{TestBackend, TestDb};

#[path = "core/aws.rs"]
mod aws;
#[path = "core/broker_races.rs"]
mod broker_races;
#[path = "core/firmware.rs"]
mod firmware;
#[path = "core/import.rs"]
mod import;
#[path = "core/lifecycle.rs"]
mod lifecycle;
#[path = "core/mqtt.rs"]
mod mqtt;
#[path = "core/notify.rs"]
mod notify;
#[path = "core/possession.rs"]
mod possession;
#[path = "core/register.rs"]
mod register;
#[path = "core/rotation.rs"]
mod rotation;

macro_rules! on_both_backends {
    ($tests:ident for $module:ident: $($name:ident),* $(,)?) => {
        mod $tests {
            mod sqlite {
                $(#[test] fn $name() { super::super::$module::$name(super::super::TestBackend::Sqlite) })*
            }
            mod postgres {
                $(#[test] fn $name() { super::super::$module::$name(super::super::TestBackend::Postgres) })*
            }
        }
    };
}

on_both_backends!(broker_race_tests for broker_races:
    a_device_revoked_while_acl_sync_writes_loses_its_grant,
    only_a_device_without_a_model_skips_its_broker_effect,
);

on_both_backends!(aws_tests for aws:
    own_ca_registration_puts_our_certificate_in_aws_and_revoke_and_decommission_follow,
    aws_issued_registration_hands_out_the_aws_certificate_and_amazons_root,
    a_failing_aws_step_leaves_no_device_no_aws_resources_and_no_key_use,
    aws_going_away_mid_registration_fails_fast_and_the_intent_finishes_later,
    a_crash_between_aws_steps_is_removed_by_the_reconciler,
    the_sweep_removes_aws_resources_that_have_no_device,
    operator_registration_and_a_new_certificate_reach_aws_after_the_commit,
);

on_both_backends!(import_tests for import:
    chunks_stream_in_order_and_a_serial_taken_meanwhile_costs_no_neighbour,
);

on_both_backends!(lifecycle_tests for lifecycle:
    operator_registration_makes_a_bundle_an_independent_tool_opens,
    bundle_links_work_once_and_expire,
    a_bundle_link_downloaded_concurrently_is_taken_once,
    revocation_puts_the_serial_in_the_crl_and_is_idempotent,
    decommissioning_keeps_the_record_and_edits_are_validated,
    import_of_a_thousand_rows_with_ten_bad_ones,
    unactivated_devices_are_reported_then_rolled_back,
    model_templates_shape_grants_and_follow_updates,
    password_devices_from_import_and_a_model_default,
    password_devices_are_refused_with_the_dynsec_broker,
);

on_both_backends!(firmware_tests for firmware:
    an_upload_is_stored_by_hash_and_shown_on_the_model,
    rejected_uploads_name_the_problem_and_leave_nothing,
);

on_both_backends!(mqtt_tests for mqtt:
    devices_reach_their_topics_activate_and_are_cut_off_by_revocation,
    a_broker_failure_after_the_commit_is_repaired_by_the_reconciler,
    mosquitto_starts_on_a_fresh_install_with_the_documented_config,
    a_password_device_logs_in_with_its_secret_and_a_new_one_replaces_it,
);

#[test]
fn sqlite_the_broker_accepts_devices_after_more_than_one_crl_validity() {
    mqtt::the_broker_accepts_devices_after_more_than_one_crl_validity(TestBackend::Sqlite);
}

on_both_backends!(notify_tests for notify:
    a_device_is_notified_renews_reconnects_and_acknowledges,
    a_broker_down_at_the_start_is_notified_by_a_later_cycle,
    a_password_device_rotates_its_secret_and_a_timeout_restores_the_old_one,
    password_devices_wait_for_a_secret_key,
    a_certificate_timeout_leaves_the_old_certificate_working_then_a_retry_completes,
);

on_both_backends!(possession_tests for possession:
    a_lost_answer_is_answered_again_with_the_same_certificate,
    another_key_pair_for_a_taken_serial_is_a_possible_takeover,
    a_single_use_key_re_registers_its_own_serial_until_activation,
    a_failure_before_the_commit_leaves_nothing,
    broker_and_cloud_failures_after_the_commit_converge_later,
    revocation_racing_a_re_registration_never_leaves_an_active_certificate,
    the_crl_is_refreshed_before_half_its_validity,
    concurrent_revocations_all_reach_the_crl,
    serials_shaped_like_device_ids_are_refused,
    an_older_crl_never_replaces_a_newer_one_in_the_broker,
    a_renewal_retires_the_old_certificate_after_the_grace_period,
);

on_both_backends!(rotation_tests for rotation:
    a_cycle_times_out_restores_the_old_certificate_retries_and_completes,
    the_first_use_of_the_new_certificate_completes_the_rotation,
    triggers_queue_only_what_may_be_queued_and_status_lists_states,
    concurrent_cycles_never_exceed_max_in_flight,
    password_devices_and_devices_out_of_service_are_not_rotated,
);

#[test]
#[ignore = "a benchmark: one million device rows (docs/benchmarks.md)"]
fn postgres_a_million_devices_one_cycle_each() {
    rotation::a_million_devices_one_cycle_each(TestBackend::Postgres);
}

on_both_backends!(register_tests for register:
    a_device_registers_with_a_csr_and_the_certificate_verifies,
    fleet_counts_list_every_status_and_rotation_state,
    acl_sync_without_a_broker_counts_the_granted_devices,
    a_percent_in_the_topic_prefix_stops_pattern_mode,
    without_a_csr_the_server_generates_the_key,
    every_key_failure_is_401_with_its_reason_audited,
    bad_input_costs_no_key_use_and_leaves_nothing,
    fifty_concurrent_registrations_take_exactly_max_uses,
    ten_concurrent_registrations_of_one_serial_make_one_device,
);

#[derive(Debug)]
pub struct Fixture {
    pub onboard: Onboard,
    pub clock: Arc<ManualClock>,
    pub db: TestDb,
    pub dir: tempfile::TempDir,
}

pub fn fixture(backend: TestBackend, configure: impl FnOnce(&mut Settings)) -> Fixture {
    let db = TestDb::migrated(backend);
    let dir = tempfile::tempdir().unwrap();
    let mut settings = Settings::default().with_files_under(dir.path());
    settings.database.url = db.url.clone();
    configure(&mut settings);
    let clock = Arc::new(ManualClock::new(
        Utc.with_ymd_and_hms(2026, 11, 23, 8, 0, 0).unwrap(),
    ));
    let onboard = Onboard::with_clock(settings, clock.clone()).unwrap();
    shared_ca(&onboard, backend);
    Fixture {
        onboard,
        clock,
        db,
        dir,
    }
}

/// On PostgreSQL Onboard never creates a CA by itself (replicas would each make
/// their own): the tests make it first, as `onboardctl ca init` does.
pub fn shared_ca(onboard: &Onboard, backend: TestBackend) {
    if backend == TestBackend::Postgres {
        onboard.init_ca(&CaInit::default()).unwrap();
    }
}

pub fn openssl(args: &[&str]) -> (bool, String) {
    let out = Command::new("openssl").args(args).output().unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr),
    )
}

pub fn write(dir: &Path, name: &str, text: &str) -> String {
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path.display().to_string()
}

#[test]
fn the_ca_is_created_on_first_use_encrypted_and_loaded_after() {
    let f = fixture(TestBackend::Sqlite, |s| {
        s.ca.passphrase = secret("correct horse")
    });
    let ca = f.onboard.ca().unwrap();
    let key = std::fs::read_to_string(f.dir.path().join("ca/ca.key")).unwrap();
    assert!(key.starts_with("-----BEGIN ENCRYPTED PRIVATE KEY-----"));
    assert!(ca.subject().contains("Onboard Device CA"));
    assert!(f.onboard.ca_summary().unwrap().key_encrypted);

    // A second process with the same settings loads the same CA.
    let mut settings = f.onboard.settings().clone();
    let again = Onboard::open(settings.clone()).unwrap().ca().unwrap();
    assert_eq!(again.chain_pem(), ca.chain_pem());

    // A wrong passphrase stops it with a message that says so, and no secret.
    settings.ca.passphrase = secret("wrong horse");
    let err = Onboard::open(settings.clone()).unwrap().ca().unwrap_err();
    assert!(matches!(err, CoreError::Setup(_)), "{err:?}");
    let msg = err.to_string();
    assert!(msg.contains("passphrase"), "{msg}");
    assert!(!msg.contains("wrong horse") && !msg.contains("correct horse"));

    // No passphrase for an encrypted key: a clear error too.
    settings.ca.passphrase = secret("");
    let msg = Onboard::open(settings)
        .unwrap()
        .ca()
        .unwrap_err()
        .to_string();
    assert!(msg.contains("no passphrase"), "{msg}");
}

#[test]
fn on_postgres_the_ca_is_never_created_by_itself_only_by_ca_init() {
    let db = TestDb::migrated(TestBackend::Postgres);
    let dir = tempfile::tempdir().unwrap();
    let mut settings = Settings::default().with_files_under(dir.path());
    settings.database.url = db.url.clone();
    let onboard = Onboard::open(settings.clone()).unwrap();
    let err = onboard.ca().unwrap_err();
    assert!(matches!(err, CoreError::Setup(_)), "{err:?}");
    let msg = err.to_string();
    assert!(
        msg.contains("onboardctl ca init") && msg.contains("mount") && msg.contains("ca.dir"),
        "{msg}"
    );
    // Nothing was written: no key, no certificate.
    let ca_dir = settings.ca_dir();
    let files: Vec<_> = std::fs::read_dir(&ca_dir)
        .map(|d| d.flatten().map(|e| e.file_name()).collect())
        .unwrap_or_default();
    assert!(files.is_empty(), "{files:?}");

    // What `onboardctl ca init` makes, every other process (replica) loads.
    let made = onboard.init_ca(&CaInit::default()).unwrap();
    let replica = Onboard::open(settings).unwrap().ca().unwrap();
    assert_eq!(replica.chain_pem(), made.chain_pem());
}

#[test]
fn a_key_that_does_not_match_the_certificate_is_refused() {
    let f = fixture(TestBackend::Sqlite, |_| {});
    f.onboard.ca().unwrap();
    // Replace the key with another CA's key.
    let other = fixture(TestBackend::Sqlite, |_| {});
    other.onboard.ca().unwrap();
    std::fs::copy(
        other.dir.path().join("ca/ca.key"),
        f.dir.path().join("ca/ca.key"),
    )
    .unwrap();
    let err = Onboard::open(f.onboard.settings().clone())
        .unwrap()
        .ca()
        .unwrap_err();
    assert!(err.to_string().contains("does not match"), "{err}");
}

#[test]
fn ca_init_with_intermediate_refuses_to_overwrite() {
    let f = fixture(TestBackend::Sqlite, |_| {});
    let ca = f.onboard.init_ca(&CaInit { intermediate: true }).unwrap();
    assert!(ca.has_intermediate());
    assert!(f.dir.path().join("ca/root.key").is_file());
    let err = f
        .onboard
        .init_ca(&CaInit {
            intermediate: false,
        })
        .unwrap_err();
    assert!(matches!(err, CoreError::Conflict(_)), "{err:?}");
    let summary = f.onboard.ca_summary().unwrap();
    assert_eq!(summary.chain.len(), 2);
    assert!(summary.chain[1].self_signed);
    assert!(summary.crl.is_none());
    assert!(
        !summary.key_encrypted,
        "no passphrase: the key file is plain"
    );
}

#[test]
fn an_existing_ca_made_with_openssl_is_imported() {
    let f = fixture(TestBackend::Sqlite, |s| {
        s.ca.passphrase = secret("pw-at-rest")
    });
    let tmp = f.dir.path();
    let key = tmp.join("ext.key").display().to_string();
    let crt = tmp.join("ext.crt").display().to_string();
    let (ok, out) = openssl(&[
        "req",
        "-x509",
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:P-256",
        "-nodes",
        "-keyout",
        &key,
        "-out",
        &crt,
        "-days",
        "3650",
        "-subj",
        "/CN=Factory Root",
        "-addext",
        "basicConstraints=critical,CA:TRUE",
        "-addext",
        "keyUsage=critical,keyCertSign,cRLSign",
    ]);
    assert!(ok, "{out}");
    let ca = f
        .onboard
        .import_ca(
            &std::fs::read(&crt).unwrap(),
            &std::fs::read(&key).unwrap(),
            None,
        )
        .unwrap();
    assert!(ca.subject().contains("Factory Root"));
    let stored = std::fs::read_to_string(f.dir.path().join("ca/ca.key")).unwrap();
    assert!(stored.starts_with("-----BEGIN ENCRYPTED PRIVATE KEY-----"));
}

fn crls_are_numbered_refreshed_and_verify(backend: TestBackend) {
    let f = fixture(backend, |s| s.ca.crl_validity_hours = 24);
    let first = f.onboard.current_crl().unwrap();
    assert_eq!(first.number, 1);
    assert_eq!(first.next_update - first.this_update, Duration::hours(24));
    // Within the first half of its validity the same CRL is served.
    f.clock.advance(Duration::hours(11));
    assert_eq!(f.onboard.current_crl().unwrap(), first);
    // After that a new one is signed with the next number.
    f.clock.advance(Duration::hours(2));
    let second = f.onboard.current_crl().unwrap();
    assert_eq!(second.number, 2);
    assert_eq!(f.onboard.publish_crl().unwrap().number, 3);
    assert_eq!(f.onboard.ca_summary().unwrap().crl.unwrap().number, 3);

    let chain = write(
        f.dir.path(),
        "chain.pem",
        f.onboard.ca().unwrap().chain_pem(),
    );
    let crl = write(f.dir.path(), "crl.pem", &second.pem);
    let (ok, out) = openssl(&[
        "crl", "-in", &crl, "-CAfile", &chain, "-verify", "-noout", "-text",
    ]);
    assert!(ok, "{out}");
    assert!(out.contains("verify OK"), "{out}");
    let (ok, number) = openssl(&["crl", "-in", &crl, "-noout", "-crlnumber"]);
    assert!(ok, "{number}");
    assert_eq!(number.trim(), "crlNumber=0x02");
}

#[test]
fn sqlite_crls_are_numbered_refreshed_and_verify() {
    crls_are_numbered_refreshed_and_verify(TestBackend::Sqlite);
}

#[test]
fn postgres_crls_are_numbered_refreshed_and_verify() {
    crls_are_numbered_refreshed_and_verify(TestBackend::Postgres);
}

fn secret(s: &str) -> onboard_core::Secret {
    serde_json::from_value(serde_json::json!(s)).unwrap()
}

/// No date bombs: a test that fixes the clock (a `ManualClock` at a set date)
/// and has openssl verify what it issued must verify at that time (`-attime`),
/// or it starts failing once the real date passes the certificates' validity.
#[test]
fn tests_with_a_fixed_clock_verify_at_that_time() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let mut files = Vec::new();
    for top in ["crates", "bins"] {
        for krate in std::fs::read_dir(root.join(top)).unwrap() {
            let tests = krate.unwrap().path().join("tests");
            let mut stack = vec![tests];
            while let Some(dir) = stack.pop() {
                let Ok(entries) = std::fs::read_dir(&dir) else {
                    continue;
                };
                for e in entries {
                    let p = e.unwrap().path();
                    if p.is_dir() {
                        stack.push(p);
                    } else if p.extension().is_some_and(|x| x == "rs") {
                        files.push(p);
                    }
                }
            }
        }
    }
    assert!(files.len() > 10, "found only {files:?}");
    let mut bombs = Vec::new();
    for file in &files {
        let text = std::fs::read_to_string(file).unwrap();
        if !text.contains("ManualClock::new(") {
            continue;
        }
        let lines: Vec<&str> = text.lines().collect();
        for (i, line) in lines.iter().enumerate() {
            if line.contains("\"verify\"") {
                let call = lines[i..(i + 12).min(lines.len())].join("\n");
                if !call.contains("\"-attime\"") {
                    bombs.push(format!("{}:{}", file.display(), i + 1));
                }
            }
        }
    }
    assert!(
        bombs.is_empty(),
        "openssl verify without -attime under a fixed clock: {bombs:?}"
    );
}
