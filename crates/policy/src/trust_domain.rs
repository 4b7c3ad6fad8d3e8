//! Trust-domain aliases in policies' principals, as istiod rewrites them when it builds the
//! RBAC filter (its `MigrateTrustDomain`): a `principals` / `notPrincipals` /
//! `source.principal` value `<td>/ns/<ns>/sa/<sa>` whose `<td>` is the mesh's trust domain, one
//! of its aliases or the literal `cluster.local` (a pointer to the local trust domain) stands
//! for the same identity in every one of those trust domains. Values of another shape, with a
//! `*` trust domain or a foreign trust domain are kept as written. Done once when a policy is
//! compiled; nothing here runs per request.

use crate::authz::{CompiledPolicy, Field, Matcher};
use crate::matchers::{IdentityMatch, StringMatch};

/// Istio's default trust domain, which always points at the local one.
const CLUSTER_LOCAL: &str = "cluster.local";

/// Expands the principals of `policy` to `trust_domains` (the mesh's first, then aliases).
pub fn expand(policy: &mut CompiledPolicy, trust_domains: &[String]) {
    for rule in &mut policy.rules {
        for clause in rule.from.iter_mut().chain(&mut rule.when) {
            for field in &mut clause.fields {
                expand_field(field, trust_domains);
            }
        }
    }
}

fn expand_field(field: &mut Field, tds: &[String]) {
    let (values, src) = expand_values(
        std::mem::take(&mut field.values),
        std::mem::take(&mut field.values_src),
        tds,
    );
    field.values = values;
    field.values_src = src;
    let (values, src) = expand_values(
        std::mem::take(&mut field.not_values),
        std::mem::take(&mut field.not_values_src),
        tds,
    );
    field.not_values = values;
    field.not_values_src = src;
}

/// `values` and their sources (kept parallel: explanations index one by the other).
fn expand_values(
    values: Vec<Matcher>,
    src: Vec<String>,
    tds: &[String],
) -> (Vec<Matcher>, Vec<String>) {
    if values.len() != src.len() {
        return (values, src);
    }
    let mut out = (
        Vec::with_capacity(values.len()),
        Vec::with_capacity(src.len()),
    );
    for (m, s) in values.into_iter().zip(src) {
        match (&m, expansions(&s, tds)) {
            (Matcher::Identity(IdentityMatch::Principal(_)), Some(all)) => {
                for v in all {
                    out.0.push(Matcher::Identity(IdentityMatch::Principal(
                        StringMatch::parse(&v, false),
                    )));
                    out.1.push(if v == s {
                        s.clone()
                    } else {
                        format!("{s} (as {v})")
                    });
                }
            }
            _ => {
                out.0.push(m);
                out.1.push(s);
            }
        }
    }
    out
}

/// The values `principal` stands for, or `None` when it is kept as written.
pub fn expansions(principal: &str, tds: &[String]) -> Option<Vec<String>> {
    let parts: Vec<&str> = principal.split('/').collect();
    let [td, "ns", _, "sa", _] = parts.as_slice() else {
        return None;
    };
    if *td == "*" || !(tds.iter().any(|t| t == td) || *td == CLUSTER_LOCAL) {
        return None;
    }
    let rest = principal.get(td.len()..).unwrap_or_default();
    let mut all: Vec<String> = tds.iter().map(|t| format!("{t}{rest}")).collect();
    all.dedup();
    Some(all)
}

#[cfg(test)]
mod tests {
    use super::expansions;

    fn tds(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    /// Istio's `bundle_test.go` cases (ReplaceTrustDomainAliases).
    #[test]
    fn principals_expand_as_istiod_rewrites_them() {
        let t = tds(&["td1", "cluster.local"]);
        assert_eq!(
            expansions("cluster.local/ns/foo/sa/bar", &t),
            Some(vec![
                "td1/ns/foo/sa/bar".into(),
                "cluster.local/ns/foo/sa/bar".into()
            ])
        );
        let t = tds(&["td1", "td2"]);
        assert_eq!(
            expansions("td2/ns/foo/sa/bar", &t),
            Some(vec!["td1/ns/foo/sa/bar".into(), "td2/ns/foo/sa/bar".into()])
        );
        // cluster.local points at the local trust domain even when it is not one of them.
        assert_eq!(
            expansions("cluster.local/ns/foo/sa/bar", &t),
            Some(vec!["td1/ns/foo/sa/bar".into(), "td2/ns/foo/sa/bar".into()])
        );
        // Foreign trust domain, a `*` trust domain, other shapes: as written.
        assert_eq!(expansions("td3/ns/foo/sa/bar", &t), None);
        assert_eq!(expansions("*/ns/foo/sa/bar", &t), None);
        assert_eq!(expansions("td1/ns/foo/sa/bar/extra", &t), None);
        assert_eq!(expansions("*", &t), None);
        assert_eq!(
            expansions("td1/ns/foo/sa/*", &t),
            Some(vec!["td1/ns/foo/sa/*".into(), "td2/ns/foo/sa/*".into()])
        );
        // Only the mesh's trust domain: unchanged.
        assert_eq!(
            expansions("cluster.local/ns/foo/sa/bar", &tds(&["cluster.local"])),
            Some(vec!["cluster.local/ns/foo/sa/bar".into()])
        );
    }
}
