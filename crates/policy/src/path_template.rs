//! Istio path templates in `to.operation.paths` / `notPaths`: `{*}` and `{**}`.
//!
//! This module owns two things: Istio's validation of a path value
//! (`security.CheckValidPathTemplate`, with its error texts), and matching a request path against
//! a template exactly as the Envoy `uri_template` matcher that istiod generates for it does.
//! It does not normalize paths (the engine does, before matching), and it does not handle the
//! plain `*` prefix/suffix syntax of non-template paths (`/allow*`): that is ordinary string
//! matching and lives with the other value matchers.
//!
//! # Matching
//!
//! istiod rewrites `{*}` to `*` and `{**}` to `**`; Envoy compiles that to a regular expression
//! anchored at both ends, in which
//!
//! * `{*}` is `[a-zA-Z0-9-._~%!$&'()+,;:@=*]+`: exactly one non-empty path segment;
//! * `{**}` is the same class plus `/`, zero or more times: any number of segments, possibly empty;
//! * every other segment is literal, and segments are joined by `/`; a trailing `/` in the
//!   template is kept.
//!
//! The character class is Envoy 1.40's `kLiteral` (`source/extensions/path/uri_template_lib/
//! uri_template_internal.cc`): RFC 3986 `pchar`, **including** the sub-delims `=` and `*`
//! (older Envoy releases left both out). `{*}` does not match anything with
//! a space, `"`, `<`, `>`, `[`, `]`, `{`, `}`, `|`, `\`, `^`, `` ` ``, `#`, `?`, `/` or a
//! non-ASCII byte.
//!
//! No regex engine is needed: operators are whole segments and `{**}` is the last operator, so
//! everything before `{**}` is matched left to right (a `{*}` takes the longest run of class
//! characters, which is the only run that can be followed by the `/` or the end that must come
//! next), and what follows `{**}` is a fixed literal that must end the path. Matching is linear
//! in the length of the path.
//!
//! # Validation
//!
//! [`PathTemplate::parse`] applies Istio's rules to the whole value: every `{*}`/`{**}` must be a
//! whole segment, no other `{` or `}` may appear, `{**}` must be the last operator (literals may
//! follow it), and in a template every literal segment must match
//! `[a-zA-Z0-9-._~%!$&'()+,;:@=]+` (so `*` may not appear in a literal, and `/a/{*}.txt` or
//! `/a/x{*}` are rejected: operators are whole segments). Istio trims all leading and trailing
//! `/` before validating, so a template without a leading `/`, or starting or ending with `//`,
//! passes istiod but Envoy rejects (NACKs) the generated config (an empty segment in the middle
//! is rejected by both); [`PathTemplate::envoy_rejection`] says so. Such templates are still
//! matched literally here, which for a missing leading `/` means they never match.

use std::fmt;

/// `{*}`: one path segment.
const MATCH_ONE: &str = "{*}";
/// `{**}`: any number of path segments.
const MATCH_ANY: &str = "{**}";

/// A compiled `paths` template such as `/store/{**}/cart`.
#[derive(Clone)]
pub struct PathTemplate {
    source: String,
    /// What must match before the `{**}` (or the whole path when there is none).
    head: Vec<Piece>,
    /// The literal after `{**}`, when the template has one (possibly empty).
    glob_tail: Option<String>,
}

/// One step of the part of a template before `{**}`.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Piece {
    /// Literal text, slashes included.
    Literal(String),
    /// `{*}`.
    Segment,
}

// === impl PathTemplate ===

impl PathTemplate {
    /// True when `value` uses template operators and must be compiled with [`PathTemplate::parse`].
    pub fn is_template(value: &str) -> bool {
        value.contains(MATCH_ONE) || value.contains(MATCH_ANY)
    }

    /// Compiles a template, or explains why Istio would reject it.
    ///
    /// The error is Istio's text without the field name:
    /// `invalid or unsupported path <p>. <reason>`, where `<p>` is the value with leading and
    /// trailing `/` trimmed, as Istio prints it; [`PathTemplate::validate`] adds the field name.
    /// A value without operators is also validated (Istio rejects stray braces in any path) and
    /// then matches only itself.
    pub fn parse(value: &str) -> Result<PathTemplate, String> {
        check(value).map_err(|e| e.message(None))?;
        Ok(Self::compile(value))
    }

