//! Arbitrary bytes as a request target, normalized in all four `pathNormalization` modes:
//! never panics, and every accepted target gives an origin-form, ASCII result without a
//! fragment.
//!
//! Property: BASE normalization is idempotent (a backend or a second proxy that normalizes the
//! forwarded path again sees the path the policies were matched against), EXCEPT for inputs
//! that have both a stray `%` (one not followed by two hex digits) and a dot segment. There,
//! Envoy's algorithm itself (Chromium's `CanonicalizePath`) is not idempotent: it remembers the
//! output position of the stray `%` across a `..` that cuts the output back, and its
//! nested-escape guard then rewrites two later bytes to `25`, which can leave a new escape
//! behind: `/8z%/../a%3b%62` → `/a%325bb` → `/a25bb` (a literal port of Envoy's
//! `chromium_url` code gives the same three strings). meshguard copies Envoy on purpose, so the
//! property is only asserted where Envoy's algorithm has it. Reproducer:
//! `corpus/normalize/stale-percent-not-idempotent`.

use meshguard_engine::normalize::{PathNormalization, normalize, strip_query};

const MODES: [PathNormalization; 4] = [
    PathNormalization::None,
    PathNormalization::Base,
    PathNormalization::MergeSlashes,
    PathNormalization::DecodeAndMergeSlashes,
];

pub fn run(data: &[u8]) {
    let Ok(raw) = std::str::from_utf8(data) else {
        return;
    };
    for mode in MODES {
        let Ok(out) = normalize(raw, mode) else {
            continue;
        };
        assert!(out.starts_with('/'), "{mode}: {raw:?} -> {out:?}");
        assert!(out.is_ascii(), "{mode}: {raw:?} -> {out:?}");
        assert!(!out.contains('#'), "{mode}: {raw:?} -> {out:?}");
        // The query is never touched.
        let query = raw.split('#').next().unwrap_or_default().find('?');
        assert_eq!(
            query.map(|at| &raw[at..raw.find('#').unwrap_or(raw.len())]),
            out.find('?').map(|at| &out[at..]),
            "{mode}: {raw:?} -> {out:?}"
        );
        let _ = strip_query(&out);
    }
    let path = raw.split(['?', '#']).next().unwrap_or_default();
    if has_stray_percent(path) && has_dot(path) {
        return;
    }
    if let Ok(once) = normalize(raw, PathNormalization::Base) {
        let twice = normalize(&once, PathNormalization::Base);
        assert_eq!(
            Ok(&once),
            twice.as_ref(),
            "BASE is not idempotent for {raw:?}"
        );
    }
}

/// A `%` that does not start a valid escape.
fn has_stray_percent(path: &str) -> bool {
    let b = path.as_bytes();
    (0..b.len()).any(|i| {
        b[i] == b'%'
            && !(b.get(i + 1).is_some_and(u8::is_ascii_hexdigit)
                && b.get(i + 2).is_some_and(u8::is_ascii_hexdigit))
    })
}

/// A `.` or an encoded one (`%2e`), which may form a dot segment.
fn has_dot(path: &str) -> bool {
    path.contains('.') || path.contains("%2e") || path.contains("%2E")
}
