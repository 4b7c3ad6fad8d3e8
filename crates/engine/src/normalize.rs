//! Request-path normalization, as Envoy's HTTP connection manager does it for Istio.
//!
//! This module owns the step that runs before any policy sees a request: it turns the raw
//! request target into the path that `paths`/`notPaths` are matched against *and* that is
//! forwarded upstream (Envoy forwards the normalized path, so both must be the same string).
//! It does not match anything, does not touch headers, and never decodes or rewrites the query.
//!
//! # What each mode does (`meshConfig.pathNormalization.normalization`)
//!
//! Always: the fragment (`#...`) is removed, a `%00` anywhere (or a raw NUL) is refused, and a
//! target containing bytes that cannot appear in an HTTP request target (control characters,
//! space, DEL, non-ASCII) is refused; Envoy's codec or canonicalizer would refuse or escape those,
//! meshguard answers 400 instead of guessing. The target must be in origin form (start with `/`).
//!
//! * [`PathNormalization::None`]: nothing else.
//! * [`PathNormalization::Base`] (Envoy `normalize_path`): Chromium's `CanonicalizePath`, which
//!   Envoy uses, in one left-to-right pass:
//!   - `%XX` that decodes to an unreserved character (`A-Z a-z 0-9 - . _ ~`) is decoded;
//!   - every other valid `%XX` is kept **verbatim, hex case included** (`%2f` stays `%2f`,
//!     `%C0` stays `%C0`), since some servers are sensitive to that case;
//!   - a `%` that does not start a valid escape is kept as is;
//!   - `\` becomes `/`;
//!   - dot segments (`.`, `..`, also spelled `%2e`) are removed as in RFC 3986 §5.2.4, never
//!     climbing above the root; a trailing `.` or `..` leaves a trailing `/`;
//!   - raw `"` `<` `>` `^` `` ` `` `{` `|` `}` are percent-escaped with upper-case hex, like
//!     Chromium does.
//! * [`PathNormalization::MergeSlashes`]: `Base`, then runs of `/` are merged (Envoy
//!   `merge_slashes`).
//! * [`PathNormalization::DecodeAndMergeSlashes`]: first `%2F`/`%2f` → `/` and `%5C`/`%5c` → `\`
//!   (Envoy `UNESCAPE_AND_FORWARD`), then as `MergeSlashes`.
//!
//! Three details come from Envoy's source rather than from the short algorithm in the semantics
//! reference; they agree with it on every documented case:
//! * the escaping of `"` `<` `>` `^` `` ` `` `{` `|` `}` above (the reference allows "reject or
//!   escape"; escaping is what Envoy forwards);
//! * Chromium's "nested escape" guard: when decoding an unreserved escape would make a preceding
//!   stray `%` look like a valid escape (`%%30%30` would become `%00`), that `%` is written as
//!   `%25` (`%%30%30` → `%2500`), so the output can't decode to something else a second time.
//!   Like Chromium, the position of the stray `%` is not forgotten when a `..` cuts the output
//!   back, which can rewrite a later pair of hex digits (`/%zz/../ab%31` → `/a25b1`);
//! * Envoy's slash merging keeps one leading and one trailing `/` and joins the non-empty segments
//!   in between, so a path made only of slashes (`//`, `///`) merges to `//`, not `/`.
//!
//! Not normalized, by design (Envoy doesn't either): `0x2e`, double encoding (`%252e`), overlong
//! UTF-8 (`%c0%ae`), `...`, `;` path parameters, and letter case (`/Admin` ≠ `/admin`).

use std::fmt;

pub use meshguard_model::{PathNormalization, UnknownPathNormalization};

/// Why a request path is refused (400).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum NormalizeError {
    /// `%00` anywhere in the target (the hex digits have no case), or a raw NUL byte.
    NulByte,
    /// A byte that is not allowed in a request target: a control character, space, DEL or a
    /// non-ASCII byte.
    InvalidCharacter,
    /// The target does not start with `/` (`*`, absolute form, empty).
    NotOriginForm,
}

// === impl NormalizeError ===

impl fmt::Display for NormalizeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            NormalizeError::NulByte => "request path contains a NUL character (%00)",
            NormalizeError::InvalidCharacter => {
                "request path contains a character that is not allowed in a request target"
            }
            NormalizeError::NotOriginForm => "request target must be a path starting with '/'",
        })
    }
}