    /// Istio's `CheckValidPathTemplate` for one value of the field `field` (`Paths` or
    /// `NotPaths`), with Istio's exact message:
    /// `invalid or unsupported path <p>, found in <field>. <reason>`.
    pub fn validate(field: &str, value: &str) -> Result<(), String> {
        check(value).map_err(|e| e.message(Some(field)))
    }

    /// Matches a path that has already been normalized. Envoy's matcher ignores the query and
    /// fragment, so anything from the first `?` or `#` on is ignored here too.
    pub fn matches(&self, path: &str) -> bool {
        let path = path.split(['?', '#']).next().unwrap_or_default().as_bytes();
        let mut pos = 0;
        for piece in &self.head {
            let rest = path.get(pos..).unwrap_or_default();
            match piece {
                Piece::Literal(text) => {
                    if !rest.starts_with(text.as_bytes()) {
                        return false;
                    }
                    pos += text.len();
                }
                Piece::Segment => {
                    let run = rest.iter().take_while(|&&b| is_segment_byte(b)).count();
                    if run == 0 {
                        return false;
                    }
                    pos += run;
                }
            }
        }
        let rest = path.get(pos..).unwrap_or_default();
        match &self.glob_tail {
            None => rest.is_empty(),
            Some(tail) => rest
                .strip_suffix(tail.as_bytes())
                .is_some_and(|globbed| globbed.iter().all(|&b| b == b'/' || is_segment_byte(b))),
        }
    }

    /// The value as written in the policy.
    pub fn as_str(&self) -> &str {
        &self.source
    }

    /// Why Envoy would refuse the matcher istiod generates for this template, if it would:
    /// istiod's validation is looser than Envoy's parser in two ways (see the module docs).
    pub fn envoy_rejection(&self) -> Option<&'static str> {
        if !Self::is_template(&self.source) {
            return None;
        }
        if !self.source.starts_with('/') {
            Some("Envoy requires a path template to start with '/'")
        } else if self.source.contains("//") {
            Some("Envoy rejects an empty segment ('//') in a path template")
        } else {
            None
        }
    }

    /// Builds the matcher of a value that passed [`check`].
    fn compile(value: &str) -> PathTemplate {
        let mut head = Vec::new();
        let mut literal = String::new();
        let mut glob_tail = None;
        for (n, segment) in value.split('/').enumerate() {
            if n > 0 {
                literal.push('/');
            }
            // After `{**}` only literals can follow (validation), so they all go to the tail.
            if glob_tail.is_none() && (segment == MATCH_ONE || segment == MATCH_ANY) {
                if !literal.is_empty() {
                    head.push(Piece::Literal(std::mem::take(&mut literal)));
                }
                if segment == MATCH_ONE {
                    head.push(Piece::Segment);
                } else {
                    glob_tail = Some(String::new());
                }
            } else {
                literal.push_str(segment);
            }
        }
        match glob_tail.as_mut() {
            Some(tail) => *tail = literal,
            None if !literal.is_empty() => head.push(Piece::Literal(literal)),
            None => {}
        }
        PathTemplate {
            source: value.to_string(),
            head,
            glob_tail,
        }
    }
}

impl fmt::Debug for PathTemplate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("PathTemplate").field(&self.source).finish()
    }
}

impl fmt::Display for PathTemplate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.source)
    }
}

// === validation ===

/// Why Istio rejects a path value.
#[derive(Debug, PartialEq, Eq)]
enum Invalid<'a> {
    /// `{*}` or `{**}` after a `{**}`.
    GlobNotLast { trimmed: &'a str },
    /// A brace that is not part of a whole-segment operator.
    StrayBrace { trimmed: &'a str },
    /// A literal segment of a template with a character outside Istio's class (or empty).
    BadLiteral { trimmed: &'a str, segment: &'a str },
}

impl Invalid<'_> {
    fn message(&self, field: Option<&str>) -> String {
        let (trimmed, reason) = match self {
            Invalid::GlobNotLast { trimmed } => {
                (trimmed, "{**} is not the last operator".to_string())
            }
            Invalid::StrayBrace { trimmed } => (
                trimmed,
                "Contains '{' or '}' beyond a supported path template".to_string(),
            ),
            Invalid::BadLiteral { trimmed, segment } => (
                trimmed,
                format!("Contains segment {segment} with invalid string literal"),
            ),
        };
        match field {
            Some(field) => {
                format!("invalid or unsupported path {trimmed}, found in {field}. {reason}")
            }
            None => format!("invalid or unsupported path {trimmed}. {reason}"),
        }
    }
}

