//! The Istio policy model: `RequestAuthentication` and `AuthorizationPolicy` as written in YAML.
//!
//! This crate owns the resource types ([`types`]), loading them from files ([`load`]),
//! attaching them to a workload ([`select`]) and the parts of Istio's `MeshConfig` meshguard
//! reads ([`mesh`]). It is pure data: it does not compile matchers,
//! verify tokens or decide requests; `meshguard-policy` compiles what this crate loads.
#![forbid(unsafe_code)]

mod duration;
pub mod load;
pub mod mesh;
pub mod peer_authn;
pub mod select;
pub mod suggest;
pub mod types;

pub use duration::parse_duration;
pub use load::{
    EntryRule, EntryType, LoadError, LoadErrors, LoadFailure, LoadOptions, PolicySet, SkipReason,
    Skipped, SkippedFile, entry_rule, load_object, load_paths, load_str, loads_entry,
};
pub use mesh::{
    ExtAuthzHttp, ExtAuthzKind, ExtAuthzProvider, HeaderPattern, MeshConfig, PathNormalization,
    UnknownPathNormalization,
};
pub use select::{
    Attachment, DEFAULT_ROOT_NAMESPACE, Kind, ResourceAttachment, Workload, WorkloadSummary,
    attachment, parse_labels, parse_labels_file, summarize,
};
pub use types::*;
