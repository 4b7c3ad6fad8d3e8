//! Loading Kubernetes YAML: multi-document streams, lists, anchors, skipped kinds, and errors
//! that name the file, document, field and value.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use meshguard_model::{
    Action, Attachment, LoadOptions, Workload, attachment, load_paths, load_str,
};

fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    std::fs::create_dir_all(dir).unwrap();
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    p
}

fn tmp(name: &str) -> PathBuf {
    let d = Path::new(env!("CARGO_TARGET_TMPDIR")).join(name);
    let _ = std::fs::remove_dir_all(&d);
    d
}

fn examples() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples")
}

#[test]
fn loads_the_seed_examples() {
    let set = load_paths(
        &[examples().join("step4-require-claim")],
        &LoadOptions::default(),
    )
    .unwrap();
    assert_eq!(set.request_authentications.len(), 1);
    assert_eq!(set.authorization_policies.len(), 1);
    let ra = &set.request_authentications[0];
    assert_eq!(ra.key(), "foo/jwt-example");
    assert_eq!(ra.spec.jwt_rules[0].issuer, "testing@secure.istio.io");
    let ap = &set.authorization_policies[0];
    assert_eq!(ap.spec.action, Action::Allow);
    let rule = ap.spec.rules.as_ref().unwrap()[0].as_ref().unwrap();
    let when = rule.when.as_ref().unwrap()[0].as_ref().unwrap();
    assert_eq!(when.key, "request.auth.claims[groups]");
}

#[test]
fn multi_document_list_comments_anchors_and_skipped_kinds() {
    let text = r#"
# a comment before the first document
---
apiVersion: v1
kind: Service
metadata: {name: httpbin}
---
apiVersion: v1
kind: List
items:
- apiVersion: security.istio.io/v1
  kind: AuthorizationPolicy
  metadata: {name: a, namespace: foo}
  spec:
    rules:
    - to:
      - operation:
          methods: &m ["GET", "HEAD"]
- apiVersion: security.istio.io/v1
  kind: AuthorizationPolicy
  metadata: {name: b}
  spec:
    action: DENY
    rules:
    - to:
      - operation:
          methods: *m
---
---
apiVersion: networking.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: not-ours}
"#;
    let opts = LoadOptions {
        default_namespace: "bar".into(),
    };
    let set = load_str(Path::new("mixed.yaml"), text, &opts).unwrap();
    assert_eq!(set.authorization_policies.len(), 2);
    assert_eq!(set.authorization_policies[0].key(), "foo/a");
    // No namespace in the document: the loader's default, as with `kubectl apply -n bar`.
    assert_eq!(set.authorization_policies[1].key(), "bar/b");
    let methods = |i: usize| {
        let r = set.authorization_policies[i].spec.rules.as_ref().unwrap()[0]
            .clone()
            .unwrap();
        r.to.unwrap()[0].clone().unwrap().operation.unwrap().methods
    };
    assert_eq!(
        methods(1),
        methods(0),
        "the alias repeats the anchored list"
    );
    assert_eq!(set.skipped.len(), 2);
    assert_eq!(set.skipped[0].kind, "Service");
    assert!(
        set.skipped[0]
            .to_string()
            .contains("skipped Service \"httpbin\"")
    );
    assert_eq!(set.skipped[1].api_version, "networking.istio.io/v1");
    // Documents are numbered with List items counted one by one.
    assert_eq!(set.authorization_policies[1].origin.document, 2);
}

#[test]
fn a_broken_document_names_file_document_field_and_value() {
    let dir = tmp("broken");
    write(
        &dir,
        "a-good.yaml",
        "apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata: {name: ok, namespace: foo}\nspec: {}\n",
    );
    let bad = write(
        &dir,
        "b-bad.yaml",
        "apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata: {name: ok2, namespace: foo}\nspec: {}\n---\napiVersion: security.istio.io/v1beta1\nkind: AuthorizationPolicy\nmetadata:\n  name: require-jwt\n  namespace: foo\nspec:\n  rules:\n  - to:\n    - operation:\n        methods: GET\n",
    );
    let errs = load_paths(&[&dir], &LoadOptions::default())
        .unwrap_err()
        .errors;
    assert_eq!(errs.0.len(), 1, "{errs}");
    let e = &errs.0[0];
    assert_eq!(e.file, bad);
    assert_eq!(e.document, Some(1));
    assert_eq!(
        e.resource.as_deref(),
        Some("AuthorizationPolicy foo/require-jwt")
    );
    assert_eq!(
        e.field.as_deref(),
        Some("spec.rules[0].to[0].operation.methods")
    );
    assert_eq!(e.value.as_deref(), Some("\"GET\""));
    let text = e.to_string();
    assert!(text.contains("b-bad.yaml: document 1 (AuthorizationPolicy foo/require-jwt): field spec.rules[0].to[0].operation.methods = \"GET\""), "{text}");
}