impl std::error::Error for NormalizeError {}

// === normalization ===

/// Normalizes a raw request target: returns the normalized path, followed by `?` and the
/// untouched query if there was one. The fragment is always removed.
pub fn normalize(raw: &str, mode: PathNormalization) -> Result<String, NormalizeError> {
    check_target(raw)?;
    let target = raw.split('#').next().unwrap_or_default();
    let (path, query) = match target.find('?') {
        Some(at) => target.split_at(at),
        None => (target, ""),
    };
    if mode == PathNormalization::None {
        return Ok(target.to_string());
    }

    let mut bytes = path.as_bytes().to_vec();
    if mode == PathNormalization::DecodeAndMergeSlashes {
        bytes = decode_slashes(&bytes);
    }
    let mut out = canonicalize(&bytes);
    if matches!(
        mode,
        PathNormalization::MergeSlashes | PathNormalization::DecodeAndMergeSlashes
    ) {
        out = merge_slashes(&out);
    }
    out.extend_from_slice(query.as_bytes());

    // Every byte written is ASCII: the input was checked to be ASCII, decoding only yields
    // unreserved characters, '/' or '\', and escapes are ASCII hex.
    String::from_utf8(out).map_err(|_| NormalizeError::InvalidCharacter)
}

/// The part of a normalized target that `paths` are matched against: everything before the
/// first `?` (the fragment is already gone after [`normalize`]).
pub fn strip_query(path: &str) -> &str {
    path.split('?').next().unwrap_or_default()
}

/// Refusals that apply in every mode, checked on the whole raw target (query and fragment
/// included), before anything is rewritten.
fn check_target(raw: &str) -> Result<(), NormalizeError> {
    if raw.contains("%00") || raw.as_bytes().contains(&0) {
        return Err(NormalizeError::NulByte);
    }
    if raw.bytes().any(|b| b <= b' ' || b >= 0x7f) {
        return Err(NormalizeError::InvalidCharacter);
    }
    if !raw.starts_with('/') {
        return Err(NormalizeError::NotOriginForm);
    }
    Ok(())
}

/// `%2F`/`%2f` → `/` and `%5C`/`%5c` → `\` (Envoy's `unescapeSlashes`). The replacements can't
/// form new escapes with their neighbours, so one pass equals Envoy's four sequential ones.
fn decode_slashes(path: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(path.len());
    let mut i = 0;
    while let Some(&b) = path.get(i) {
        if b == b'%' {
            match (path.get(i + 1), path.get(i + 2).map(u8::to_ascii_uppercase)) {
                (Some(b'2'), Some(b'F')) => {
                    out.push(b'/');
                    i += 3;
                    continue;
                }
                (Some(b'5'), Some(b'C')) => {
                    out.push(b'\\');
                    i += 3;
                    continue;
                }
                _ => {}
            }
        }
        out.push(b);
        i += 1;
    }
    out
}

/// What the canonicalizer does with a raw byte (Chromium's `kPathCharLookup`, reduced to the
/// bytes that can reach it: control characters, space, DEL and non-ASCII are refused earlier).
fn needs_escaping(b: u8) -> bool {
    matches!(b, b'"' | b'<' | b'>' | b'^' | b'`' | b'{' | b'|' | b'}') || b <= b' ' || b >= 0x7f
}

/// Bytes that an escape is decoded to (RFC 3986 unreserved; `.` is handled as a dot).
fn is_unreserved(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~')
}

