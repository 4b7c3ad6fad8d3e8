//! Loading Kubernetes YAML from files and directories into [`PolicySet`]s.
//!
//! Owns: reading files, splitting YAML streams, `kind: List`, picking out the two Istio kinds,
//! typed decoding with a field path on every error, and the all-or-nothing rule (any error means
//! no `PolicySet` to enforce; the documents that did decode come back only inside the
//! [`LoadFailure`], so that callers can report their problems too). Does not own: Istio's
//! validation rules (see `validate`), compilation, or deciding which resources apply to a
//! workload (see [`crate::select`]).

use std::fmt;
use std::path::{Path, PathBuf};

use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::types::{
    AuthorizationPolicySpec, Metadata, ObjectRef, Origin, RequestAuthenticationSpec, Resource,
};

/// The API group whose kinds meshguard reads.
pub const SECURITY_GROUP: &str = "security.istio.io";
/// API versions accepted for both kinds.
pub const SUPPORTED_VERSIONS: [&str; 2] = ["v1", "v1beta1"];

/// Everything loaded from a set of paths.
#[derive(Clone, Debug, Default)]
pub struct PolicySet {
    pub request_authentications: Vec<Resource<RequestAuthenticationSpec>>,
    pub authorization_policies: Vec<Resource<AuthorizationPolicySpec>>,
    pub peer_authentications: Vec<crate::peer_authn::PeerAuthentication>,
    /// Documents that were read but are not ours (a Deployment, a Service, ...).
    pub skipped: Vec<Skipped>,
    /// Files read, in the order they were read.
    pub files: Vec<PathBuf>,
    /// Files found in directories and not read, with the reason, so that callers can warn
    /// (a `policy.yaml.txt` that was meant to be read must not go unnoticed).
    pub skipped_files: Vec<SkippedFile>,
}

/// A file in a directory that the loader did not read.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SkippedFile {
    pub path: PathBuf,
    pub reason: SkipReason,
}

/// Why a file in a directory was not read. See [`load_paths`] for the rule.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SkipReason {
    /// The name starts with `.` (an editor's swap file, `.gitignore`, ...).
    Hidden,
    /// The name has an extension other than `.yaml`, `.yml` or `.json` (any case), or ends in
    /// `~` (an editor's backup).
    OtherExtension,
    /// Not a regular file (a socket, a FIFO, a device) or a dangling symbolic link.
    NotARegularFile,
}

impl SkipReason {
    pub fn as_str(self) -> &'static str {
        match self {
            SkipReason::Hidden => "its name starts with '.'",
            SkipReason::OtherExtension => {
                "only names ending in .yaml, .yml or .json, or without extension, are read"
            }
            SkipReason::NotARegularFile => "not a regular file",
        }
    }
}

impl fmt::Display for SkippedFile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}: skipped: {}",
            self.path.display(),
            self.reason.as_str()
        )
    }
}

/// A document that was skipped because meshguard does not enforce its kind.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Skipped {
    pub origin: Origin,
    pub api_version: String,
    pub kind: String,
    pub name: String,
}

impl fmt::Display for Skipped {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.origin.object {
            Some(object) => write!(f, "{object}")?,
            None => write!(
                f,
                "{}: document {}",
                self.origin.file.display(),
                self.origin.document
            )?,
        }
        write!(
            f,
            ": skipped {} {:?} ({}): not a RequestAuthentication or AuthorizationPolicy",
            self.kind, self.name, self.api_version
        )
    }
}

/// One problem found while loading. Names the file, the document, the field and the value;
/// for an object read from the Kubernetes API server, the object instead of a file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LoadError {
    /// Empty for an object read from the API server ([`LoadError::object`]).
    pub file: PathBuf,
    /// 0-based document index in the file, when the problem is inside one document.
    pub document: Option<usize>,
    /// `Kind namespace/name` when known.
    pub resource: Option<String>,
    /// JSON-path-like location, e.g. `spec.rules[0].from[0].source.requestPrincipals`.
    pub field: Option<String>,
    /// The offending value, rendered as compact JSON (truncated).
    pub value: Option<String>,
    pub message: String,
    /// The object, when the resource was read from the Kubernetes API server.
    pub object: Option<ObjectRef>,
}

