//! Bulk import as a stream of stored chunks, and a serial taken while it runs.

use onboard_core::domain::*;
use onboard_core::{Actor, ImportOutcome, ImportRow, NewDeviceRequest, IMPORT_CHUNK};
use onboard_registry::testing::TestBackend;

use super::fixture;

fn row(i: usize) -> ImportRow {
    ImportRow {
        line: i + 2,
        request: NewDeviceRequest {
            name: format!("dev{i}"),
            serial: Some(format!("STREAM-{i:05}")),
            ..Default::default()
        },
    }
}

/// Chunks arrive in line order, each once it is stored; a serial another
/// operator registers while the import runs is counted as existing, and its
/// chunk's other rows are created all the same.
pub fn chunks_stream_in_order_and_a_serial_taken_meanwhile_costs_no_neighbour(
    backend: TestBackend,
) {
    let f = fixture(backend, |_| {});
    let n = 2 * IMPORT_CHUNK;
    let rows: Vec<ImportRow> = (0..n).map(row).collect();
    // In the second chunk: built before or after the first is handed over.
    let taken = IMPORT_CHUNK + 10;
    let mut calls = Vec::new();
    let mut outcomes = Vec::new();
    f.onboard
        .import_devices_streaming(&Actor::cli(), &rows, &mut |done, results| {
            if calls.len() == 1 {
                f.onboard
                    .register_device(&Actor::cli(), &row(taken).request)
                    .unwrap();
            }
            calls.push((done, results.len()));
            outcomes.extend(results.into_iter().map(|r| (r.line, r.outcome)));
        })
        .unwrap();
    // Nothing refused up front, then one call per chunk.
    assert_eq!(
        calls,
        [(0, 0), (IMPORT_CHUNK, IMPORT_CHUNK), (n, IMPORT_CHUNK)]
    );
    let lines: Vec<usize> = outcomes.iter().map(|(l, _)| *l).collect();
    assert_eq!(lines, (2..n + 2).collect::<Vec<_>>(), "line order");
    for (line, outcome) in &outcomes {
        let existing = *line == taken + 2;
        match outcome {
            ImportOutcome::Exists => assert!(existing, "line {line}"),
            ImportOutcome::Created(r) => {
                assert!(!existing, "line {line}");
                assert!(r.bundle_zip.starts_with(b"PK"));
            }
            ImportOutcome::Failed(m) => panic!("line {line}: {m}"),
        }
    }
    let stored = f
        .onboard
        .devices(&DeviceFilter::default(), &PageRequest::first(500).unwrap())
        .unwrap();
    assert_eq!(stored.items.len(), n);
}
