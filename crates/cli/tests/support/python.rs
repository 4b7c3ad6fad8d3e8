//! The Python that runs test oracles (HTTP/2 frames built with `hyperframe` and `hpack`, a
//! metrics parser with `prometheus_client`), found the same way by every test that needs one.
//!
//! The Python is `$MESHGUARD_PYTHON`, else `python3` on `PATH`. When it cannot import the
//! modules a test needs, the test passes after a `SKIPPED` note on the process's stderr, or
//! fails when `MESHGUARD_REQUIRE_PYTHON=1` (`MESHGUARD_REQUIRE_PYTHON_H2=1` is the older name,
//! still honoured): set it where the modules are installed, so that a broken Python is noticed
//! instead of skipping.

use std::io::Write;
use std::process::{Command, Stdio};

/// The Python to use when it can import `modules` (`"hyperframe, hpack"`); otherwise `None`
/// after the note, or a panic when Python is required. `test` names the test in the note.
pub fn python_with(test: &str, modules: &str) -> Option<String> {
    let python = std::env::var("MESHGUARD_PYTHON").unwrap_or_else(|_| "python3".into());
    let found = Command::new(&python)
        .args(["-c", &format!("import {modules}")])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if found {
        return Some(python);
    }
    let note = format!(
        "SKIPPED {test}: {python} cannot import {modules} (set MESHGUARD_PYTHON to a Python that can)"
    );
    let required = ["MESHGUARD_REQUIRE_PYTHON", "MESHGUARD_REQUIRE_PYTHON_H2"]
        .iter()
        .any(|v| std::env::var(v).as_deref() == Ok("1"));
    if required {
        panic!("{note}; MESHGUARD_REQUIRE_PYTHON=1 makes this a failure");
    }
    // Straight to the process's stderr: the test harness captures `eprintln!` (and shows it
    // only for failed tests), and a skipped check must be seen.
    let _ = writeln!(std::io::stderr(), "{note}");
    None
}