impl LoadError {
    /// A problem of the resource at `origin`: a document of a file, or an object read from
    /// the API server.
    pub fn at(
        origin: &Origin,
        resource: Option<String>,
        field: Option<String>,
        value: Option<String>,
        message: String,
    ) -> LoadError {
        match &origin.object {
            Some(object) => LoadError {
                file: PathBuf::new(),
                document: None,
                resource,
                field,
                value,
                message,
                object: Some(object.clone()),
            },
            None => LoadError {
                file: origin.file.clone(),
                document: Some(origin.document),
                resource,
                field,
                value,
                message,
                object: None,
            },
        }
    }
}

impl fmt::Display for LoadError {
    /// `file: document N (Kind ns/name): field F = V: message` for a file; for an object read
    /// from the API server, `Kind ns/name (resourceVersion R): field F = V: message`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(object) = &self.object {
            match &self.resource {
                Some(res) => write!(f, "{res}")?,
                None => write!(f, "{}", object.key())?,
            }
            write!(f, " (resourceVersion {})", object.resource_version)?;
        } else {
            write!(f, "{}", self.file.display())?;
            if let Some(doc) = self.document {
                write!(f, ": document {doc}")?;
            }
            if let Some(res) = &self.resource {
                write!(f, " ({res})")?;
            }
        }
        if let Some(field) = &self.field {
            write!(f, ": field {field}")?;
        }
        if let Some(value) = &self.value {
            write!(f, " = {value}")?;
        }
        write!(f, ": {}", self.message)
    }
}

impl std::error::Error for LoadError {}

/// All the problems of one load attempt; never empty.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LoadErrors(pub Vec<LoadError>);

impl fmt::Display for LoadErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.0.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{e}")?;
        }
        Ok(())
    }
}

impl std::error::Error for LoadErrors {}

impl LoadErrors {
    /// Puts the errors in file and document order: `files` is the order the files were read
    /// ([`PolicySet::files`]); errors about paths that are not among them (a path that cannot
    /// be read) come first. The sort is stable, so the errors of one document keep theirs.
    pub fn sort_by_origin(&mut self, files: &[PathBuf]) {
        self.0
            .sort_by_cached_key(|e| (files.iter().position(|f| *f == e.file), e.document));
    }
}

/// A load that found problems. The set is refused whole: nothing in it may be enforced.
#[derive(Clone, Debug)]
pub struct LoadFailure {
    /// Every problem found, in file and document order; never empty.
    pub errors: LoadErrors,
    /// The documents that did decode, the files read and the files skipped: only for
    /// reporting the problems of the whole set (validating or compiling these as well),
    /// never for enforcing. Boxed: a failure is rare, and a small `Err` keeps `Result` small.
    pub partial: Box<PolicySet>,
}

impl fmt::Display for LoadFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.errors.fmt(f)
    }
}

impl std::error::Error for LoadFailure {}

impl From<LoadFailure> for LoadErrors {
    fn from(failure: LoadFailure) -> LoadErrors {
        failure.errors
    }
}

/// Options for [`load_paths`].
#[derive(Clone, Debug)]
pub struct LoadOptions {
    /// Namespace given to resources whose `metadata.namespace` is absent (`kubectl apply -n`).
    pub default_namespace: String,
}

impl Default for LoadOptions {
    fn default() -> Self {
        LoadOptions {
            default_namespace: "default".to_string(),
        }
    }
}

/// What a directory entry is, as far as [`entry_rule`] cares. `metadata` follows symbolic
/// links, so a link is what it points to, and a dangling link is [`EntryType::Other`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EntryType {
    File,
    Directory,
    /// A socket, a FIFO, a device, a dangling link, or an entry that cannot be examined.
    Other,
}

