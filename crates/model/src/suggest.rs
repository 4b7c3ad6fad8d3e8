//! "Did you mean ...?" hints: the closest of a list of accepted words, by edit distance.
//!
//! Owns the distance and the threshold for "close enough to be a typo"; callers decide which
//! words are candidates and how the hint is worded.

/// Levenshtein distance over characters.
pub fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut cur = vec![i + 1];
        for (j, cb) in b.iter().enumerate() {
            let cost = usize::from(ca != *cb);
            cur.push((prev[j] + cost).min(prev[j + 1] + 1).min(cur[j] + 1));
        }
        prev = cur;
    }
    prev[b.len()]
}

/// The candidate closest to `word`, if it is within `max` edits; ties go to the first.
/// A candidate equal but for ASCII case is always close enough (`allow` for `ALLOW`).
pub fn closest<'c>(
    word: &str,
    candidates: impl IntoIterator<Item = &'c str>,
    max: usize,
) -> Option<&'c str> {
    candidates
        .into_iter()
        .filter(|c| *c != word)
        .map(|c| {
            let d = if c.eq_ignore_ascii_case(word) {
                0
            } else {
                edit_distance(word, c)
            };
            (d, c)
        })
        .filter(|(d, _)| *d <= max)
        .min_by_key(|(d, _)| *d)
        .map(|(_, c)| c)
}

/// Adds a hint to serde's `unknown field `x`, expected one of `a`, `b`` and
/// `unknown variant ...` messages when one expected word is close to the unknown one.
pub fn hint_for_serde_message(message: &str) -> Option<String> {
    let rest = message
        .strip_prefix("unknown field `")
        .or_else(|| message.strip_prefix("unknown variant `"))?;
    let (word, rest) = rest.split_once('`')?;
    let expected = rest
        .strip_prefix(", expected one of ")
        .or_else(|| rest.strip_prefix(", expected "))?;
    let candidates: Vec<&str> = expected
        .split(", ")
        .filter_map(|c| c.strip_prefix('`')?.strip_suffix('`'))
        .collect();
    closest(word, candidates, typo_budget(word)).map(|c| format!("did you mean `{c}`?"))
}

/// How many edits still look like a typo of a word of this length.
pub fn typo_budget(word: &str) -> usize {
    match word.chars().count() {
        0..=3 => 1,
        4..=8 => 2,
        _ => 3,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn distances() {
        assert_eq!(edit_distance("jwtRule", "jwtRules"), 1);
        assert_eq!(edit_distance("", "abc"), 3);
        assert_eq!(edit_distance("kitten", "sitting"), 3);
    }

    #[test]
    fn serde_messages() {
        assert_eq!(
            hint_for_serde_message(
                "unknown field `jwtRule`, expected one of `selector`, `targetRef`, `targetRefs`, `jwtRules`"
            )
            .as_deref(),
            Some("did you mean `jwtRules`?")
        );
        assert_eq!(
            hint_for_serde_message(
                "unknown field `jwk`, expected one of `issuer`, `jwks`, `jwksUri`"
            )
            .as_deref(),
            Some("did you mean `jwks`?")
        );
        assert_eq!(
            hint_for_serde_message("unknown variant `allow`, expected one of `ALLOW`, `DENY`")
                .as_deref(),
            Some("did you mean `ALLOW`?")
        );
        assert_eq!(
            hint_for_serde_message("unknown field `value`, expected `key` or `values`"),
            None,
            "a message shape without a list gives no hint rather than a wrong one"
        );
        assert_eq!(
            hint_for_serde_message("unknown field `zzzzzz`, expected one of `issuer`, `jwks`"),
            None
        );
        assert_eq!(hint_for_serde_message("invalid type: string"), None);
    }
}
