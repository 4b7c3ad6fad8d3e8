//! The walkthrough's four steps (README, "Quick start"; `examples/`) as scenarios: the same
//! YAML files users apply, the same curl requests (`HEAD` and `GET`, with the demo tokens, an
//! invalid token and none).

use crate::scenario::{Request, Scenario, WorkloadSpec};
use crate::tokens;

const STEP2_RA: &str =
    include_str!("../../../examples/step2-request-authentication/request-authentication.yaml");
const STEP3_RA: &str =
    include_str!("../../../examples/step3-require-jwt/request-authentication.yaml");
const STEP3_AP: &str =
    include_str!("../../../examples/step3-require-jwt/authorization-policy.yaml");
const STEP4_RA: &str =
    include_str!("../../../examples/step4-require-claim/request-authentication.yaml");
const STEP4_AP: &str =
    include_str!("../../../examples/step4-require-claim/authorization-policy.yaml");

/// The requests of every step: the walkthrough's `curl -I` (HEAD) with each token, and the same
/// as `GET /headers`, where the upstream's view of the token header shows.
fn requests() -> Vec<Request> {
    let host = "httpbin.foo.svc.cluster.local:8000";
    let mut out = Vec::new();
    for (what, token) in [
        ("no token", None),
        ("the demo token", Some(tokens::demo())),
        ("the groups token", Some(tokens::groups())),
        ("an invalid token", Some("invalidtoken")),
    ] {
        for (method, target) in [("HEAD", "/"), ("GET", "/headers")] {
            let mut r = Request::get(format!("{method} {target} with {what}"), target);
            r.method = method.into();
            r.host = Some(host.into());
            r.headers.push(("user-agent".into(), "curl/8.14.1".into()));
            r.headers.push(("accept".into(), "*/*".into()));
            if let Some(t) = token {
                r = r.bearer(t);
            }
            out.push(r);
        }
    }
    out
}

fn step(name: &str, docs: &[&str]) -> Scenario {
    Scenario {
        name: format!("walkthrough {name}"),
        seed: None,
        workload: WorkloadSpec::default(),
        mesh: Default::default(),
        policies: docs.join("\n---\n"),
        requests: requests(),
    }
}

/// Step 1 (no policy), step 2 (RequestAuthentication), step 3 (require a JWT), step 4 (require
/// the `groups` claim).
pub fn scenarios() -> Vec<Scenario> {
    vec![
        step("step 1: no policy", &[]),
        step("step 2: RequestAuthentication", &[STEP2_RA]),
        step("step 3: require a JWT", &[STEP3_RA, STEP3_AP]),
        step("step 4: require the groups claim", &[STEP4_RA, STEP4_AP]),
    ]
}