impl EntryType {
    /// The type of an entry from its metadata (`None`: it could not be read).
    pub fn of(meta: Option<&std::fs::Metadata>) -> EntryType {
        match meta {
            Some(m) if m.is_dir() => EntryType::Directory,
            Some(m) if m.is_file() => EntryType::File,
            _ => EntryType::Other,
        }
    }
}

/// What the loader does with one entry found while walking a directory.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EntryRule {
    Read,
    Descend,
    /// Kubernetes' own entries of a ConfigMap or Secret mount (`..data`, `..2024_01_01_...`):
    /// the keys are read through their top-level links, so these are skipped without a word.
    MountInternals,
    Skip(SkipReason),
}

/// The rule for an entry named `name` found while walking a directory (see [`load_paths`];
/// a path named on the command line is always read, whatever its name). The one place the
/// rule is written: the loader and the proxy's file watch both ask it.
pub fn entry_rule(name: &str, ty: EntryType) -> EntryRule {
    if name.starts_with("..") {
        return EntryRule::MountInternals;
    }
    if name.starts_with('.') {
        return EntryRule::Skip(SkipReason::Hidden);
    }
    match ty {
        EntryType::Directory => return EntryRule::Descend,
        EntryType::Other => return EntryRule::Skip(SkipReason::NotARegularFile),
        EntryType::File => {}
    }
    if name.ends_with('~') {
        return EntryRule::Skip(SkipReason::OtherExtension);
    }
    match name.rsplit_once('.') {
        // A ConfigMap key mounted as a file: `policies`, `authz`.
        None => EntryRule::Read,
        Some((_, ext))
            if ["yaml", "yml", "json"]
                .iter()
                .any(|e| ext.eq_ignore_ascii_case(e)) =>
        {
            EntryRule::Read
        }
        Some(_) => EntryRule::Skip(SkipReason::OtherExtension),
    }
}

/// Whether walking a directory reaches and loads the entry at `rel`, a path relative to that
/// directory of an entry of type `ty`: each directory on the way is descended into, and the
/// entry itself is read (a file) or descended into (a directory). An empty `rel` is the
/// directory itself.
pub fn loads_entry(rel: &Path, ty: EntryType) -> bool {
    let mut names = rel.iter().map(|n| n.to_string_lossy()).peekable();
    while let Some(name) = names.next() {
        let ty = if names.peek().is_some() {
            EntryType::Directory
        } else {
            ty
        };
        if !matches!(entry_rule(&name, ty), EntryRule::Read | EntryRule::Descend) {
            return false;
        }
    }
    true
}

/// Files a path contributes, in name order, recursively; see [`load_paths`] for the rule.
/// Each file is read once even when links reach it twice, and a directory is never walked
/// twice (a link to a parent cannot loop).
fn collect_files(
    path: &Path,
    out: &mut Vec<PathBuf>,
    skipped: &mut Vec<SkippedFile>,
    seen: &mut std::collections::HashSet<PathBuf>,
    errors: &mut Vec<LoadError>,
) {
    let meta = match std::fs::metadata(path) {
        Ok(m) => m,
        Err(e) => {
            errors.push(file_error(path, format!("cannot read: {e}")));
            return;
        }
    };
    let first_visit = |seen: &mut std::collections::HashSet<PathBuf>| {
        seen.insert(std::fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf()))
    };
    if !meta.is_dir() {
        if first_visit(seen) {
            out.push(path.to_path_buf());
        }
        return;
    }
    if !first_visit(seen) {
        return;
    }
    let entries = match std::fs::read_dir(path) {
        Ok(rd) => rd,
        Err(e) => {
            errors.push(file_error(path, format!("cannot read directory: {e}")));
            return;
        }
    };
    let mut children: Vec<PathBuf> = entries.filter_map(|e| e.ok().map(|e| e.path())).collect();
    children.sort();
    for child in children {
        let name = child
            .file_name()
            .map(|n| n.to_string_lossy())
            .unwrap_or_default();
        // `metadata` follows symbolic links: a ConfigMap key is a link to `..data/<key>`.
        let ty = EntryType::of(std::fs::metadata(&child).ok().as_ref());
        match entry_rule(&name, ty) {
            EntryRule::Read | EntryRule::Descend => {
                collect_files(&child, out, skipped, seen, errors)
            }
            EntryRule::MountInternals => {}
            EntryRule::Skip(reason) => skipped.push(SkippedFile {
                path: child,
                reason,
            }),
        }
    }
}

