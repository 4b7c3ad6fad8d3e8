//! Strict JSON object parsing for token headers, payloads and JWKS documents.
//!
//! Owns: turning bytes into a `serde_json` object while rejecting duplicate member names
//! at any depth (RFC 7515 §5.2 / RFC 7519 §4 allow rejecting; last-wins would let a
//! signed token mean different things to different readers), bounding nesting depth,
//! and recognising numbers too large for an `f64` in the three time claims.
//! Does not own: what any member means.
//!
//! `serde_json` is used as the tokenizer; a [`DeserializeSeed`] builds the
//! [`Value`] tree itself so it can see every member name and track depth.
//!
//! About `1e5000`: `serde_json` (without `arbitrary_precision`) refuses a number that
//! overflows `f64` with a "number out of range" error and stops parsing. When that
//! happens directly as the value of a top-level `iat`, `nbf` or `exp` member we report
//! [`JsonError::NumberOutOfRange`] for that member (the caller maps it to the
//! `…OutOfRange` status, consistent with `2.001e206`). Anywhere else it is just invalid
//! JSON. Detecting it relies on `serde_json`'s error text, which a unit test pins.

use serde::de::{self, DeserializeSeed, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Value};
use std::cell::{Cell, RefCell};
use std::fmt;

/// Why a JSON document was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum JsonError {
    /// Not JSON, trailing data, duplicate member, too deep, or an unrepresentable number.
    Invalid,
    /// Valid JSON, but the top level is not an object.
    NotObject,
    /// A top-level time claim (`iat`, `nbf`, `exp`) held a number beyond `f64` range.
    NumberOutOfRange(&'static str),
}

/// Top-level members whose unrepresentable numbers get their own status.
const TIME_CLAIMS: [&str; 3] = ["iat", "nbf", "exp"];

/// Prefix of `serde_json`'s message for a number that overflows `f64`.
const SERDE_OUT_OF_RANGE: &str = "number out of range";

struct State {
    max_depth: usize,
    /// Set when a container below the top level saw a child fail, so a top-level member
    /// can tell "its own number overflowed" from "something inside it did".
    nested_failure: Cell<bool>,
    out_of_range: RefCell<Option<&'static str>>,
}

/// Parses `bytes` as one JSON object, strictly.
pub(crate) fn parse_object(
    bytes: &[u8],
    max_depth: usize,
) -> Result<Map<String, Value>, JsonError> {
    let state = State {
        max_depth,
        nested_failure: Cell::new(false),
        out_of_range: RefCell::new(None),
    };
    let mut de = serde_json::Deserializer::from_slice(bytes);
    let parsed = ValueSeed {
        state: &state,
        depth: 1,
    }
    .deserialize(&mut de)
    .and_then(|v| de.end().map(|()| v));
    match parsed {
        Ok(Value::Object(map)) => Ok(map),
        Ok(_) => Err(JsonError::NotObject),
        Err(_) => match state.out_of_range.into_inner() {
            Some(key) => Err(JsonError::NumberOutOfRange(key)),
            None => Err(JsonError::Invalid),
        },
    }
}

#[derive(Clone, Copy)]
struct ValueSeed<'a> {
    state: &'a State,
    /// Depth of the value about to be read; the document itself is depth 1.
    depth: usize,
}

impl<'de> DeserializeSeed<'de> for ValueSeed<'_> {
    type Value = Value;

    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<Value, D::Error> {
        d.deserialize_any(self)
    }
}

impl ValueSeed<'_> {
    fn child(self) -> Self {
        ValueSeed {
            state: self.state,
            depth: self.depth + 1,
        }
    }

    fn enter<E: de::Error>(self) -> Result<(), E> {
        if self.depth > self.state.max_depth {
            return Err(E::custom("JSON nesting too deep"));
        }
        Ok(())
    }

    fn note_child_failure(self) {
        if self.depth > 1 {
            self.state.nested_failure.set(true);
        }
    }
}

