//! Registers devices through the core use case (`Onboard::register`, the code
//! behind `POST /public/v1/register`), for profiling one registration without
//! HTTP. The CSRs are made first, always 200 of them, so that two runs with
//! different counts differ only by the registrations: under
//! `valgrind --tool=callgrind`, (instructions of run B - run A) / (B - A) is the
//! cost of one registration (`docs/benchmarks.md`).
//!
//! `register-profile <database url> <none|file> <count>`: SQLite (`sqlite://...`)
//! or PostgreSQL (an existing, empty database); `file` is the default
//! `mosquitto-file` broker writing its files under a temporary directory (no
//! Mosquitto to reload). Prints how many registrations succeeded.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stdout)]

use onboard_core::settings::BrokerKind;
use onboard_core::{Actor, CaInit, KeyBatchRequest, Onboard, RegisterRequest, Settings};

const CSRS: usize = 200;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let [_, url, broker, count] = args.as_slice() else {
        eprintln!("usage: register-profile <database url> <none|file> <count>");
        std::process::exit(2);
    };
    let count: usize = count.parse().expect("count");
    assert!(count <= CSRS, "at most {CSRS} registrations");
    let dir = tempfile::tempdir().expect("temp dir");
    let mut settings = Settings::default().with_files_under(dir.path());
    settings.database.url = url.clone();
    settings.broker.kind = match broker.as_str() {
        "none" => BrokerKind::None,
        "file" => BrokerKind::MosquittoFile,
        other => panic!("broker {other:?}: none or file"),
    };
    settings.broker.reload_pid_file = String::new();
    let onboard = Onboard::open(settings).expect("settings");
    onboard.migrate().expect("migrations");
    onboard.init_ca(&CaInit::default()).expect("CA");
    let key = onboard
        .create_key_batch(
            &Actor::system(),
            &KeyBatchRequest {
                batch: "profile".into(),
                count: 1,
                max_uses: 1_000_000,
                valid_days: Some(30),
                not_before: None,
                expires_at: None,
                model: None,
            },
        )
        .expect("key")
        .remove(0);
    let csrs: Vec<String> = (0..CSRS)
        .map(|i| {
            onboard_pki::device_key_and_csr(
                onboard_core::domain::KeyAlgorithm::EcdsaP256,
                &format!("SN-{i}"),
            )
            .expect("CSR")
            .1
        })
        .collect();
    let mut ok = 0;
    for (i, csr) in csrs.into_iter().take(count).enumerate() {
        let req = RegisterRequest {
            key: Some(onboard_core::domain::SecretString::new(key.secret.expose())),
            serial: format!("SN-{i:06}"),
            csr: Some(csr),
            ..RegisterRequest::default()
        };
        if onboard.register(req).is_ok() {
            ok += 1;
        }
    }
    println!("registered {ok} of {count}");
}