#[test]
fn unknown_fields_are_errors_not_silently_wider_policies() {
    let text = "apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata: {name: p, namespace: foo}\nspec:\n  rules:\n  - from:\n    - source:\n        requestPrincipal: [\"x/y\"]\n";
    let errs = load_str(Path::new("typo.yaml"), text, &LoadOptions::default())
        .unwrap_err()
        .errors;
    let e = &errs.0[0];
    assert!(
        e.field
            .as_deref()
            .unwrap()
            .starts_with("spec.rules[0].from[0].source"),
        "{e}"
    );
    assert!(
        e.message.contains("unknown field `requestPrincipal`"),
        "{e}"
    );
}

#[test]
fn bad_yaml_wrong_version_and_missing_name_are_errors() {
    let errs = load_str(Path::new("x.yaml"), "a: [1, 2\n", &LoadOptions::default())
        .unwrap_err()
        .errors;
    assert!(errs.0[0].message.starts_with("invalid YAML"), "{}", errs);
    let errs = load_str(
        Path::new("x.yaml"),
        "apiVersion: security.istio.io/v1alpha1\nkind: AuthorizationPolicy\nmetadata: {name: p}\n",
        &LoadOptions::default(),
    )
    .unwrap_err()
    .errors;
    assert_eq!(errs.0[0].field.as_deref(), Some("apiVersion"));
    let errs = load_str(
        Path::new("x.yaml"),
        "apiVersion: security.istio.io/v1\nkind: RequestAuthentication\nmetadata: {namespace: foo}\n",
        &LoadOptions::default(),
    )
    .unwrap_err().errors;
    assert_eq!(errs.0[0].field.as_deref(), Some("metadata.name"));
}

#[test]
fn nothing_is_half_loaded_and_all_errors_are_reported() {
    let dir = tmp("two-bad");
    write(
        &dir,
        "1.yaml",
        "apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata: {name: a}\nspec: {action: MAYBE}\n",
    );
    write(
        &dir,
        "2.yaml",
        "apiVersion: security.istio.io/v1\nkind: RequestAuthentication\nmetadata: {name: b}\nspec: {jwtRules: [{issuer: 5}]}\n",
    );
    write(
        &dir,
        "3.yaml",
        "apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata: {name: c}\nspec: {}\n",
    );
    write(&dir, "notes.txt", "not yaml, ignored");
    write(&dir, ".hidden.yaml", "not: [valid");
    let errs = load_paths(&[&dir], &LoadOptions::default())
        .unwrap_err()
        .errors;
    assert_eq!(errs.0.len(), 2, "{errs}");
    assert_eq!(errs.0[0].field.as_deref(), Some("spec.action"));
    assert_eq!(errs.0[1].field.as_deref(), Some("spec.jwtRules[0].issuer"));
}

#[test]
fn missing_path_is_an_error() {
    let errs = load_paths(
        &[Path::new("/nonexistent/meshguard")],
        &LoadOptions::default(),
    )
    .unwrap_err()
    .errors;
    assert!(errs.0[0].message.starts_with("cannot read"));
}

#[test]
fn attachment_follows_namespace_selector_and_target_refs() {
    let text = r#"
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: sel, namespace: foo}
spec: {selector: {matchLabels: {app: httpbin}}}
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: root, namespace: istio-system}
spec: {}
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: other, namespace: bar}
spec: {}
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: gw, namespace: foo}
spec: {targetRefs: [{kind: Gateway, group: gateway.networking.k8s.io, name: gw}]}
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: extra-label, namespace: foo}
spec: {selector: {matchLabels: {app: httpbin, version: v2}}}
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: empty-selector, namespace: foo}
spec: {selector: {}}
"#;
    let set = load_str(Path::new("a.yaml"), text, &LoadOptions::default()).unwrap();
    let labels = BTreeMap::from([
        ("app".to_string(), "httpbin".to_string()),
        ("version".to_string(), "v1".to_string()),
    ]);
    let wl = Workload::new("foo", labels);
    let got: Vec<Attachment> = set
        .authorization_policies
        .iter()
        .map(|p| attachment(p, &wl))
        .collect();
    assert_eq!(
        got,
        vec![
            Attachment::Applies,
            Attachment::Applies,
            Attachment::OtherNamespace,
            Attachment::TargetRefIgnored,
            Attachment::SelectorMismatch,
            Attachment::Applies,
        ]
    );
    let custom_root = Workload::new("foo", BTreeMap::new()).with_root_namespace("mesh-root");
    assert_eq!(
        attachment(&set.authorization_policies[1], &custom_root),
        Attachment::OtherNamespace
    );
}