fn file_error(file: &Path, message: String) -> LoadError {
    LoadError {
        file: file.to_path_buf(),
        document: None,
        resource: None,
        field: None,
        value: None,
        message,
        object: None,
    }
}

/// Loads every file under `paths`. Any error anywhere means `Err` with every error of every
/// document; the documents that did decode are in [`LoadFailure::partial`], for reporting
/// only: a partial set is never returned as `Ok`.
///
/// A path that is a file is read whatever its name. A directory is walked recursively in name
/// order, following symbolic links, and an entry is
///
/// * read when its name ends in `.yaml`, `.yml` or `.json` (in any case: `.YAML` too) or has
///   no extension at all (a ConfigMap key mounted as a file, e.g. `policies`);
/// * skipped without a word when its name starts with `..`: Kubernetes' `..data` link and
///   `..<timestamp>` directory of a ConfigMap mount, whose keys are read through their
///   top-level links instead;
/// * skipped and listed in [`PolicySet::skipped_files`] otherwise: other hidden names (`.x`),
///   other extensions (`.txt`, `.md`, `.bak`), editor backups (`~`), sockets and dangling links.
///
/// A file reached twice (through links) is read once.
pub fn load_paths<P: AsRef<Path>>(
    paths: &[P],
    opts: &LoadOptions,
) -> Result<PolicySet, LoadFailure> {
    let mut errors = Vec::new();
    let mut files = Vec::new();
    let mut skipped_files = Vec::new();
    let mut seen = std::collections::HashSet::new();
    for p in paths {
        collect_files(
            p.as_ref(),
            &mut files,
            &mut skipped_files,
            &mut seen,
            &mut errors,
        );
    }
    let mut set = PolicySet::default();
    for file in &files {
        match std::fs::read_to_string(file) {
            Ok(text) => load_into(&mut set, file, &text, opts, &mut errors),
            Err(e) => errors.push(file_error(file, format!("cannot read: {e}"))),
        }
    }
    set.files = files;
    set.skipped_files = skipped_files;
    finish(set, errors)
}

fn finish(set: PolicySet, errors: Vec<LoadError>) -> Result<PolicySet, LoadFailure> {
    if errors.is_empty() {
        Ok(set)
    } else {
        Err(LoadFailure {
            errors: LoadErrors(errors),
            partial: Box::new(set),
        })
    }
}

/// Loads one YAML (or JSON) stream already in memory; `file` is used for messages only.
pub fn load_str(file: &Path, text: &str, opts: &LoadOptions) -> Result<PolicySet, LoadFailure> {
    let mut set = PolicySet::default();
    let mut errors = Vec::new();
    load_into(&mut set, file, text, opts, &mut errors);
    set.files.push(file.to_path_buf());
    finish(set, errors)
}

/// The YAML parser's limits, raised from its defaults (1,024 documents, 250,000 nodes per
/// stream) so that one file can hold a mesh's worth of policies (10,000 and more), while still
/// bounding alias expansion and nesting. Duplicate mapping keys stay errors: `action: ALLOW`
/// followed by `action: DENY` must not quietly mean one of them.
fn yaml_options() -> serde_saphyr::Options {
    serde_saphyr::options! {
        budget: serde_saphyr::budget! {
            max_documents: 1_000_000,
            max_nodes: 50_000_000,
            max_events: 200_000_000,
        },
    }
}

