//! Helpers shared by the integration tests.
#![allow(dead_code)]

use std::io::Write as _;
use std::path::PathBuf;
use std::process::{Command, Stdio};

/// `testdata/<rel>` at the workspace root.
pub fn testdata(rel: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../testdata")
        .join(rel)
}

pub fn read(rel: &str) -> String {
    let p = testdata(rel);
    std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("reading {}: {e}", p.display()))
}

pub fn read_json(rel: &str) -> serde_json::Value {
    serde_json::from_str(&read(rel)).unwrap_or_else(|e| panic!("parsing {rel}: {e}"))
}

/// Replaces the payload section with `payload_json` (base64url), keeping header and
/// signature: a signed token whose claims were changed.
pub fn swap_payload(token: &str, payload_json: &str) -> String {
    use base64::Engine as _;
    let parts: Vec<&str> = token.split('.').collect();
    assert_eq!(parts.len(), 3);
    let p = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(payload_json);
    format!("{}.{p}.{}", parts[0], parts[2])
}

/// Flips one bit of the decoded payload, re-encodes, keeps header and signature.
pub fn flip_payload_bit(token: &str) -> String {
    use base64::Engine as _;
    let engine = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let parts: Vec<&str> = token.split('.').collect();
    let mut payload = engine.decode(parts[1]).unwrap();
    // Change the case of the first member name's first letter (`"iss"` -> `"Iss"`): one
    // bit differs and the JSON stays valid, so only the signature can catch it.
    let pos = payload
        .iter()
        .position(|b| *b == b'"')
        .map(|q| q + 1)
        .filter(|p| payload.get(*p).is_some_and(u8::is_ascii_alphabetic))
        .expect("payload starts with a member name");
    payload[pos] ^= 0x20;
    format!("{}.{}.{}", parts[0], engine.encode(&payload), parts[2])
}

/// Whether `python3` (the first on `PATH`) can import `modules` (`"jwt, cryptography"`), the
/// Python oracle a test compares meshguard with.
///
/// When it cannot and `MESHGUARD_REQUIRE_PYTHON=1` or one of `require_vars` (such as
/// `MESHGUARD_REQUIRE_PYJWT`) is `1`, as in CI (`.ci/run`), the test fails: a missing oracle
/// must not pass as a check. Otherwise the test is skipped with a `SKIPPED` line written to the
/// process's stderr directly, not through `eprintln!`, which the test harness captures and
/// hides for passing tests: the note shows in a plain `cargo test`.
pub fn python_oracle(test: &str, modules: &str, require_vars: &[&str]) -> bool {
    let importable = Command::new("python3")
        .args(["-c", &format!("import {modules}")])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if importable {
        return true;
    }
    let required: Vec<&str> = std::iter::once("MESHGUARD_REQUIRE_PYTHON")
        .chain(require_vars.iter().copied())
        .filter(|var| std::env::var_os(var).is_some_and(|v| v == "1"))
        .collect();
    assert!(
        required.is_empty(),
        "{test}: python3 cannot import {modules}, and {} requires it \
         (.ci/run installs it into target/ci-venv)",
        required.join(", ")
    );
    let _ = writeln!(
        std::io::stderr(),
        "SKIPPED {test}: python3 cannot import {modules} (.ci/run installs it; \
         MESHGUARD_REQUIRE_PYTHON=1 turns this skip into a failure)"
    );
    false
}
