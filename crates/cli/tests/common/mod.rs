//! Helpers shared by the integration tests that run `alluvium` against the test services.
#![allow(dead_code)]

use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::process::Command;

/// A variable exported by `scripts/services.sh`; the tests need the real services.
pub fn service_env(name: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| {
        panic!("{name} is not set: start the test services with `scripts/services.sh up` (or run scripts/test.sh)")
    })
}

/// The Kafka-protocol broker of the test services.
pub fn brokers() -> String {
    service_env("ALLUVIUM_KAFKA_BROKERS")
}

/// The public sample case folder, copied into the repository.
pub fn case() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/sample-small")
}

/// A name no other test (or earlier run) uses; valid for topics and database names.
pub fn unique(name: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    format!("{name}_{}_{}", std::process::id(), nanos % 1_000_000_000)
}

/// The `alluvium` binary with `args`, pointed at the test broker, logging errors only.
pub fn alluvium<I, S>(args: I) -> Command
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    let mut c = Command::new(env!("CARGO_BIN_EXE_alluvium"));
    c.args(args)
        .env("ALLUVIUM_KAFKA_BROKERS", brokers())
        .env("RUST_LOG", "error");
    c
}

/// Runs `alluvium` and asserts success.
pub fn ok<I, S>(args: I)
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    let out = alluvium(args).output().expect("running alluvium");
    assert!(
        out.status.success(),
        "alluvium failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// `alluvium fixture load` of the sample into topics named `<prefix>orders`, ...
pub fn load_sample(prefix: &str) {
    ok([
        OsStr::new("fixture"),
        OsStr::new("load"),
        case().as_os_str(),
        OsStr::new("--topic-prefix"),
        OsStr::new(prefix),
    ]);
}

/// The records of a CSV text, sorted (compare as multisets), optionally without the last column.
pub fn sorted_csv(text: &str, header: bool, drop_last: bool) -> Vec<Vec<String>> {
    let mut r = csv::ReaderBuilder::new()
        .has_headers(header)
        .from_reader(text.as_bytes());
    let mut rows: Vec<Vec<String>> = r
        .records()
        .map(|rec| {
            let mut v: Vec<String> = rec
                .expect("a CSV record")
                .iter()
                .map(str::to_owned)
                .collect();
            if drop_last {
                v.pop();
            }
            v
        })
        .collect();
    rows.sort();
    rows
}
