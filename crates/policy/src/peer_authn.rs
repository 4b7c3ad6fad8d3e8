//! `PeerAuthentication` for one workload: Istio's validation as load errors, and the composed
//! mutual-TLS modes ([`meshguard_model::peer_authn::compose`]) the inbound listener applies.
//! Owns nothing else: the composition rules are the model's, serving TLS is the proxy's.

use meshguard_model::LoadError;
use meshguard_model::peer_authn::{EffectiveMtls, PeerAuthentication, compose, validate};
use meshguard_model::{PolicySet, Workload};

/// Every PeerAuthentication's validation errors, applicable or not (a broken file is
/// noticed before it starts to matter), located at the resource's field.
pub fn check(set: &PolicySet) -> Vec<LoadError> {
    set.peer_authentications
        .iter()
        .flat_map(|pa: &PeerAuthentication| {
            validate(pa).into_iter().map(move |(field, message)| {
                crate::located_error(pa, "PeerAuthentication", field, "", message)
            })
        })
        .collect()
}

/// The modes of `workload`'s ports.
pub fn effective(set: &PolicySet, workload: &Workload) -> EffectiveMtls {
    compose(&set.peer_authentications, workload)
}