impl<'de> Visitor<'de> for ValueSeed<'_> {
    type Value = Value;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_bool<E: de::Error>(self, v: bool) -> Result<Value, E> {
        Ok(Value::Bool(v))
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Value, E> {
        Ok(Value::from(v))
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Value, E> {
        Ok(Value::from(v))
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Value, E> {
        // serde_json never hands out non-finite floats, but do not build a Null from one.
        serde_json::Number::from_f64(v)
            .map(Value::Number)
            .ok_or_else(|| E::custom("non-finite number"))
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<Value, E> {
        Ok(Value::String(v.to_owned()))
    }

    fn visit_string<E: de::Error>(self, v: String) -> Result<Value, E> {
        Ok(Value::String(v))
    }

    fn visit_unit<E: de::Error>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_none<E: de::Error>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        self.enter()?;
        let mut out = Vec::new();
        loop {
            match seq.next_element_seed(self.child()) {
                Ok(Some(v)) => out.push(v),
                Ok(None) => return Ok(Value::Array(out)),
                Err(e) => {
                    self.note_child_failure();
                    return Err(e);
                }
            }
        }
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        self.enter()?;
        let mut out = Map::new();
        loop {
            let key = match map.next_key::<String>() {
                Ok(Some(k)) => k,
                Ok(None) => return Ok(Value::Object(out)),
                Err(e) => {
                    self.note_child_failure();
                    return Err(e);
                }
            };
            if out.contains_key(&key) {
                return Err(de::Error::custom("duplicate JSON member name"));
            }
            match map.next_value_seed(self.child()) {
                Ok(v) => {
                    out.insert(key, v);
                }
                Err(e) => {
                    if self.depth == 1 {
                        self.classify_top_level_failure(&key, &e);
                    } else {
                        self.note_child_failure();
                    }
                    return Err(e);
                }
            }
        }
    }
}

impl ValueSeed<'_> {
    fn classify_top_level_failure(self, key: &str, err: &dyn fmt::Display) {
        if self.state.nested_failure.get() {
            return;
        }
        let Some(claim) = TIME_CLAIMS.into_iter().find(|c| *c == key) else {
            return;
        };
        if err.to_string().starts_with(SERDE_OUT_OF_RANGE) {
            *self.state.out_of_range.borrow_mut() = Some(claim);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(s: &str) -> Result<Map<String, Value>, JsonError> {
        parse_object(s.as_bytes(), 32)
    }

    #[test]
    fn parses_plain_object() {
        let m =
            parse(r#"{"a":1,"b":[true,null,"x",{"c":-2.5}],"d":18446744073709551615}"#).unwrap();
        assert_eq!(m["a"], Value::from(1));
        assert_eq!(m["d"], Value::from(u64::MAX));
        assert_eq!(m["b"][3]["c"], Value::from(-2.5));
    }

    #[test]
    fn rejects_duplicates_at_any_depth() {
        assert_eq!(parse(r#"{"a":1,"a":2}"#), Err(JsonError::Invalid));
        assert_eq!(parse(r#"{"a":{"x":1,"x":1}}"#), Err(JsonError::Invalid));
        assert_eq!(
            parse(r#"{"a":[{"x":1,"y":{"z":1,"z":2}}]}"#),
            Err(JsonError::Invalid)
        );
        // Same name in sibling objects is fine.
        assert!(parse(r#"{"a":{"x":1},"b":{"x":1}}"#).is_ok());
        // Escapes are compared after decoding: "\u0061" is "a".
        assert_eq!(parse(r#"{"a":1,"\u0061":2}"#), Err(JsonError::Invalid));
    }

    #[test]
    fn depth_limit_is_inclusive() {
        let nested = |n: usize| format!("{}{}{}", "{\"a\":".repeat(n - 1), "{}", "}".repeat(n - 1));
        assert!(parse(&nested(32)).is_ok());
        assert_eq!(parse(&nested(33)), Err(JsonError::Invalid));
        let arrays = |n: usize| format!("{{\"a\":{}{}}}", "[".repeat(n - 1), "]".repeat(n - 1));
        assert!(parse(&arrays(32)).is_ok());
        assert_eq!(parse(&arrays(33)), Err(JsonError::Invalid));
        // Far beyond serde_json's own recursion limit: still a clean error.
        assert_eq!(parse(&arrays(5000)), Err(JsonError::Invalid));
    }

    #[test]
    fn rejects_non_objects_and_garbage() {
        assert_eq!(parse("[]"), Err(JsonError::NotObject));
        assert_eq!(parse("\"x\""), Err(JsonError::NotObject));
        assert_eq!(parse("1"), Err(JsonError::NotObject));
        assert_eq!(parse("{} x"), Err(JsonError::Invalid));
        assert_eq!(parse("{}{}"), Err(JsonError::Invalid));
        assert_eq!(parse("\u{feff}{}"), Err(JsonError::Invalid));
        assert_eq!(parse(""), Err(JsonError::Invalid));
        assert_eq!(parse("{'a':1}"), Err(JsonError::Invalid));
        assert_eq!(parse(r#"{"a":"\ud800"}"#), Err(JsonError::Invalid));
        assert_eq!(
            parse_object(b"{\"a\":\"\xff\"}", 32),
            Err(JsonError::Invalid)
        );
        // Whitespace, including CRLF as in RFC 7515 A.1, is fine.
        assert!(parse("{\"typ\":\"JWT\",\r\n \"alg\":\"HS256\"}").is_ok());
    }

    #[test]
    fn huge_numbers_in_time_claims_are_out_of_range() {
        // Pins serde_json's "number out of range" message (see module doc).
        assert_eq!(
            parse(r#"{"exp":1e5000}"#),
            Err(JsonError::NumberOutOfRange("exp"))
        );
        assert_eq!(
            parse(r#"{"nbf":-1e5000}"#),
            Err(JsonError::NumberOutOfRange("nbf"))
        );
        let digits = format!(r#"{{"iss":"a","iat":{}}}"#, "9".repeat(400));
        assert_eq!(parse(&digits), Err(JsonError::NumberOutOfRange("iat")));
        // Elsewhere it is just invalid JSON.
        assert_eq!(parse(r#"{"foo":1e5000}"#), Err(JsonError::Invalid));
        assert_eq!(parse(r#"{"exp":[1e5000]}"#), Err(JsonError::Invalid));
        assert_eq!(parse(r#"{"exp":{"a":1e5000}}"#), Err(JsonError::Invalid));
        assert_eq!(parse(r#"{"x":{"exp":1e5000}}"#), Err(JsonError::Invalid));
        // Large but finite stays a number.
        assert!(parse(r#"{"exp":2.001e206}"#).is_ok());
    }
}