/// The value of one hex digit. Only `0-9a-fA-F`: `u8::from_str_radix` would also take a sign.
pub(crate) fn hex_value(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

/// The byte encoded by the two hex digits after `at`, if both are hex. Like Chromium's
/// `DecodeEscaped`, it does not look at the byte at `at` itself.
fn decode_escape(s: &[u8], at: usize) -> Option<u8> {
    let hi = hex_value(*s.get(at + 1)?)?;
    let lo = hex_value(*s.get(at + 2)?)?;
    Some((hi << 4) | lo)
}

/// Length of a dot at the start of `s`: 1 for `.`, 3 for `%2e`/`%2E`, 0 otherwise.
fn dot_len(s: &[u8]) -> usize {
    match s {
        [b'.', ..] => 1,
        [b'%', b'2', b'e' | b'E', ..] => 3,
        _ => 0,
    }
}

fn is_slash(b: Option<&u8>) -> bool {
    matches!(b, Some(b'/' | b'\\'))
}

enum Dot {
    /// Part of a name (`.a`, `..b`): copy the dot.
    NotADirectory,
    /// `.` segment: skip it (and the slash after it).
    Current,
    /// `..` segment: drop the previous segment.
    Up,
}

/// Classifies a dot that follows a `/` in the output; `rest` starts right after the dot.
/// Returns what it is and how many more input bytes it consumes.
fn classify_after_dot(rest: &[u8]) -> (Dot, usize) {
    if rest.is_empty() {
        return (Dot::Current, 0);
    }
    if is_slash(rest.first()) {
        return (Dot::Current, 1);
    }
    let second = dot_len(rest);
    if second > 0 {
        let after = rest.get(second..).unwrap_or_default();
        if after.is_empty() {
            return (Dot::Up, second);
        }
        if is_slash(after.first()) {
            return (Dot::Up, second + 1);
        }
    }
    (Dot::NotADirectory, 0)
}

/// Cuts `out` back to just after the previous `/`, never above the first one. `out` ends with
/// the `/` that preceded the `..`.
fn back_up_to_previous_slash(out: &mut Vec<u8>) {
    let Some(last) = out.len().checked_sub(1) else {
        return;
    };
    let keep = out
        .get(..last)
        .and_then(|head| head.iter().rposition(|&b| b == b'/'))
        .map_or(1, |i| i + 1);
    out.truncate(keep.min(out.len()));
}

/// Chromium's path canonicalization (`DoPartialPath`) as used by Envoy's `normalize_path`.
/// `path` starts with `/` (or `\`), which [`check_target`] guarantees.
fn canonicalize(path: &[u8]) -> Vec<u8> {
    let mut out: Vec<u8> = Vec::with_capacity(path.len());
    // Output index of the last '%' that did not start a valid escape (Chromium's
    // `last_invalid_percent_index`).
    let mut stray_percent: Option<usize> = None;
    let mut i = 0;
    while let Some(&b) = path.get(i) {
        let rest = path.get(i..).unwrap_or_default();
        let dot = dot_len(rest);
        if dot > 0 {
            if out.last() == Some(&b'/') {
                let (kind, consumed) = classify_after_dot(rest.get(dot..).unwrap_or_default());
                match kind {
                    Dot::NotADirectory => {
                        out.push(b'.');
                        i += dot;
                    }
                    Dot::Current => i += dot + consumed,
                    Dot::Up => {
                        back_up_to_previous_slash(&mut out);
                        i += dot + consumed;
                    }
                }
            } else {
                out.push(b'.');
                i += dot;
            }
        } else if b == b'\\' {
            out.push(b'/');
            i += 1;
        } else if b == b'%' {
            match decode_escape(path, i) {
                Some(value) if is_unreserved(value) => {
                    out.push(value);
                    i += 3;
                    if let Some(p) = stray_percent
                        && p + 3 >= out.len()
                    {
                        fix_nested_escape(path, i, p, &mut out);
                    }
                }
                Some(_) => {
                    // Kept exactly, hex case included.
                    out.extend_from_slice(rest.get(..3).unwrap_or_default());
                    i += 3;
                }
                None => {
                    stray_percent = Some(out.len());
                    out.push(b'%');
                    i += 1;
                }
            }
        } else if needs_escaping(b) {
            push_escaped(&mut out, b);
            i += 1;
        } else {
            out.push(b);
            i += 1;
        }
    }
    out
}

#[expect(
    clippy::indexing_slicing,
    reason = "a nibble (< 16) indexes a 16-entry table; the compiler drops the bounds check"
)]
fn push_escaped(out: &mut Vec<u8>, b: u8) {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    out.push(b'%');
    out.push(HEX[usize::from(b >> 4)]);
    out.push(HEX[usize::from(b & 0x0f)]);
}