/// Istio's `CheckValidPathTemplate` for one value, rule for rule and in the same order.
fn check(value: &str) -> Result<(), Invalid<'_>> {
    let is_template = PathTemplate::is_template(value);
    let trimmed = value.trim_matches('/');
    let mut seen_glob = false;
    for segment in trimmed.split('/') {
        if segment == MATCH_ONE || segment == MATCH_ANY {
            if seen_glob {
                return Err(Invalid::GlobNotLast { trimmed });
            }
            seen_glob = segment == MATCH_ANY;
            continue;
        }
        if segment.contains(['{', '}']) {
            return Err(Invalid::StrayBrace { trimmed });
        }
        if is_template && !is_istio_literal(segment) {
            return Err(Invalid::BadLiteral { trimmed, segment });
        }
    }
    Ok(())
}

/// Istio's `validLiteral`: `^[a-zA-Z0-9-._~%!$&'()+,;:@=]+$` (Envoy's class without `*`).
fn is_istio_literal(segment: &str) -> bool {
    !segment.is_empty() && segment.bytes().all(|b| b != b'*' && is_segment_byte(b))
}

/// Envoy 1.40's `kLiteral` class, what `{*}` is made of: RFC 3986 pchar, `=` and `*` included
/// (`a-zA-Z0-9-._~%!$&'()+,;:@=*`).
fn is_segment_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"-._~%!$&'()+,;:@=*".contains(&b)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn template(value: &str) -> PathTemplate {
        PathTemplate::parse(value).unwrap_or_else(|e| panic!("{value}: {e}"))
    }

    fn assert_matches(value: &str, yes: &[&str], no: &[&str]) {
        let t = template(value);
        for path in yes {
            assert!(t.matches(path), "{value} should match {path}");
        }
        for path in no {
            assert!(!t.matches(path), "{value} should not match {path}");
        }
    }

    fn parse_err(value: &str) -> String {
        match PathTemplate::parse(value) {
            Ok(t) => panic!("{value} should be rejected, got {t:?}"),
            Err(e) => e,
        }
    }

    // --- docs/semantics.md §3.6 examples (Istio TestAuthz_PathTemplating) ---

    #[test]
    fn glob_at_the_end() {
        assert_matches(
            "/allow/admin/{**}",
            &[
                "/allow/admin/",
                "/allow/admin/temp",
                "/allow/admin/foo/temp.txt",
            ],
            &[
                "/allow/admin",
                "/allow/adminx",
                "/allow/",
                "/deny/admin/temp",
            ],
        );
    }

    #[test]
    fn segment_then_glob() {
        assert_matches(
            "/foo/{*}/bar/{**}",
            &["/foo/buzz/bar/bat", "/foo/buzz/bar/", "/foo/buzz/bar/a/b/c"],
            &[
                "/foo/bar/bat.txt",
                "/foo//bar/bat.txt",
                "/foo/buzz/bar",
                "/foo/a/b/bar/bat",
            ],
        );
    }

    #[test]
    fn glob_followed_by_literal() {
        assert_matches(
            "/store/{**}/cart",
            &[
                "/store//cart",
                "/store/foo/bar/cart",
                "/store/foo/cart",
                "/store///cart",
            ],
            &[
                "/store/cart",
                "/store/foo/cart/",
                "/store/foo/carts",
                "/shop/foo/cart",
            ],
        );
    }

    // --- matching details ---

    #[test]
    fn segment_is_never_empty_and_never_crosses_a_slash() {
        assert_matches(
            "/a/{*}",
            &["/a/b", "/a/b.c"],
            &["/a/", "/a", "/a/b/", "/a/b/c", "/a//"],
        );
        assert_matches("/{*}", &["/x"], &["/", "//", "/x/"]);
        assert_matches("/a/{*}/", &["/a/b/"], &["/a/b", "/a//", "/a/b/c/"]);
        assert_matches("/{*}/{*}", &["/a/b"], &["/a/", "//b", "/a/b/c", "/ab"]);
    }

    #[test]
    fn segment_character_class_is_envoys() {
        let t = template("/x/{*}");
        // Envoy 1.40's class, `=` and `*` included: a DENY on `/x/{*}` covers `a=b` and `a*b`.
        for ok in [
            "AZaz09",
            "-._~",
            "%2F",
            "!$&'()+,;",
            ":@",
            "a%20b",
            "a=b",
            "a*b",
            "=",
            "*",
            "**",
            "k=v;x=*",
        ] {
            assert!(t.matches(&format!("/x/{ok}")), "{ok}");
        }
        // Not pchar at all.
        for bad in [
            "a b",
            "a\"b",
            "a<b",
            "a>b",
            "a[b",
            "a]b",
            "a{b",
            "a}b",
            "a|b",
            "a\\b",
            "a^b",
            "a`b",
            "caf\u{e9}",
        ] {
            assert!(!t.matches(&format!("/x/{bad}")), "{bad}");
        }
        let g = template("/x/{**}");
        assert!(g.matches("/x/a/b%2Fc/d"));
        assert!(g.matches("/x/a/b=c/d"));
        assert!(g.matches("/x/a*/*b/*"));
        assert!(!g.matches("/x/a/\u{e9}"));
        assert!(!g.matches("/x/a/b c"));
        // A literal after `{**}` is still literal: `*` there is not an operator.
        let tail = template("/x/{**}/y=1");
        assert!(tail.matches("/x/a*/y=1"));
        assert!(!tail.matches("/x/a/y=2"));
    }

    #[test]
    fn template_shapes_follow_istio() {
        // Istio only builds a template from whole-segment `{*}`/`{**}`; an operator glued to a
        // literal is a stray brace, and `*` is not allowed in a template's literal segments
        // (Envoy would read a bare `*` as an operator of its own).
        for value in [
            "/a/{*}.txt",
            "/a/x{*}",
            "/a/{*}x/b",
            "/a/{**}.txt",
            "/a/{*}{*}",
        ] {
            assert!(
                parse_err(value).ends_with("Contains '{' or '}' beyond a supported path template"),
                "{value}"
            );
        }
        for (value, segment) in [("/a*b/{*}", "a*b"), ("/a/{*}/b*", "b*"), ("/{*}/*", "*")] {
            assert!(
                parse_err(value).ends_with(&format!(
                    "Contains segment {segment} with invalid string literal"
                )),
                "{value}"
            );
        }
        // `=` in a literal is fine for Istio and for Envoy 1.40.
        let t = template("/a=b/{*}/c=d");
        assert_eq!(t.envoy_rejection(), None);
        assert!(t.matches("/a=b/x=y/c=d"));
        // `{*}` per segment, several times; `{**}` once and last, literals may follow it.
        assert_matches(
            "/{*}/{*}/{*}",
            &["/a/b/c", "/=/*/a=b"],
            &["/a/b", "/a/b/c/d"],
        );
        assert_matches(
            "/{*}/mid/{**}/end",
            &["/a/mid//end", "/a=1/mid/x/y/end"],
            &["/a/mid/end", "/a/b/mid/x/end"],
        );
    }

    #[test]
    fn literals_are_exact_and_case_sensitive() {
        assert_matches(
            "/Admin/{*}",
            &["/Admin/x"],
            &["/admin/x", "/ADMIN/x", "/Admin.x"],
        );
        // Regex metacharacters in literals are plain characters.
        assert_matches(
            "/a.b/{*}/c+d$(e)",
            &["/a.b/x/c+d$(e)"],
            &["/aXb/x/c+d$(e)", "/a.b/x/cd$(e)"],
        );
    }

    #[test]
    fn glob_alone_matches_everything_under_root() {
        assert_matches("/{**}", &["/", "/a", "/a/b/", "//"], &["", "a"]);
    }

    #[test]
    fn glob_may_be_empty_between_literals() {
        assert_matches(
            "/a/{**}/b/c",
            &["/a//b/c", "/a/x/y/b/c", "/a/b/c/b/c"],
            &["/a/b/c", "/a/b/cc"],
        );
        assert_matches("/a/{**}/", &["/a//", "/a/b/"], &["/a/", "/a/b"]);
    }

    #[test]
    fn query_and_fragment_are_ignored() {
        assert_matches(
            "/a/{*}",
            &["/a/b?c=d", "/a/b#e", "/a/b?"],
            &["/a/?b", "/a/#b"],
        );
    }

    #[test]
    fn template_operators_inside_the_request_path_are_plain_text() {
        // A request path never "contains" an operator; `{` is outside the class anyway.
        assert_matches("/a/{*}", &[], &["/a/{*}", "/a/{**}"]);
        assert_matches("/a/b", &["/a/b"], &["/a/b/", "/a/c"]);
    }

    #[test]
    fn long_paths_are_fine() {
        let t = template("/a/{*}/{**}/z");
        let long = format!("/a/b/{}z", "x/".repeat(100_000));
        assert!(t.matches(&long));
        assert!(!t.matches(&format!("{long}/")));
    }

    #[test]
    fn never_panics_on_multibyte_input() {
        // Not a template, so Istio does not check its characters; it matches only itself.
        let t = template("/\u{e9}");
        assert!(t.matches("/\u{e9}"));
        assert!(!t.matches("/\u{e9}\u{e9}"));
        for path in ["", "/", "\u{1F600}", "/a/\u{1F600}", "é", "/é/é"] {
            for value in ["/{*}", "/{**}", "/a/{**}/b", "/{*}/é"] {
                let _ = PathTemplate::parse(value).map(|t| t.matches(path));
            }
        }
    }

    /// The regex Envoy builds, interpreted by plain backtracking: the reference for the
    /// linear matcher.
    fn regex_like(template: &str, path: &[u8]) -> bool {
        enum Tok<'a> {
            Lit(&'a [u8]),
            One,
            Any,
        }
        let mut toks = Vec::new();
        for (n, seg) in template.split('/').enumerate() {
            if n > 0 {
                toks.push(Tok::Lit(b"/"));
            }
            toks.push(match seg {
                "{*}" => Tok::One,
                "{**}" => Tok::Any,
                lit => Tok::Lit(lit.as_bytes()),
            });
        }
        fn go(toks: &[Tok<'_>], path: &[u8]) -> bool {
            let Some((first, rest)) = toks.split_first() else {
                return path.is_empty();
            };
            match first {
                Tok::Lit(l) => path.starts_with(l) && go(rest, &path[l.len()..]),
                Tok::One | Tok::Any => {
                    let any = matches!(first, Tok::Any);
                    let min = usize::from(!any);
                    let max = path
                        .iter()
                        .take_while(|&&b| is_segment_byte(b) || (any && b == b'/'))
                        .count();
                    (min..=max).any(|n| go(rest, &path[n..]))
                }
            }
        }
        go(&toks, path)
    }

    fn xorshift(state: &mut u64) -> u64 {
        *state ^= *state << 13;
        *state ^= *state >> 7;
        *state ^= *state << 17;
        *state
    }

    #[test]
    fn linear_matcher_agrees_with_the_regex() {
        let templates = [
            "/{*}",
            "/{**}",
            "/a/{*}",
            "/a/{**}",
            "/a/{*}/",
            "/a/{**}/",
            "/{*}/{*}",
            "/{*}/b/{**}",
            "/a/{**}/b",
            "/a/{**}/b/a",
            "/{*}/{**}/a/",
            "/a/{*}/a/{*}/{**}/a/a",
        ];
        let alphabet = [
            b"/".as_slice(),
            b"/",
            b"a",
            b"b",
            b"a",
            b"=",
            b".",
            b"%2F",
            b"//",
        ];
        let mut state = 0x2545_F491_4F6C_DD1D_u64;
        let mut hits = 0;
        for template_text in templates {
            let t = template(template_text);
            for _ in 0..3_000 {
                // Mostly rooted paths, so that matches are common enough to be tested too.
                let mut path = if xorshift(&mut state).is_multiple_of(8) {
                    Vec::new()
                } else {
                    b"/".to_vec()
                };
                for _ in 0..xorshift(&mut state) % 10 {
                    path.extend_from_slice(
                        alphabet[(xorshift(&mut state) % alphabet.len() as u64) as usize],
                    );
                }
                let text = String::from_utf8(path.clone()).unwrap();
                let expected = regex_like(template_text, &path);
                assert_eq!(t.matches(&text), expected, "{template_text} vs {text:?}");
                hits += usize::from(expected);
            }
        }
        // The generator must exercise the matching side too, not only rejections.
        assert!(hits > 1_000, "only {hits} matching paths generated");
    }

    // --- validation (Istio TestCheckValidPathTemplate and docs/semantics.md §4.3 messages) ---

    #[test]
    fn valid_templates() {
        for value in [
            "/{*}/foo",
            "/{*}/foo/",
            "/foo/{**}/bar",
            "/foo/bar/{**}",
            "/api/{*}/users/{*}/data/{**}",
            "/{**}",
            "/api/{*}/key=value",
            "/api/{*}/test%20",
            "/api/{*}/user's-data",
        ] {
            assert!(PathTemplate::parse(value).is_ok(), "{value}");
            assert!(PathTemplate::validate("Paths", value).is_ok(), "{value}");
        }
    }

    #[test]
    fn glob_must_be_the_last_operator() {
        for value in [
            "/{**}/foo/temp/{*}/bar",
            "/{**}/{**}",
            "/{**}/foo/temp/{**}/bar",
            "/api/{**}/{*}",
        ] {
            assert!(
                parse_err(value).ends_with("{**} is not the last operator"),
                "{value}"
            );
        }
        assert_eq!(
            parse_err("/{**}/{**}"),
            "invalid or unsupported path {**}/{**}. {**} is not the last operator"
        );
    }

    #[test]
    fn stray_braces_are_rejected() {
        for value in [
            "/foo/{**}buzz/bar",
            "/{*}/foo/{}/bar",
            "/foo/{buzz}/bar/{**}",
            "/foo/{buzz=*}/bar/{**}",
            "/{*}/foo/{buzz=**}/bar",
            "/{*}/foo/{**}bar",
            "/{*}/foo/{*}.txt",
            "/{*}/foo/{temp",
            "/{*}/foo/temp}/bar",
            "/{*}/foo/temp}/*",
            "/{***}",
            "/{**}{*}",
        ] {
            assert!(
                parse_err(value).ends_with("Contains '{' or '}' beyond a supported path template"),
                "{value}"
            );
        }
        // Istio checks braces in every path, template or not.
        assert!(parse_err("/foo/{buzz}/bar").contains("beyond a supported path template"));
        assert!(parse_err("/{buzz}").contains("beyond a supported path template"));
    }

    #[test]
    fn literals_of_a_template_must_be_pchar() {
        assert_eq!(
            parse_err("/{*}/foo/?abc"),
            "invalid or unsupported path {*}/foo/?abc. Contains segment ?abc with invalid string literal"
        );
        for (value, segment) in [
            ("/foo/{*}/bar/*", "*"),
            ("/foo/{*}/bar/**/buzz", "**"),
            ("/api/{*}/user profile", "user profile"),
            ("/api/{*}/path\\segment", "path\\segment"),
            ("/api/{*}/test|pipe", "test|pipe"),
            ("/api/{*}/caf\u{e9}", "caf\u{e9}"),
            ("/a//{*}", ""),
        ] {
            assert!(
                parse_err(value).ends_with(&format!(
                    "Contains segment {segment} with invalid string literal"
                )),
                "{value}"
            );
        }
        // Without operators the literal check does not apply (plain `*` syntax is fine).
        assert!(PathTemplate::parse("/api/*").is_ok());
        assert!(PathTemplate::parse("/api user").is_ok());
    }

    #[test]
    fn validate_names_the_field_like_istio() {
        assert_eq!(
            PathTemplate::validate("NotPaths", "/a/{**}/{*}/").unwrap_err(),
            "invalid or unsupported path a/{**}/{*}, found in NotPaths. {**} is not the last operator"
        );
    }

    #[test]
    fn is_template_needs_a_whole_operator() {
        assert!(PathTemplate::is_template("/a/{*}"));
        assert!(PathTemplate::is_template("/a/{**}"));
        assert!(PathTemplate::is_template("{*}/bar/{**}"));
        assert!(!PathTemplate::is_template("/a/*"));
        assert!(!PathTemplate::is_template("/a/{buzz}"));
        assert!(!PathTemplate::is_template("/a/{}"));
    }

    #[test]
    fn envoy_rejections_istio_lets_through() {
        assert_eq!(template("/a/{*}").envoy_rejection(), None);
        assert_eq!(template("/a=b/{*}").envoy_rejection(), None);
        assert!(template("a/{*}").envoy_rejection().is_some());
        assert!(template("//a/{*}").envoy_rejection().is_some());
        assert!(template("/a/{*}//").envoy_rejection().is_some());
        assert_eq!(template("/plain=value").envoy_rejection(), None);
    }

    #[test]
    fn keeps_the_source() {
        let t = template("/store/{**}/cart");
        assert_eq!(t.as_str(), "/store/{**}/cart");
        assert_eq!(t.to_string(), "/store/{**}/cart");
        assert_eq!(format!("{t:?}"), "PathTemplate(\"/store/{**}/cart\")");
    }

    #[test]
    fn compiles_to_the_expected_pieces() {
        let t = template("/foo/{*}/bar/{**}/baz/");
        assert_eq!(
            t.head,
            vec![
                Piece::Literal("/foo/".into()),
                Piece::Segment,
                Piece::Literal("/bar/".into())
            ]
        );
        assert_eq!(t.glob_tail.as_deref(), Some("/baz/"));
        let t = template("/{*}");
        assert_eq!(t.head, vec![Piece::Literal("/".into()), Piece::Segment]);
        assert_eq!(t.glob_tail, None);
    }
}