#[test]
fn duplicate_keys_are_errors() {
    let text = "apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata: {name: p, namespace: foo}\nspec:\n  action: ALLOW\n  action: DENY\n  rules: [{}]\n";
    let errs = load_str(Path::new("dup.yaml"), text, &LoadOptions::default())
        .unwrap_err()
        .errors;
    assert!(errs.0[0].message.starts_with("invalid YAML"), "{errs}");
    assert!(
        errs.0[0].message.to_lowercase().contains("duplicate"),
        "{errs}"
    );
}

#[test]
fn one_file_can_hold_thousands_of_policies() {
    let doc = |i: usize| {
        format!(
            "apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata: {{name: p{i}, namespace: ns{}}}\nspec:\n  rules:\n  - to: [{{operation: {{paths: [\"/api/{i}/*\"], methods: [GET]}}}}]\n",
            i % 100
        )
    };
    let text: Vec<String> = (0..5000).map(doc).collect();
    let set = load_str(
        Path::new("big.yaml"),
        &text.join("---\n"),
        &LoadOptions::default(),
    )
    .unwrap();
    assert_eq!(set.authorization_policies.len(), 5000);
}

const AP: &str = "apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: NAME, namespace: foo}
spec: {}
";

fn names(set: &meshguard_model::PolicySet) -> Vec<String> {
    set.authorization_policies
        .iter()
        .map(|p| p.name.clone())
        .collect()
}

#[test]
fn configmap_mount_layout_loads_each_key_once() {
    // What the kubelet writes for a ConfigMap with keys `policies` and `extra.yaml`:
    //   ..2024_01_02_03_04_05.123/{policies,extra.yaml}
    //   ..data -> ..2024_01_02_03_04_05.123
    //   policies -> ..data/policies, extra.yaml -> ..data/extra.yaml
    let dir = tmp("configmap-mount");
    let stamp = dir.join("..2024_01_02_03_04_05.123");
    write(&stamp, "policies", &AP.replace("NAME", "from-key"));
    write(&stamp, "extra.yaml", &AP.replace("NAME", "from-yaml"));
    std::os::unix::fs::symlink("..2024_01_02_03_04_05.123", dir.join("..data")).unwrap();
    std::os::unix::fs::symlink("..data/policies", dir.join("policies")).unwrap();
    std::os::unix::fs::symlink("..data/extra.yaml", dir.join("extra.yaml")).unwrap();
    let set = load_paths(&[&dir], &LoadOptions::default()).unwrap();
    assert_eq!(names(&set), ["from-yaml", "from-key"]);
    assert_eq!(set.files, [dir.join("extra.yaml"), dir.join("policies")]);
    assert!(set.skipped_files.is_empty(), "{:?}", set.skipped_files);
}

#[test]
fn extensions_any_case_and_skipped_files_are_listed() {
    use meshguard_model::SkipReason;
    let dir = tmp("extensions");
    write(&dir, "a.YAML", &AP.replace("NAME", "upper-yaml"));
    write(&dir, "b.Yml", &AP.replace("NAME", "mixed-yml"));
    write(
        &dir,
        "c.JSON",
        r#"{"apiVersion":"security.istio.io/v1","kind":"AuthorizationPolicy","metadata":{"name":"upper-json","namespace":"foo"}}"#,
    );
    write(&dir, "d", &AP.replace("NAME", "no-extension"));
    write(&dir, "notes.txt", "not yaml");
    write(&dir, "README.md", "# not yaml");
    write(&dir, "e.yaml~", "backup: [broken");
    write(&dir, "f.yaml.bak", "backup: [broken");
    write(&dir, ".f.yaml.swp", "swap");
    write(&dir.join(".git"), "config", "[core]");
    write(&dir.join("sub"), "g.yml", &AP.replace("NAME", "nested"));
    std::os::unix::fs::symlink("missing.yaml", dir.join("dangling.yaml")).unwrap();
    // A link back to the top must not loop, nor load anything twice.
    std::os::unix::fs::symlink("..", dir.join("sub").join("up")).unwrap();
    let set = load_paths(&[&dir], &LoadOptions::default()).unwrap();
    assert_eq!(
        names(&set),
        [
            "upper-yaml",
            "mixed-yml",
            "upper-json",
            "no-extension",
            "nested"
        ]
    );
    let skipped: Vec<(String, SkipReason)> = set
        .skipped_files
        .iter()
        .map(|s| {
            (
                s.path.strip_prefix(&dir).unwrap().display().to_string(),
                s.reason,
            )
        })
        .collect();
    assert_eq!(
        skipped,
        [
            (".f.yaml.swp".to_string(), SkipReason::Hidden),
            (".git".to_string(), SkipReason::Hidden),
            ("README.md".to_string(), SkipReason::OtherExtension),
            ("dangling.yaml".to_string(), SkipReason::NotARegularFile),
            ("e.yaml~".to_string(), SkipReason::OtherExtension),
            ("f.yaml.bak".to_string(), SkipReason::OtherExtension),
            ("notes.txt".to_string(), SkipReason::OtherExtension),
        ]
    );
    assert_eq!(
        set.skipped_files[2].to_string(),
        format!(
            "{}: skipped: only names ending in .yaml, .yml or .json, or without extension, are read",
            dir.join("README.md").display()
        )
    );
    // A file named on the command line is read whatever its name.
    let set = load_paths(&[dir.join("notes.txt")], &LoadOptions::default());
    assert!(set.is_err(), "notes.txt is not a policy document");
}