/// Chromium's `CheckForNestedEscapes`: an unescaped byte was just written within two bytes of a
/// stray `%` at `percent`; if the output now reads as a valid escape there, that `%` becomes
/// `%25`. `next` is the index of the next unread input byte, which may be peeked at.
fn fix_nested_escape(input: &[u8], next: usize, percent: usize, out: &mut Vec<u8>) {
    let len = out.len();
    let Some(&unescaped) = out.last() else {
        return;
    };
    // Output looks like "%c": peek at the next input byte to complete a possible "%cc".
    let peek = percent + 2 == len;
    if peek {
        match input.get(next) {
            Some(&c) if c < 0x80 => out.push(c),
            _ => return,
        }
    }
    if decode_escape(out, percent).is_some() {
        // Turn "%cc" into "%25cc": the first byte after '%' moves right by two.
        if !peek {
            let Some(&first) = out.get(percent + 1) else {
                return;
            };
            out.push(first);
        }
        if let Some(slot) = out.get_mut(percent + 1) {
            *slot = b'2';
        }
        if let Some(slot) = out.get_mut(percent + 2) {
            *slot = b'5';
        }
        out.push(unescaped);
    } else if peek {
        // The peeked byte is read again by the caller.
        out.truncate(len);
    }
}

/// Envoy's `mergeSlashes`: keep one leading and one trailing `/`, join the non-empty segments.
fn merge_slashes(path: &[u8]) -> Vec<u8> {
    if !path.windows(2).any(|w| w == b"//") {
        return path.to_vec();
    }
    let mut out = Vec::with_capacity(path.len());
    if path.first() == Some(&b'/') {
        out.push(b'/');
    }
    for (n, segment) in path
        .split(|&b| b == b'/')
        .filter(|s| !s.is_empty())
        .enumerate()
    {
        if n > 0 {
            out.push(b'/');
        }
        out.extend_from_slice(segment);
    }
    if path.last() == Some(&b'/') {
        out.push(b'/');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    use PathNormalization::{
        Base, DecodeAndMergeSlashes as Decode, MergeSlashes as Merge, None as Plain,
    };

    const ALL: [PathNormalization; 4] = [Plain, Base, Merge, Decode];

    fn norm(raw: &str, mode: PathNormalization) -> String {
        normalize(raw, mode).unwrap_or_else(|e| panic!("{raw:?} in {mode}: {e}"))
    }

    /// One row of the in → out table: expected output for NONE, BASE, MERGE_SLASHES,
    /// DECODE_AND_MERGE_SLASHES.
    fn row(input: &str, expected: [&str; 4]) {
        for (mode, want) in ALL.into_iter().zip(expected) {
            assert_eq!(norm(input, mode), want, "{input:?} in {mode}");
        }
    }

    // --- the docs/semantics.md §3.11 table (Istio tests/integration/security/normalization_test.go) ---

    #[test]
    fn table_fragment() {
        row("/app#foo", ["/app", "/app", "/app", "/app"]);
    }

    #[test]
    fn table_dot_dot() {
        row(
            "/app/../admin",
            ["/app/../admin", "/admin", "/admin", "/admin"],
        );
    }

    #[test]
    fn table_double_slash_trailing() {
        row("/app//", ["/app//", "/app//", "/app/", "/app/"]);
    }

    #[test]
    fn table_encoded_slash() {
        row("/app/%2f", ["/app/%2f", "/app/%2f", "/app/%2f", "/app/"]);
        row("/app%2f/", ["/app%2f/", "/app%2f/", "/app%2f/", "/app/"]);
    }

    #[test]
    fn table_unreserved_decoded_not_a_dot_segment() {
        row(
            "/xyz%30..//abc",
            [
                "/xyz%30..//abc",
                "/xyz0..//abc",
                "/xyz0../abc",
                "/xyz0../abc",
            ],
        );
    }

    #[test]
    fn table_encoded_dot() {
        row(
            "/app/%2E./admin",
            ["/app/%2E./admin", "/admin", "/admin", "/admin"],
        );
    }

    #[test]
    fn table_backslash() {
        row(
            r"/app\admin",
            [r"/app\admin", "/app/admin", "/app/admin", "/app/admin"],
        );
        row(
            r"/app/\/\/\admin",
            [
                r"/app/\/\/\admin",
                "/app//////admin",
                "/app/admin",
                "/app/admin",
            ],
        );
    }

    #[test]
    fn table_encoded_slashes_and_backslashes() {
        let same = "/%2Fapp%5cadmin%5Cabc";
        row(same, [same, same, same, "/app/admin/abc"]);
        row(
            r"/%5Capp%2f%5c%2F%2e%2e%2fadmin%5c\abc",
            [
                r"/%5Capp%2f%5c%2F%2e%2e%2fadmin%5c\abc",
                "/%5Capp%2f%5c%2F..%2fadmin%5c/abc",
                "/%5Capp%2f%5c%2F..%2fadmin%5c/abc",
                "/app/admin/abc",
            ],
        );
    }

    #[test]
    fn table_empty_segment_then_dot_dot() {
        row(
            "/app//../admin",
            ["/app//../admin", "/app/admin", "/app/admin", "/app/admin"],
        );
        row(
            "/app//../../admin",
            ["/app//../../admin", "/admin", "/admin", "/admin"],
        );
    }

    #[test]
    fn table_overlong_utf8_kept_verbatim() {
        assert_eq!(norm("/%c0%2e%c0%2e/admin", Decode), "/%c0.%c0./admin");
        assert_eq!(norm("/%c0%2fadmin", Decode), "/%c0/admin");
        assert_eq!(norm("/%c0%ae%c0%ae/admin", Decode), "/%c0%ae%c0%ae/admin");
    }

    #[test]
    fn table_nul_is_rejected_in_every_mode() {
        for mode in ALL {
            assert_eq!(
                normalize("/admin%00", mode),
                Err(NormalizeError::NulByte),
                "{mode}"
            );
        }
    }

    #[test]
    fn table_root_and_plain_paths() {
        row("/", ["/", "/", "/", "/"]);
        row("/app/", ["/app/", "/app/", "/app/", "/app/"]);
        row("/app", ["/app", "/app", "/app", "/app"]);
    }

    #[test]
    fn table_not_normalized_by_design() {
        for p in [
            "/0x2e0x2e/admin",
            "/0x2e0x2e0x2fadmin",
            "/0x2e0x2e0x5cadmin",
            "/0x2f0x2fadmin",
            "/0x5c0x5cadmin",
            "/%25c0%25ae%25c1%259cadmin",
            "/%25c0%25ae%25c0%25ae/admin",
            "/%25c0%25afadmin",
            "/%25c1%259cadmin",
            "/%252e%252e/admin",
            "/%252e%252e%252fadmin",
            "/%c1%9cadmin",
            "/%c0%afadmin",
            "/.../admin",
            "/..../admin",
            "/..;/admin",
            "/;/admin",
            "/admin;a=b",
            "/admin;a=b/xyz",
            "/admin,a=b/xyz",
            "/Admin",
            "/ADMIN",
        ] {
            assert_eq!(norm(p, Decode), p);
        }
    }

    /// Istio's generated cases: `/admin%XX` for XX = 01..ff (lower-case hex), in
    /// DECODE_AND_MERGE_SLASHES. Unreserved, `/` and `\` are decoded; everything else is kept.
    #[test]
    fn every_single_escape() {
        for i in 1u8..=0xff {
            let input = format!("/admin%{i:02x}");
            let want = match i {
                b'/' | b'\\' => "/admin/".to_string(),
                _ if is_unreserved(i) => format!("/admin{}", char::from(i)),
                _ => input.clone(),
            };
            assert_eq!(norm(&input, Decode), want, "{input}");
        }
    }

    // --- docs/semantics.md §3.13 bypass bulletins that involve paths ---

    #[test]
    fn bulletin_dot_dot_reaches_admin() {
        assert_eq!(norm("/public/../admin", Base), "/admin");
    }

    #[test]
    fn bulletin_double_slash_and_encoded_slash() {
        assert_eq!(norm("//admin", Base), "//admin");
        assert_eq!(norm("//admin", Merge), "/admin");
        assert_eq!(norm("//admin", Decode), "/admin");
        assert_eq!(norm("/%2Fadmin", Base), "/%2Fadmin");
        assert_eq!(norm("/%2Fadmin", Merge), "/%2Fadmin");
        assert_eq!(norm("/%2Fadmin", Decode), "/admin");
    }

    #[test]
    fn bulletin_fragment_stripped() {
        for mode in ALL {
            assert_eq!(norm("/user/profile#section1", mode), "/user/profile");
        }
    }

    #[test]
    fn bulletin_empty_query_and_fragment() {
        for mode in ALL {
            assert_eq!(norm("/secret?", mode), "/secret?");
            assert_eq!(strip_query(&norm("/secret?", mode)), "/secret");
            assert_eq!(norm("/secret#", mode), "/secret");
            assert_eq!(norm("/secret?#x", mode), "/secret?");
        }
    }

    #[test]
    fn bulletin_nul_anywhere() {
        for mode in ALL {
            for raw in ["/admin%00", "/a%00b", "/a?x=%00", "/a#%00", "/a\0b"] {
                assert_eq!(
                    normalize(raw, mode),
                    Err(NormalizeError::NulByte),
                    "{raw:?}"
                );
            }
        }
    }

    // --- dot segments ---

    #[test]
    fn trailing_dot_segments_leave_a_slash() {
        assert_eq!(norm("/a/b/..", Base), "/a/");
        assert_eq!(norm("/a/.", Base), "/a/");
        assert_eq!(norm("/a/b/%2e%2E", Base), "/a/");
        assert_eq!(norm("/a/%2E", Base), "/a/");
        assert_eq!(norm("/.", Base), "/");
        assert_eq!(norm("/..", Base), "/");
    }

    #[test]
    fn never_above_root() {
        assert_eq!(norm("/../admin", Base), "/admin");
        assert_eq!(norm("/../../../admin", Base), "/admin");
        assert_eq!(norm("/a/../../b", Base), "/b");
        assert_eq!(norm("/%2e%2e/%2E%2e/etc/passwd", Base), "/etc/passwd");
        assert_eq!(norm(r"/..\..\admin", Base), "/admin");
    }

    #[test]
    fn encoded_dot_mixes() {
        for dots in ["%2e%2E", "%2E%2e", ".%2e", "%2e.", "%2E%2E", "%2e%2e"] {
            let raw = format!("/a/b/{dots}/c");
            assert_eq!(norm(&raw, Base), "/a/c", "{raw}");
        }
        assert_eq!(norm("/a/%2e/b", Base), "/a/b");
        // Three dots are a name; an encoded dot outside a dot segment is just decoded.
        assert_eq!(norm("/a/.%2e%2e/b", Base), "/a/.../b");
        assert_eq!(norm("/a%2e%2e/b", Base), "/a../b");
    }

    #[test]
    fn single_dot_segments_are_dropped() {
        assert_eq!(norm("/./a/./b/.", Base), "/a/b/");
        assert_eq!(norm("/a/.b/..c", Base), "/a/.b/..c");
    }

    #[test]
    fn dot_dot_after_encoded_slash_is_a_name_unless_decoded() {
        assert_eq!(norm("/a%2f..%2fadmin", Base), "/a%2f..%2fadmin");
        assert_eq!(norm("/x/a%2f..%2fadmin", Decode), "/x/admin");
    }

    // --- escapes ---

    #[test]
    fn unreserved_escapes_are_decoded_others_kept_with_their_case() {
        assert_eq!(norm("/%41%62%7e%5F%2D", Base), "/Ab~_-");
        assert_eq!(norm("/%3a%3A%20%2b", Base), "/%3a%3A%20%2b");
        assert_eq!(norm("/%e2%82%AC", Base), "/%e2%82%AC");
    }

    #[test]
    fn invalid_escapes_pass_through() {
        assert_eq!(norm("/%", Base), "/%");
        assert_eq!(norm("/%4", Base), "/%4");
        assert_eq!(norm("/%zz/%g1", Base), "/%zz/%g1");
        assert_eq!(norm("/100%", Base), "/100%");
    }

    #[test]
    fn nested_escapes_are_defused() {
        // "%%30%30" would read as "%00" after one decoding pass.
        assert_eq!(norm("/%%30%30", Base), "/%2500");
        assert_eq!(norm("/%%300", Base), "/%2500");
        assert_eq!(norm("/%A%30", Base), "/%25A0");
        // Not hex after all: left alone.
        assert_eq!(norm("/%%30g", Base), "/%0g");
        assert_eq!(norm("/%%7a", Base), "/%z");
    }

    /// Chromium keeps the stray-`%` position across a `..` that cuts the output back and does
    /// not re-check that a `%` is still there; Envoy inherits the resulting rewrite.
    #[test]
    fn nested_escape_guard_keeps_chromiums_stale_position() {
        assert_eq!(norm("/%zz/../ab%31", Base), "/a25b1");
    }

    #[test]
    fn chromium_escapes_unsafe_ascii() {
        assert_eq!(
            norm(r#"/a"b<c>d^e`f{g|h}"#, Base),
            "/a%22b%3Cc%3Ed%5Ee%60f%7Bg%7Ch%7D"
        );
        assert_eq!(norm("/{x}", Plain), "/{x}");
    }

    // --- query and slashes ---

    #[test]
    fn query_is_never_modified() {
        for mode in ALL {
            assert_eq!(
                norm("/a/../b?x=/../y&z=%2F%2e%41\\//", mode),
                format!(
                    "{}?x=/../y&z=%2F%2e%41\\//",
                    if mode == Plain { "/a/../b" } else { "/b" }
                )
            );
        }
        assert_eq!(norm("/a?b?c", Base), "/a?b?c");
        assert_eq!(norm("/a?{x}", Base), "/a?{x}");
    }

    #[test]
    fn strip_query_takes_the_path() {
        assert_eq!(strip_query("/a/b?c=d"), "/a/b");
        assert_eq!(strip_query("/a/b?"), "/a/b");
        assert_eq!(strip_query("/a/b"), "/a/b");
        assert_eq!(strip_query("?x"), "");
        assert_eq!(strip_query(""), "");
    }

    #[test]
    fn merging_follows_envoy() {
        assert_eq!(norm("///a///b///", Merge), "/a/b/");
        assert_eq!(norm("/a//b", Merge), "/a/b");
        // Envoy keeps a leading and a trailing slash around nothing.
        assert_eq!(norm("//", Merge), "//");
        assert_eq!(norm("///", Merge), "//");
        assert_eq!(norm("/", Merge), "/");
        assert_eq!(norm("//?a//b", Merge), "//?a//b");
    }

    #[test]
    fn decode_applies_before_dot_removal() {
        assert_eq!(norm("/a%2F..%2Fb", Decode), "/b");
        assert_eq!(norm("/a%5C..%5Cb", Decode), "/b");
        assert_eq!(norm("/a%252Fb", Decode), "/a%252Fb");
    }

    #[test]
    fn none_keeps_everything_but_the_fragment() {
        assert_eq!(
            norm(r"/a/./b/../%2e%41\c//d#e", Plain),
            r"/a/./b/../%2e%41\c//d"
        );
    }

    // --- errors ---

    #[test]
    fn invalid_characters_are_refused() {
        for raw in [
            "/a b",
            "/a\tb",
            "/a\r\n",
            "/a\x7f",
            "/caf\u{e9}",
            "/a?q=\u{1F600}",
            "/a#\x01",
        ] {
            for mode in ALL {
                assert_eq!(
                    normalize(raw, mode),
                    Err(NormalizeError::InvalidCharacter),
                    "{raw:?}"
                );
            }
        }
    }

    #[test]
    fn only_origin_form_is_accepted() {
        for raw in ["", "*", "http://x/", "a/b", "?a", "#a", r"\a", "%2Fa"] {
            for mode in ALL {
                assert_eq!(
                    normalize(raw, mode),
                    Err(NormalizeError::NotOriginForm),
                    "{raw:?}"
                );
            }
        }
    }

    #[test]
    fn error_texts() {
        assert!(NormalizeError::NulByte.to_string().contains("%00"));
        assert!(NormalizeError::NotOriginForm.to_string().contains('/'));
        assert!(!NormalizeError::InvalidCharacter.to_string().is_empty());
    }

    // --- mode names ---

    #[test]
    fn mode_names_round_trip() {
        for mode in ALL {
            assert_eq!(mode.as_str().parse::<PathNormalization>(), Ok(mode));
            assert_eq!(
                mode.as_str().to_lowercase().parse::<PathNormalization>(),
                Ok(mode)
            );
            assert_eq!(mode.to_string(), mode.as_str());
        }
        assert_eq!("DEFAULT".parse::<PathNormalization>(), Ok(Base));
        assert_eq!("Default".parse::<PathNormalization>(), Ok(Base));
        assert_eq!(PathNormalization::default(), Base);
    }

    #[test]
    fn unknown_mode_lists_the_accepted_values() {
        let err = "MERGE"
            .parse::<PathNormalization>()
            .unwrap_err()
            .to_string();
        for name in [
            "NONE",
            "BASE",
            "DEFAULT",
            "MERGE_SLASHES",
            "DECODE_AND_MERGE_SLASHES",
        ] {
            assert!(err.contains(name), "{err}");
        }
        assert!(err.contains("\"MERGE\""), "{err}");
        assert!("".parse::<PathNormalization>().is_err());
    }

    /// The reference algorithm of docs/semantics.md §3.11, step by step, with Envoy's
    /// slash merging. Used to check the one-pass port on inputs where the two must agree: every
    /// `%` starts a valid escape and no byte needs escaping.
    fn reference(raw: &str, mode: PathNormalization) -> String {
        let target = raw.split('#').next().unwrap_or_default();
        let (path, query) = target.split_at(target.find('?').unwrap_or(target.len()));
        if mode == Plain {
            return target.to_string();
        }
        let mut p = path.to_string();
        if mode == Decode {
            for (from, to) in [("%2F", "/"), ("%2f", "/"), ("%5C", "\\"), ("%5c", "\\")] {
                p = p.replace(from, to);
            }
        }
        let bytes = p.as_bytes();
        let mut decoded = Vec::new();
        let mut i = 0;
        while i < bytes.len() {
            match decode_escape(bytes, i).filter(|&v| bytes[i] == b'%' && is_unreserved(v)) {
                Some(v) => {
                    decoded.push(v);
                    i += 3;
                }
                None => {
                    decoded.push(bytes[i]);
                    i += 1;
                }
            }
        }
        let p = String::from_utf8(decoded).unwrap().replace('\\', "/");
        let segments: Vec<&str> = p[1..].split('/').collect();
        let mut kept: Vec<&str> = Vec::new();
        for (n, seg) in segments.iter().enumerate() {
            let last = n + 1 == segments.len();
            match *seg {
                "." => {}
                ".." => {
                    kept.pop();
                }
                other => kept.push(other),
            }
            if last && (*seg == "." || *seg == "..") {
                kept.push("");
            }
        }
        let mut out = format!("/{}", kept.join("/")).into_bytes();
        if mode != Base {
            out = merge_slashes(&out);
        }
        String::from_utf8(out).unwrap() + query
    }

    /// A small deterministic generator, so the test needs no extra crate.
    fn xorshift(state: &mut u64) -> u64 {
        *state ^= *state << 13;
        *state ^= *state >> 7;
        *state ^= *state << 17;
        *state
    }

    #[test]
    fn one_pass_port_agrees_with_the_reference_algorithm() {
        let tokens = [
            "/", "/", "/", "\\", ".", "..", ".", "a", "Z", "%2e", "%2E", "%2f", "%2F", "%5c",
            "%5C", "%41", "%7e", "%3a", "%c0", "-", "~", "%25", "?", "#",
        ];
        let mut state = 0x9E37_79B9_7F4A_7C15_u64;
        for _ in 0..20_000 {
            let len = 1 + xorshift(&mut state) % 12;
            let mut raw = String::from("/");
            for _ in 0..len {
                let pick = xorshift(&mut state) % tokens.len() as u64;
                raw.push_str(tokens[pick as usize]);
            }
            for mode in ALL {
                assert_eq!(norm(&raw, mode), reference(&raw, mode), "{raw:?} in {mode}");
            }
        }
    }

    #[test]
    fn never_panics_on_awkward_input() {
        let pieces = [
            "/", "//", ".", "..", "%", "%2", "%2e", "%2E", "%%", "%30", "%2f", "%5c", "\\", "?",
            "#", "a", "{", "%7", "%zz",
        ];
        for a in pieces {
            for b in pieces {
                for c in pieces {
                    let raw = format!("/{a}{b}{c}");
                    for mode in ALL {
                        if let Ok(out) = normalize(&raw, mode) {
                            assert!(out.starts_with('/'), "{raw:?} → {out:?}");
                        }
                    }
                }
            }
        }
    }
}