fn load_into(
    set: &mut PolicySet,
    file: &Path,
    text: &str,
    opts: &LoadOptions,
    errors: &mut Vec<LoadError>,
) {
    let docs: Vec<Value> =
        match serde_saphyr::from_multiple_with_options::<Value>(text, yaml_options()) {
            Ok(docs) => docs,
            Err(e) => {
                errors.push(file_error(file, format!("invalid YAML: {e}")));
                return;
            }
        };
    // `kind: List` expands in place so that document numbers count resources.
    let mut flat = Vec::new();
    for doc in docs {
        if doc.is_null() {
            continue; // empty document between `---` separators
        }
        if doc.get("kind").and_then(Value::as_str) == Some("List") {
            match doc.get("items") {
                Some(Value::Array(items)) => flat.extend(items.iter().cloned()),
                Some(Value::Null) | None => {}
                Some(other) => errors.push(LoadError {
                    field: Some("items".into()),
                    value: Some(render_value(other)),
                    document: Some(flat.len()),
                    message: "a List's items must be a sequence".into(),
                    ..file_error(file, String::new())
                }),
            }
        } else {
            flat.push(doc);
        }
    }
    for (index, doc) in flat.into_iter().enumerate() {
        load_document(set, Origin::file(file, index), doc, opts, errors);
    }
}

/// Loads one object read from the Kubernetes API server (its JSON, `apiVersion` and `kind`
/// included), exactly as a document of a file is loaded: the same kinds, versions, strict
/// decoding and field paths, the errors naming `object` instead of a file. The set holds at
/// most that one resource; an object of another kind is in [`PolicySet::skipped`].
pub fn load_object(doc: Value, object: ObjectRef) -> Result<PolicySet, LoadFailure> {
    let opts = LoadOptions {
        default_namespace: object.namespace.clone(),
    };
    let mut set = PolicySet::default();
    let mut errors = Vec::new();
    load_document(&mut set, Origin::object(object), doc, &opts, &mut errors);
    finish(set, errors)
}

fn load_document(
    set: &mut PolicySet,
    origin: Origin,
    doc: Value,
    opts: &LoadOptions,
    errors: &mut Vec<LoadError>,
) {
    let located = origin.clone();
    let err = |field: &str, value: Option<&Value>, message: String, resource: Option<String>| {
        LoadError::at(
            &located,
            resource,
            Some(field.to_string()),
            value.map(render_value),
            message,
        )
    };
    let Value::Object(mut obj) = doc else {
        errors.push(err(
            "",
            Some(&doc),
            "a document must be a mapping".into(),
            None,
        ));
        return;
    };
    let named = raw_resource(&obj, opts);
    let api_version = match obj.get("apiVersion") {
        Some(Value::String(s)) => s.clone(),
        other => {
            errors.push(err(
                "apiVersion",
                other,
                "apiVersion must be a string".into(),
                named,
            ));
            return;
        }
    };
    let kind = match obj.get("kind") {
        Some(Value::String(s)) => s.clone(),
        other => {
            errors.push(err("kind", other, "kind must be a string".into(), named));
            return;
        }
    };
    let is_ours = matches!(
        kind.as_str(),
        "RequestAuthentication" | "AuthorizationPolicy" | "PeerAuthentication"
    );
    let (group, version) = api_version
        .split_once('/')
        .unwrap_or(("", api_version.as_str()));
    if !is_ours || group != SECURITY_GROUP {
        let name = obj
            .get("metadata")
            .and_then(|m| m.get("name"))
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string();
        set.skipped.push(Skipped {
            origin,
            api_version,
            kind,
            name,
        });
        return;
    }
    let created = obj
        .get("metadata")
        .and_then(|m| m.get("creationTimestamp"))
        .and_then(Value::as_str)
        .map(str::to_string);
    let metadata: Metadata = match decode(obj.remove("metadata").unwrap_or(Value::Null), "metadata")
    {
        Ok(m) => m,
        Err((field, value, message)) => {
            errors.push(err(&field, value.as_ref(), message, named.or(Some(kind))));
            return;
        }
    };
    let namespace = metadata
        .namespace
        .clone()
        .filter(|ns| !ns.is_empty())
        .unwrap_or_else(|| opts.default_namespace.clone());
    let resource = format!("{kind} {namespace}/{}", metadata.name);
    if metadata.name.is_empty() {
        errors.push(err(
            "metadata.name",
            None,
            "metadata.name is required".into(),
            Some(resource),
        ));
        return;
    }
    if !SUPPORTED_VERSIONS.contains(&version) {
        errors.push(err(
            "apiVersion",
            Some(&Value::String(api_version.clone())),
            format!("unsupported version of {SECURITY_GROUP}; use one of v1, v1beta1"),
            Some(resource),
        ));
        return;
    }
    let spec = obj
        .remove("spec")
        .unwrap_or(Value::Object(Default::default()));
    let spec = if spec.is_null() {
        Value::Object(Default::default())
    } else {
        spec
    };
    macro_rules! finish {
        ($ty:ty, $list:expr) => {
            match decode::<$ty>(spec, "spec") {
                Ok(spec) => $list.push(Resource {
                    api_version,
                    name: metadata.name,
                    namespace,
                    annotations: metadata.annotations,
                    origin,
                    spec,
                }),
                Err((field, value, message)) => {
                    errors.push(err(&field, value.as_ref(), message, Some(resource)))
                }
            }
        };
    }
    if kind == "RequestAuthentication" {
        finish!(RequestAuthenticationSpec, set.request_authentications);
    } else if kind == "PeerAuthentication" {
        let before = set.peer_authentications.len();
        finish!(
            crate::peer_authn::PeerAuthenticationSpec,
            set.peer_authentications
        );
        if let Some(pa) = set.peer_authentications.get_mut(before) {
            pa.spec.created = created;
        }
    } else {
        finish!(AuthorizationPolicySpec, set.authorization_policies);
    }
}

