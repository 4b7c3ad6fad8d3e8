//! Arbitrary text as a policy file: loading, compiling for a workload and validating must
//! never panic, whatever the YAML (anchors, multiple documents, `kind: List`, wrong types).

use std::collections::BTreeMap;
use std::path::Path;

use meshguard_model::{LoadOptions, Workload, load_str};

pub fn run(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let set = match load_str(Path::new("f.yaml"), text, &LoadOptions::default()) {
        Ok(set) => set,
        Err(errors) => {
            // Error texts are built from the input: formatting them must not panic either.
            let _ = errors.to_string();
            return;
        }
    };
    let labels = BTreeMap::from([("app".to_string(), "httpbin".to_string())]);
    let workload = Workload::new("foo", labels);
    match meshguard_policy::compile(&set, &workload) {
        Ok(cw) => {
            let _ = (cw.rule_count(), cw.remote_sources());
        }
        Err(errors) => {
            let _ = errors.to_string();
        }
    }
    for finding in meshguard_policy::validate::validate(&set, "istio-system", None) {
        let _ = finding.to_string();
    }
    let _ = meshguard_policy::validate::validate(&set, "istio-system", Some(&workload));
}
