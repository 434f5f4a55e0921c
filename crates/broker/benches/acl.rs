//! Benchmarks of the Mosquitto file backend (`MosquittoFile`): rendering the ACL
//! and password files from the grants as a rewrite that reads the whole fleet
//! does (checks, the in-memory fleet, the texts), for 1,000 and 100,000 devices;
//! and the full rebuild of 100,000 devices through `sync` (render, write,
//! `fsync` and rename of both files and a flush of their directory, in a temp
//! dir, no Mosquitto to reload).
//!
//! Each device has the default grant (`devices/<id>/#` both ways and read on
//! `iotsupport/<id>/rotation`) and a client certificate (no password line), as a
//! registration with no device model gives it.
//!
//! `cargo bench -p onboard-broker --bench acl -- --warm-up-time 1 --measurement-time 5`

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::hint::black_box;
use std::sync::Arc;

use criterion::{criterion_group, criterion_main, BatchSize, Criterion};
use onboard_broker::testing::{render_files, SERVICE_ACL_PREAMBLE};
use onboard_broker::{FileConfig, MosquittoFile, Reload};
use onboard_domain::{BrokerAccess, BrokerGrant, DeviceId, Serial};

fn grant(n: u32) -> BrokerGrant {
    let id: DeviceId = format!("3f0c2a8e-0000-7000-8000-{n:012}").parse().unwrap();
    BrokerGrant {
        device_id: id,
        serial: Serial::parse(&format!("SN-{n}")).unwrap(),
        client_id: id.to_string(),
        publish: vec![format!("devices/{id}/#")],
        subscribe: vec![
            format!("devices/{id}/#"),
            format!("iotsupport/{id}/rotation"),
        ],
        max_qos: 1,
        retain_allowed: false,
        password_hash: None,
    }
}

fn fleet(devices: u32) -> Vec<BrokerGrant> {
    (0..devices).map(grant).collect()
}

fn config(dir: &std::path::Path) -> FileConfig {
    let mut config = FileConfig::new(dir.join("acl"), dir.join("mosquitto.pid"));
    config.reload = Reload::None;
    config.password_file = Some(dir.join("passwd"));
    config.acl_preamble = SERVICE_ACL_PREAMBLE.into();
    config
}

fn rendering(c: &mut Criterion) {
    let dir = tempfile::tempdir().unwrap();
    let config = config(dir.path());
    let mut group = c.benchmark_group("acl_render");
    for devices in [1_000, 100_000] {
        let grants = fleet(devices);
        // A 100,000-device sample takes a good part of a second.
        group.sample_size(if devices > 10_000 { 10 } else { 100 });
        group.bench_function(devices.to_string(), |b| {
            b.iter_batched(
                || grants.clone(),
                |grants| black_box(render_files(&config, grants).unwrap()),
                BatchSize::LargeInput,
            )
        });
    }
    group.finish();
}

fn rebuild(c: &mut Criterion) {
    let dir = tempfile::tempdir().unwrap();
    let grants = fleet(100_000);
    let file = MosquittoFile::new(config(dir.path()), Arc::new(|| Ok(Vec::new())));
    let mut group = c.benchmark_group("acl_rebuild");
    group.sample_size(10);
    group.bench_function("100000", |b| b.iter(|| file.sync(&grants).unwrap()));
    group.finish();
    let acl = std::fs::read(dir.path().join("acl")).unwrap();
    assert!(acl.len() > 100_000 * 100, "{} bytes", acl.len());
}

criterion_group!(benches, rendering, rebuild);
criterion_main!(benches);