/// `Kind namespace/name` read from a document that may not decode, so that its errors name it:
/// the kind alone when the name is not a string, `None` without a string `kind` or `name`.
fn raw_resource(obj: &serde_json::Map<String, Value>, opts: &LoadOptions) -> Option<String> {
    fn text(v: Option<&Value>) -> Option<&str> {
        v.and_then(Value::as_str).filter(|s| !s.is_empty())
    }
    let meta = obj.get("metadata");
    let name = text(meta.and_then(|m| m.get("name")));
    let namespace = text(meta.and_then(|m| m.get("namespace"))).unwrap_or(&opts.default_namespace);
    match (text(obj.get("kind")), name) {
        (Some(kind), Some(name)) => Some(format!("{kind} {namespace}/{name}")),
        (Some(kind), None) => Some(kind.to_string()),
        (None, Some(name)) => Some(format!("{namespace}/{name}")),
        (None, None) => None,
    }
}

/// Decodes `value` as `T`; on error returns (field path, offending value, message).
fn decode<T: DeserializeOwned>(
    value: Value,
    root: &str,
) -> Result<T, (String, Option<Value>, String)> {
    match serde_path_to_error::deserialize::<_, T>(&value) {
        Ok(t) => Ok(t),
        Err(e) => {
            let inner = e.path().to_string();
            let field = if inner == "." || inner.is_empty() {
                root.to_string()
            } else {
                format!("{root}.{inner}")
            };
            let found = lookup(&value, e.path());
            let mut message = e.into_inner().to_string();
            if let Some(hint) = crate::suggest::hint_for_serde_message(&message) {
                message = format!("{message}; {hint}");
            }
            Err((field, found, message))
        }
    }
}

/// Finds the value at a serde path, for the error message.
fn lookup(root: &Value, path: &serde_path_to_error::Path) -> Option<Value> {
    use serde_path_to_error::Segment;
    let mut cur = root;
    for seg in path.iter() {
        cur = match seg {
            Segment::Seq { index } => cur.get(*index)?,
            Segment::Map { key } => cur.get(key.as_str())?,
            // An unknown field: the path ends at its parent, show nothing more specific.
            Segment::Enum { .. } | Segment::Unknown => return None,
        };
    }
    Some(cur.clone())
}

