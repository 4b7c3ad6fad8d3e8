//! Compiled policy: what applies to one workload, turned into matchers and providers once.
//!
//! [`compile`] takes a loaded [`PolicySet`] and a [`Workload`], picks the resources that attach
//! to it, and compiles them: JWT rules into [`authn::JwtProvider`]s (keys parsed here, sorted by
//! issuer as istiod does) and authorization policies into [`authz::CompiledPolicy`]s grouped by
//! action. The result is immutable and shared by every request. This crate does no I/O and
//! makes no decisions; `meshguard-engine` evaluates requests against a [`CompiledWorkload`].
#![forbid(unsafe_code)]
// No panics on the request path: index with `get`, no unwrap/expect/panic!/unreachable!.
// An allowed site says why it cannot panic (docs/architecture.md, Panics). Tests may use
// them (clippy.toml; `string_slice` has no such option, hence the `cfg_attr`).
#![deny(
    clippy::indexing_slicing,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::unreachable
)]
#![cfg_attr(not(test), deny(clippy::string_slice))]

pub mod authn;
pub mod authz;
pub mod matchers;
pub mod path_template;
pub mod peer_authn;
pub mod trust_domain;
pub mod validate;

use meshguard_model::{
    Action, Attachment, LoadError, LoadErrors, LoadFailure, PolicySet, Resource, Workload,
    attachment,
};

pub use authn::{JwtProvider, KeySource, RemoteKeySource};
pub use authz::{CompiledPolicy, CompiledRule};
pub use matchers::{PeerUris, RequestAttributes};

/// Everything that applies to one workload, compiled.
#[derive(Clone, Debug)]
pub struct CompiledWorkload {
    pub workload: Workload,
    /// JWT providers from every applicable RequestAuthentication, sorted by issuer.
    pub providers: Vec<JwtProvider>,
    /// Applicable policies per action, in Envoy's policy-id order.
    pub custom: Vec<CompiledPolicy>,
    pub audit: Vec<CompiledPolicy>,
    pub deny: Vec<CompiledPolicy>,
    pub allow: Vec<CompiledPolicy>,
    /// The mutual-TLS mode of each port, from the applicable PeerAuthentications.
    pub mtls: meshguard_model::peer_authn::EffectiveMtls,
}

impl CompiledWorkload {
    /// All applicable policies, CUSTOM, AUDIT, DENY, ALLOW.
    pub fn policies(&self) -> impl Iterator<Item = &CompiledPolicy> {
        self.custom
            .iter()
            .chain(&self.audit)
            .chain(&self.deny)
            .chain(&self.allow)
    }

    /// The distinct remote key sources the providers need, for a fetcher to serve.
    pub fn remote_sources(&self) -> Vec<(&RemoteKeySource, std::time::Duration)> {
        let mut out: Vec<(&RemoteKeySource, std::time::Duration)> = Vec::new();
        for p in &self.providers {
            if let KeySource::Remote(src) = &p.keys {
                match out.iter_mut().find(|(s, _)| *s == src) {
                    // Several rules share a source: the longest timeout wins.
                    Some((_, t)) => *t = (*t).max(p.timeout),
                    None => out.push((src, p.timeout)),
                }
            }
        }
        out
    }

    /// The number of rules across all policies, a measure of per-request work.
    pub fn rule_count(&self) -> usize {
        self.policies().map(|p| p.rules.len()).sum()
    }
}

/// Compiles what [`meshguard_model::load_paths`] (or `load_str`) returned, for `workload`:
/// the set and its compilation, or every error of the set. A load that failed is still
/// compiled as far as it decoded, so that the errors are the loader's and the compiler's
/// together, in file and document order; the set is refused whole either way.
pub fn compile_loaded(
    loaded: Result<PolicySet, LoadFailure>,
    workload: &Workload,
) -> Result<(PolicySet, CompiledWorkload), LoadErrors> {
    match loaded {
        Ok(set) => {
            let compiled = compile(&set, workload)?;
            Ok((set, compiled))
        }
        Err(LoadFailure {
            mut errors,
            partial,
        }) => {
            if let Err(more) = compile(&partial, workload) {
                errors.0.extend(more.0);
            }
            errors.sort_by_origin(&partial.files);
            Err(errors)
        }
    }
}

/// Compiles the resources of `set` that apply to `workload`. Any invalid resource (applicable
/// or not, so that a broken file is noticed before it starts to matter) fails the whole
/// compilation with every error found, in file and document order.
pub fn compile(set: &PolicySet, workload: &Workload) -> Result<CompiledWorkload, LoadErrors> {
    let mut errors = Vec::new();
    // istiod concatenates the rules of the workload namespace's resources, then the root
    // namespace's (`getConfigsForWorkload`), then sorts them by issuer, which keeps that order
    // among equal issuers (as Envoy 1.40 behind istiod shows: the workload namespace's rule for
    // an issuer is tried before the root namespace's).
    let mut own = Vec::new();
    let mut root = Vec::new();
    for ra in &set.request_authentications {
        match authn::compile_request_authentication(ra) {
            Ok(p) if attachment(ra, workload) == Attachment::Applies => {
                if ra.namespace == workload.namespace {
                    own.extend(p);
                } else {
                    root.extend(p);
                }
            }
            Ok(_) => {}
            Err(e) => errors.extend(e),
        }
    }
    let mut providers = own;
    providers.append(&mut root);
    providers.sort_by(|a, b| a.issuer.cmp(&b.issuer));
    for (i, p) in providers.iter_mut().enumerate() {
        p.name = format!("origins-{i}").into();
    }
    let (mut custom, mut audit, mut deny, mut allow) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for ap in &set.authorization_policies {
        match authz::compile_policy(ap) {
            Ok(mut p) if attachment(ap, workload) == Attachment::Applies => {
                trust_domain::expand(&mut p, &workload.trust_domains);
                match p.action {
                    Action::Custom => custom.push(p),
                    Action::Audit => audit.push(p),
                    Action::Deny => deny.push(p),
                    Action::Allow => allow.push(p),
                }
            }
            Ok(_) => {}
            Err(e) => errors.extend(e),
        }
    }
    errors.extend(peer_authn::check(set));
    if !errors.is_empty() {
        let mut errors = LoadErrors(errors);
        errors.sort_by_origin(&set.files);
        return Err(errors);
    }
    for list in [&mut custom, &mut audit, &mut deny, &mut allow] {
        // Envoy orders RBAC policies by id (`ns[..]-policy[..]-rule[..]`), which is not the
        // same as ordering by (namespace, name): `]` sorts after `-`.
        list.sort_by_cached_key(|p| authz::policy_id(&p.namespace, &p.name, 0));
    }
    Ok(CompiledWorkload {
        workload: workload.clone(),
        providers,
        custom,
        audit,
        deny,
        allow,
        mtls: peer_authn::effective(set, workload),
    })
}

/// A [`LoadError`] pointing at a field of a resource.
pub(crate) fn located_error<S>(
    res: &Resource<S>,
    kind: &str,
    field: String,
    value: &str,
    message: String,
) -> LoadError {
    LoadError::at(
        &res.origin,
        Some(format!("{kind} {}", res.key())),
        Some(field),
        (!value.is_empty()).then(|| format!("{value:?}")),
        message,
    )
}