#[test]
fn summary_of_what_applies_to_a_workload() {
    use meshguard_model::{Kind, summarize};
    let set = load_paths(
        &[examples().join("step4-require-claim")],
        &LoadOptions::default(),
    )
    .unwrap();
    let httpbin = Workload::new("foo", BTreeMap::from([("app".into(), "httpbin".into())]));
    let s = summarize(&set, &httpbin);
    assert_eq!(
        s.to_string(),
        "2 resource(s) loaded (1 RequestAuthentication, 1 AuthorizationPolicy); 2 apply (1 RequestAuthentication, 1 AuthorizationPolicy: 1 ALLOW)"
    );
    assert!(!s.nothing_applies());
    assert_eq!(s.applied_count(Kind::AuthorizationPolicy), 1);
    // The README's flags with the namespace forgotten: nothing applies.
    let default = Workload::new(
        "default",
        BTreeMap::from([("app".into(), "httpbin".into())]),
    );
    let s = summarize(&set, &default);
    assert!(s.nothing_applies());
    assert_eq!(
        s.to_string(),
        "2 resource(s) loaded (1 RequestAuthentication, 1 AuthorizationPolicy); 0 apply (0 RequestAuthentication, 0 AuthorizationPolicy)"
    );
    assert!(
        s.resources
            .iter()
            .all(|r| r.attachment == Attachment::OtherNamespace)
    );
    assert!(!summarize(&Default::default(), &default).nothing_applies());
}

#[test]
fn a_failed_load_reports_every_file_and_keeps_what_decoded_for_reporting_only() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/validate/every-file");
    let failure = load_paths(&[&dir], &LoadOptions::default()).unwrap_err();
    // File, document, resource and field of each error.
    let errors: Vec<String> = failure
        .errors
        .0
        .iter()
        .map(|e| {
            format!(
                "{} {:?} {:?} {:?}",
                e.file.file_name().unwrap().to_string_lossy(),
                e.document,
                e.resource,
                e.field
            )
        })
        .collect();
    assert_eq!(
        errors,
        [
            r#"b.yaml Some(0) Some("RequestAuthentication foo/jwt") Some("spec.jwtRule")"#,
            r#"c.yaml Some(0) Some("AuthorizationPolicy foo/labelled") Some("metadata.labels")"#,
        ]
    );
    let partial = &failure.partial;
    let names: Vec<&str> = partial
        .authorization_policies
        .iter()
        .map(|p| p.name.as_str())
        .collect();
    assert_eq!(names, ["deny-bad", "deny-admin"]);
    assert!(partial.request_authentications.is_empty());
    assert_eq!(
        partial.files,
        ["a.yaml", "b.yaml", "c.yaml"].map(|f| dir.join(f))
    );
}

#[test]
fn a_document_that_does_not_decode_is_named_when_its_kind_and_name_can_be_read() {
    let resource = |text: &str| {
        let failure = load_str(Path::new("x.yaml"), text, &LoadOptions::default()).unwrap_err();
        assert_eq!(failure.errors.0.len(), 1, "{failure}");
        failure.errors.0[0].to_string()
    };
    assert_eq!(
        resource("apiVersion: 1\nkind: AuthorizationPolicy\nmetadata: {name: p, namespace: foo}\n"),
        "x.yaml: document 0 (AuthorizationPolicy foo/p): field apiVersion = 1: apiVersion must be a string"
    );
    assert_eq!(
        resource(
            "apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata: {name: p, annotations: [a]}\n"
        ),
        "x.yaml: document 0 (AuthorizationPolicy default/p): field metadata.annotations = [\"a\"]: invalid type: sequence, expected a map"
    );
    // No name to read: the kind alone, as before.
    assert_eq!(
        resource(
            "apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata: {name: [p]}\n"
        ),
        "x.yaml: document 0 (AuthorizationPolicy): field metadata.name = [\"p\"]: invalid type: sequence, expected a string"
    );
}