/// Compact JSON, cut at 120 characters so that a huge JWKS does not flood the terminal.
fn render_value(v: &Value) -> String {
    let s = v.to_string();
    if s.chars().count() > 120 {
        let cut: String = s.chars().take(117).collect();
        format!("{cut}...")
    } else {
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entry_rule_reads_policy_names_and_descends_into_directories() {
        use EntryRule::*;
        use EntryType::*;
        for (name, ty, want) in [
            ("a.yaml", File, Read),
            ("a.YML", File, Read),
            ("a.Json", File, Read),
            ("policies", File, Read),
            ("a.yaml.txt", File, Skip(SkipReason::OtherExtension)),
            ("a.yaml~", File, Skip(SkipReason::OtherExtension)),
            ("a.", File, Skip(SkipReason::OtherExtension)),
            (".a.yaml", File, Skip(SkipReason::Hidden)),
            (".git", Directory, Skip(SkipReason::Hidden)),
            ("..data", Directory, MountInternals),
            ("..2026_12_05", Directory, MountInternals),
            ("conf.d", Directory, Descend),
            ("team~", Directory, Descend),
            ("a.yaml", Other, Skip(SkipReason::NotARegularFile)),
        ] {
            assert_eq!(entry_rule(name, ty), want, "{name} {ty:?}");
        }
    }

    fn object(name: &str) -> ObjectRef {
        ObjectRef {
            namespace: "foo".into(),
            name: name.into(),
            resource_version: "42".into(),
        }
    }

    #[test]
    fn an_object_from_the_api_server_loads_as_a_document_does_and_its_errors_name_it() {
        let ok = serde_json::json!({
            "apiVersion": "security.istio.io/v1",
            "kind": "AuthorizationPolicy",
            "metadata": {"name": "allow", "namespace": "foo", "resourceVersion": "42",
                         "uid": "0b7e", "managedFields": [{"manager": "kubectl"}]},
            "spec": {"action": "DENY", "rules": [{}]},
        });
        let set = load_object(ok, object("allow")).unwrap();
        let ap = &set.authorization_policies[0];
        assert_eq!(ap.key(), "foo/allow");
        assert_eq!(ap.origin.object, Some(object("allow")));
        assert_eq!(ap.origin.file, PathBuf::new());
        let bad = serde_json::json!({
            "apiVersion": "security.istio.io/v1",
            "kind": "AuthorizationPolicy",
            "metadata": {"name": "bad", "namespace": "foo"},
            "spec": {"action": "ALOW"},
        });
        let e = load_object(bad, object("bad")).unwrap_err();
        assert_eq!(
            e.errors.to_string(),
            "AuthorizationPolicy foo/bad (resourceVersion 42): field spec.action = \"ALOW\": unknown variant `ALOW`, expected one of `ALLOW`, `DENY`, `AUDIT`, `CUSTOM`; did you mean `ALLOW`?"
        );
        assert_eq!(e.errors.0[0].document, None);
        let typo = serde_json::json!({
            "apiVersion": "security.istio.io/v1beta1",
            "kind": "RequestAuthentication",
            "metadata": {"name": "jwt", "namespace": "foo"},
            "spec": {"jwtRule": []},
        });
        let e = load_object(typo, object("jwt")).unwrap_err();
        assert!(
            e.errors.to_string().starts_with(
                "RequestAuthentication foo/jwt (resourceVersion 42): field spec.jwtRule = []: unknown field `jwtRule`"
            ),
            "{}",
            e.errors
        );
    }

    #[test]
    fn loads_entry_needs_every_directory_on_the_way_descended() {
        let yes = |p: &str, ty| assert!(loads_entry(Path::new(p), ty), "{p}");
        let no = |p: &str, ty| assert!(!loads_entry(Path::new(p), ty), "{p}");
        yes("", EntryType::Directory);
        yes("a.yaml", EntryType::File);
        yes("team~/a.yaml", EntryType::File);
        yes("conf.d", EntryType::Directory);
        yes("team~", EntryType::Directory);
        no("team~", EntryType::File);
        no(".git/a.yaml", EntryType::File);
        no("..2026_12_05/policies", EntryType::File);
        no("sub/notes.txt", EntryType::File);
    }
}
