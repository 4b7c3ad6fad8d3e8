//! JWT attack suite through the real proxy.
//!
//! `testdata/attacks/cases.json` (written by `testdata/attacks/generate.py`, which builds every
//! token byte by byte with Python's `cryptography`, no JWT library) holds a few hundred
//! tokens: alg none, HMAC keyed with the RSA public key, cross-family keys, RS/PS swaps, kid
//! injection, embedded attacker keys, psychic ECDSA, malformed signatures, empty segments,
//! base64 variants, duplicate members, crit, malformed times, iss/aud shapes, size and depth,
//! token placement, and valid controls. Each names the status and body meshguard must answer
//! and the decision (docs/decisions.md or Envoy) behind it.
//!
//! The test starts `meshguard proxy` with `testdata/attacks/policy.yaml` (a
//! RequestAuthentication with the RSA, EC and Ed25519 keys inline, and an AuthorizationPolicy
//! requiring a request principal), sends every case with curl (raw TCP for cases that need
//! exact header lines) and checks status and body. No attack may ever get a 200. Python is
//! not needed: only the committed JSON is read.

use serde_json::Value;
use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

mod support;

use support::fs::{root, tmp};
use support::http::{Response, curl, parse, until_closed};
use support::proxy::{Proxy, Stdout, proxy_command, spawn};

fn start(policies: &Path) -> Proxy {
    spawn(
        proxy_command()
            .arg("--policies")
            .arg(policies)
            .args(["--namespace", "attacks"]),
        Stdout::Null,
    )
}

/// One HTTP/1.1 request with exactly these header lines, over a fresh connection.
fn raw_request(base: &str, target: &str, header_lines: &[String]) -> Response {
    let addr = base.strip_prefix("http://").unwrap();
    let mut req = format!("GET {target} HTTP/1.1\r\nHost: {addr}\r\n");
    for l in header_lines {
        req.push_str(l);
        req.push_str("\r\n");
    }
    req.push_str("Connection: close\r\n\r\n");
    parse(until_closed(addr, req.as_bytes(), Duration::from_secs(20)).as_bytes())
}

/// Query-string encoding: every byte outside the unreserved set is %XX.
fn percent_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

fn str_field<'a>(case: &'a Value, name: &str) -> Option<&'a str> {
    case.get(name).and_then(Value::as_str)
}

fn send(base: &str, case: &Value) -> Response {
    if let Some(lines) = case.get("header_lines").and_then(Value::as_array) {
        let lines: Vec<String> = lines
            .iter()
            .map(|l| l.as_str().expect("header line").to_string())
            .collect();
        let target = match str_field(case, "query") {
            Some(q) => format!("/headers?{q}"),
            None => "/headers".to_string(),
        };
        return raw_request(base, &target, &lines);
    }
    let token = str_field(case, "token").expect("token or header_lines");
    match str_field(case, "location").unwrap_or("header") {
        "header" => {
            let header = format!("Authorization: Bearer {token}");
            curl(&["-H", header.as_str(), &format!("{base}/headers")])
        }
        "query" => {
            let url = format!("{base}/headers?access_token={}", percent_encode(token));
            curl(&[url.as_str()])
        }
        other => panic!("unknown location {other:?}"),
    }
}

#[derive(Default)]
struct ClassTally {
    cases: usize,
    attacks: usize,
    passed: usize,
}

#[test]
fn jwt_attack_vectors_through_the_proxy() {
    let text = std::fs::read_to_string(root().join("testdata/attacks/cases.json")).unwrap();
    let cases: Vec<Value> = serde_json::from_str(&text).unwrap();
    assert!(cases.len() > 300, "only {} cases", cases.len());

    let dir = tmp("jwt_attacks");
    std::fs::copy(
        root().join("testdata/attacks/policy.yaml"),
        dir.join("policy.yaml"),
    )
    .unwrap();
    let proxy = start(&dir);

    let mut names = std::collections::BTreeSet::new();
    let mut tally: BTreeMap<String, ClassTally> = BTreeMap::new();
    let mut failures = Vec::new();
    let mut accepted_attacks = Vec::new();
    let mut notes = Vec::new();
    for case in &cases {
        let name = str_field(case, "name").expect("name");
        assert!(names.insert(name.to_string()), "duplicate case {name}");
        let class = str_field(case, "class").expect("class");
        let decision = str_field(case, "decision").unwrap_or("");
        assert!(!decision.is_empty(), "{name}: no decision");
        let attack = case["attack"].as_bool().expect("attack");
        let want_status = case["expect_status"].as_u64().expect("expect_status");
        let want_body = str_field(case, "expect_body");

        let got = send(&proxy.base, case);
        let t = tally.entry(class.to_string()).or_default();
        t.cases += 1;
        t.attacks += usize::from(attack);
        if attack && got.status == 200 {
            accepted_attacks.push(format!("{name} ({class}): 200 {}", got.body));
        }
        let mut ok = u64::from(got.status) == want_status;
        match want_body {
            Some(body) => ok &= got.body == body,
            None => {
                // A 200 comes from the echo upstream, which must not see the token.
                let echo: Value = serde_json::from_str(&got.body).unwrap_or(Value::Null);
                ok &= echo["headers"].is_object() && echo["headers"].get("authorization").is_none();
            }
        }
        if ok {
            t.passed += 1;
        } else {
            failures.push(format!(
                "{name} ({class}): want {want_status} {want_body:?}, got {} {:?}",
                got.status,
                got.body.chars().take(200).collect::<String>()
            ));
        }
        if let Some(note) = str_field(case, "note") {
            notes.push(format!("{name}: {note}"));
        }
    }

    for (class, t) in &tally {
        let verdict = if t.passed == t.cases {
            "all as expected".to_string()
        } else {
            format!("{} NOT as expected", t.cases - t.passed)
        };
        println!(
            "jwt_attacks: {class:<36} {:>3} cases ({:>3} attacks): {verdict}",
            t.cases, t.attacks
        );
    }
    println!("jwt_attacks: {} cases in total", cases.len());
    for n in &notes {
        println!("jwt_attacks: note: {n}");
    }
    for f in &failures {
        println!("jwt_attacks: FAILED {f}");
    }
    assert!(
        accepted_attacks.is_empty(),
        "SECURITY: attacks answered 200:\n{}",
        accepted_attacks.join("\n")
    );
    assert!(
        failures.is_empty(),
        "{} cases not as expected:\n{}",
        failures.len(),
        failures.join("\n")
    );
}
