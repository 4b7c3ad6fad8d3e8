//! Paths the tests read (the repository root, the Istio demo tokens) and scratch directories
//! under `CARGO_TARGET_TMPDIR`.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};

/// The repository root (examples, testdata).
pub fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// A fresh, empty directory `NAME-PID-N` under `CARGO_TARGET_TMPDIR`. The process id and a
/// counter keep directories apart: test binaries share the directory, a runner that starts
/// every test in its own process (nextest) repeats counters, and a watched policy file must
/// never be overwritten by another test.
pub fn tmp(name: &str) -> PathBuf {
    static N: AtomicUsize = AtomicUsize::new(0);
    let d = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!(
        "{name}-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::SeqCst)
    ));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// Copies the files of `from` (not its subdirectories) into `to`.
pub fn copy_dir(from: &Path, to: &Path) {
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        std::fs::copy(e.path(), to.join(e.file_name())).unwrap();
    }
}

/// A token of Istio's demo (`testdata/istio-demo/NAME`), without the trailing newline.
pub fn istio_demo_token(name: &str) -> String {
    std::fs::read_to_string(root().join("testdata/istio-demo").join(name))
        .unwrap()
        .trim()
        .to_string()
}

/// Istio's `demo.jwt`: issuer and subject `testing@secure.istio.io`, no groups or scopes.
pub fn demo_token() -> String {
    istio_demo_token("demo.jwt")
}

/// Istio's `groups-scope.jwt`: the same issuer and subject, with `groups: [group1, group2]`
/// and `scope: [scope1, scope2]`.
pub fn groups_token() -> String {
    istio_demo_token("groups-scope.jwt")
}
