//! Matrix canonical JSON.
//!
//! Implementation note: written by hand rather than through serde_json's
//! serializer, so that the key order does not depend on serde_json's map type
//! (which changes if any crate enables `preserve_order`), numbers are checked,
//! and nesting is bounded while recursing.

use serde_json::{Map, Number, Value};

/// A value that has no canonical JSON form.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CanonicalJsonError {
    /// A number that is not an integer in ±(2^53−1) (integral floats such
    /// as `-0` and `1e10` count as integers).
    #[error("number {0} is not an integer in the canonical range")]
    BadNumber(String),
    /// Nested deeper than [`MAX_DEPTH`].
    #[error("JSON nested too deeply")]
    TooDeep,
    /// Signing needs an object whose `signatures`, when present, is an
    /// object of objects.
    #[error("signed JSON must be an object, and its `signatures` an object of objects")]
    NotAnObject,
}

/// Deepest nesting of arrays and objects accepted.
pub const MAX_DEPTH: usize = 128;

/// Largest magnitude of a canonical integer, 2^53−1.
pub const MAX_SAFE_INTEGER: i64 = (1 << 53) - 1;

/// Top-level keys that Signing JSON leaves out.
const NOT_SIGNED: [&str; 2] = ["signatures", "unsigned"];

/// The canonical JSON text of `value`.
pub fn to_canonical_string(value: &Value) -> Result<String, CanonicalJsonError> {
    let mut out = String::new();
    write_value(&mut out, value, 0, &[], Numbers::Canonical)?;
    Ok(out)
}

/// Like [`to_canonical_string`], except that a number canonical JSON has
/// no form for (a fraction, an integer beyond ±(2^53−1)) is written as
/// `serde_json` writes it, as most JSON libraries do. A signature a sender
/// made over such a body can be checked this way, so that the sender is
/// known before the body is refused.
pub fn to_lenient_string(value: &Value) -> Result<String, CanonicalJsonError> {
    let mut out = String::new();
    write_value(&mut out, value, 0, &[], Numbers::AsWritten)?;
    Ok(out)
}

/// How numbers are written.
#[derive(Clone, Copy)]
enum Numbers {
    /// Canonical integers only.
    Canonical,
    /// Canonical integers, and anything else as `serde_json` writes it.
    AsWritten,
}

/// The canonical JSON text that Signing JSON signs: `value` without its
/// top-level `signatures` and `unsigned`.
pub fn to_canonical_string_for_signing(value: &Value) -> Result<String, CanonicalJsonError> {
    let mut out = String::new();
    write_value(&mut out, value, 0, &NOT_SIGNED, Numbers::Canonical)?;
    Ok(out)
}

/// The canonical integer a JSON number stands for.
pub fn canonical_integer(n: &Number) -> Result<i64, CanonicalJsonError> {
    let bad = || CanonicalJsonError::BadNumber(n.to_string());
    let int = if let Some(i) = n.as_i64() {
        i
    } else if n.is_u64() {
        // A u64 beyond i64 is beyond 2^53 too.
        return Err(bad());
    } else {
        let f = n.as_f64().ok_or_else(bad)?;
        // Integral and in range (NaN and infinities fail `fract`): the cast
        // below is exact, and `-0.0` gives 0.
        if f.fract() != 0.0 || f.abs() > MAX_SAFE_INTEGER as f64 {
            return Err(bad());
        }
        f as i64
    };
    if int.unsigned_abs() > MAX_SAFE_INTEGER.unsigned_abs() {
        return Err(bad());
    }
    Ok(int)
}

/// Writes `value`, which sits inside `depth` arrays and objects; `skip` lists
/// object keys to leave out at this level only.
fn write_value(
    out: &mut String,
    value: &Value,
    depth: usize,
    skip: &[&str],
    numbers: Numbers,
) -> Result<(), CanonicalJsonError> {
    match value {
        Value::Null => out.push_str("null"),
        Value::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
        Value::Number(n) => match (canonical_integer(n), numbers) {
            (Ok(i), _) => out.push_str(&i.to_string()),
            (Err(_), Numbers::AsWritten) => out.push_str(&n.to_string()),
            (Err(e), Numbers::Canonical) => return Err(e),
        },
        Value::String(s) => write_string(out, s),
        Value::Array(items) => {
            let depth = enter(depth)?;
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_value(out, item, depth, &[], numbers)?;
            }
            out.push(']');
        }
        Value::Object(map) => write_object(out, map, enter(depth)?, skip, numbers)?,
    }
    Ok(())
}

fn write_object(
    out: &mut String,
    map: &Map<String, Value>,
    depth: usize,
    skip: &[&str],
    numbers: Numbers,
) -> Result<(), CanonicalJsonError> {
    let mut entries: Vec<(&String, &Value)> = map
        .iter()
        .filter(|(k, _)| !skip.contains(&k.as_str()))
        .collect();
    // `str` orders by bytes, and UTF-8 byte order is code-point order.
    entries.sort_unstable_by(|a, b| a.0.cmp(b.0));
    out.push('{');
    for (i, (key, value)) in entries.into_iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        write_string(out, key);
        out.push(':');
        write_value(out, value, depth, &[], numbers)?;
    }
    out.push('}');
    Ok(())
}

/// One level deeper, or [`CanonicalJsonError::TooDeep`].
fn enter(depth: usize) -> Result<usize, CanonicalJsonError> {
    if depth >= MAX_DEPTH {
        Err(CanonicalJsonError::TooDeep)
    } else {
        Ok(depth + 1)
    }
}

/// Writes `s` quoted, escaping only what the grammar requires: `"`, `\`, and
/// control characters (short forms where JSON has them, else `\u00xx`).
fn write_string(out: &mut String, s: &str) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    out.reserve(s.len() + 2);
    out.push('"');
    // Runs of bytes that need no escape are copied whole: only ASCII bytes
    // are escaped, so every cut is on a character boundary.
    let mut run = 0;
    for (i, &b) in s.as_bytes().iter().enumerate() {
        let escape = match b {
            b'"' => "\\\"",
            b'\\' => "\\\\",
            0x08 => "\\b",
            b'\t' => "\\t",
            b'\n' => "\\n",
            0x0c => "\\f",
            b'\r' => "\\r",
            0x00..=0x1f => "",
            _ => continue,
        };
        out.push_str(&s[run..i]);
        if escape.is_empty() {
            out.push_str("\\u00");
            out.push(char::from(HEX[usize::from(b >> 4)]));
            out.push(char::from(HEX[usize::from(b & 0xf)]));
        } else {
            out.push_str(escape);
        }
        run = i + 1;
    }
    out.push_str(&s[run..]);
    out.push('"');
}

#[cfg(test)]
mod tests {

    proptest::proptest! {
        /// Strings are escaped as JSON's shortest form (and serde_json's):
        /// quote, backslash and controls only, the short escapes where
        /// they exist, lower-case hex otherwise, everything else verbatim.
        #[test]
        fn strings_are_written_as_serde_json_writes_them(s in "\\PC*|[\\x00-\\x7f]*|(\\PC|[\\x00-\\x1f\"\\\\])*") {
            let mut out = String::new();
            write_string(&mut out, &s);
            proptest::prop_assert_eq!(out, serde_json::to_string(&s).unwrap());
        }
    }

    #[test]
    fn lenient_writes_what_canonical_cannot() {
        let v: Value =
            serde_json::from_str(r#"{"b":1.5,"a":9007199254740993,"c":[-0.25,2]}"#).unwrap();
        assert!(to_canonical_string(&v).is_err());
        assert_eq!(
            to_lenient_string(&v).unwrap(),
            r#"{"a":9007199254740993,"b":1.5,"c":[-0.25,2]}"#
        );
        // Canonical input comes out the same both ways.
        let v = json!({"z": 1, "a": {"k": "v"}});
        assert_eq!(
            to_lenient_string(&v).unwrap(),
            to_canonical_string(&v).unwrap()
        );
    }

    use serde_json::json;

    use super::*;

    fn canon(text: &str) -> Result<String, CanonicalJsonError> {
        to_canonical_string(&serde_json::from_str(text).unwrap())
    }

    #[test]
    fn spec_vectors() {
        let vectors = [
            ("{}", "{}"),
            (r#"{ "one": 1, "two": "Two" }"#, r#"{"one":1,"two":"Two"}"#),
            (r#"{ "b": "2", "a": "1" }"#, r#"{"a":"1","b":"2"}"#),
            (r#"{"b":"2","a":"1"}"#, r#"{"a":"1","b":"2"}"#),
            (
                r#"{
                    "auth": {
                        "success": true,
                        "mxid": "@john.doe:example.com",
                        "profile": {
                            "display_name": "John Doe",
                            "three_pids": [
                                { "medium": "email", "address": "john.doe@example.org" },
                                { "medium": "msisdn", "address": "123456789" }
                            ]
                        }
                    }
                }"#,
                concat!(
                    r#"{"auth":{"mxid":"@john.doe:example.com","profile":{"display_name":"John Doe","#,
                    r#""three_pids":[{"address":"john.doe@example.org","medium":"email"},"#,
                    r#"{"address":"123456789","medium":"msisdn"}]},"success":true}}"#
                ),
            ),
            (r#"{ "a": "日本語" }"#, r#"{"a":"日本語"}"#),
            (r#"{ "本": 2, "日": 1 }"#, r#"{"日":1,"本":2}"#),
            (r#"{ "a": "\u65E5" }"#, r#"{"a":"日"}"#),
            (r#"{ "a": null }"#, r#"{"a":null}"#),
            (r#"{ "a": -0, "b": 1e10 }"#, r#"{"a":0,"b":10000000000}"#),
        ];
        for (input, expected) in vectors {
            assert_eq!(canon(input).unwrap(), expected, "{input}");
        }
    }

    #[test]
    fn escapes_only_what_the_grammar_requires() {
        assert_eq!(
            canon(r#"["\u0001\u001F\b\/\f\n\r\t\"\\\u007f\u00e9\ud83d\ude00"]"#).unwrap(),
            "[\"\\u0001\\u001f\\b/\\f\\n\\r\\t\\\"\\\\\u{7f}\u{e9}\u{1f600}\"]"
        );
        assert_eq!(to_canonical_string(&json!("\0")).unwrap(), r#""\u0000""#);
    }

    #[test]
    fn sorts_keys_by_code_point() {
        // U+FF21 sorts after U+1F600 in UTF-16 but before it by code point.
        let v = json!({"\u{1f600}": 1, "\u{ff21}": 2, "Z": 3, "a": 4, "": 5});
        assert_eq!(
            to_canonical_string(&v).unwrap(),
            "{\"\":5,\"Z\":3,\"a\":4,\"\u{ff21}\":2,\"\u{1f600}\":1}"
        );
    }

    #[test]
    fn integers_in_range_and_integral_floats() {
        assert_eq!(
            canon("[9007199254740991,-9007199254740991]").unwrap(),
            "[9007199254740991,-9007199254740991]"
        );
        assert_eq!(
            canon("[1.0,-0.0,2E3,9007199254740991.0]").unwrap(),
            "[1,0,2000,9007199254740991]"
        );
    }

    #[test]
    fn rejects_other_numbers() {
        for bad in [
            "1.5",
            "9007199254740992",
            "-9007199254740992",
            "18446744073709551615",
            "-9223372036854775808",
            "9007199254740992.0",
            "1e300",
            "0.1",
            "-1e-7",
        ] {
            let err = canon(&format!("{{\"n\":[{bad}]}}")).unwrap_err();
            assert!(
                matches!(err, CanonicalJsonError::BadNumber(_)),
                "{bad}: {err:?}"
            );
        }
        assert_eq!(
            to_canonical_string(&json!({"a": 1.5})),
            Err(CanonicalJsonError::BadNumber("1.5".into()))
        );
    }

    fn nested(levels: usize) -> Value {
        let mut v = Value::Null;
        for i in 0..levels {
            // Not `json!`, which would serialize `v` recursively.
            v = if i % 2 == 0 {
                Value::Array(vec![v])
            } else {
                Value::Object(Map::from_iter([("k".to_owned(), v)]))
            };
        }
        v
    }

    /// Drops a nested value without recursing.
    fn dismantle(mut v: Value) {
        let mut stack = Vec::new();
        loop {
            match &mut v {
                Value::Array(items) => stack.append(items),
                Value::Object(map) => stack.extend(std::mem::take(map).into_iter().map(|(_, v)| v)),
                _ => {}
            }
            match stack.pop() {
                Some(next) => v = next,
                None => break,
            }
        }
    }

    #[test]
    fn nesting_limit() {
        let ok = nested(MAX_DEPTH);
        assert!(to_canonical_string(&ok).is_ok());
        let too_deep = nested(MAX_DEPTH + 1);
        assert_eq!(
            to_canonical_string(&too_deep),
            Err(CanonicalJsonError::TooDeep)
        );
        let far_too_deep = nested(10_000);
        assert_eq!(
            to_canonical_string(&far_too_deep),
            Err(CanonicalJsonError::TooDeep)
        );
        assert_eq!(
            to_canonical_string_for_signing(&far_too_deep),
            Err(CanonicalJsonError::TooDeep)
        );
        dismantle(far_too_deep);
    }

    #[test]
    fn signing_form_drops_top_level_signatures_and_unsigned_only() {
        let v = json!({
            "b": {"signatures": 1, "unsigned": 2},
            "signatures": {"x": {"ed25519:1": "sig"}},
            "unsigned": {"age": 1},
            "a": 1
        });
        assert_eq!(
            to_canonical_string_for_signing(&v).unwrap(),
            r#"{"a":1,"b":{"signatures":1,"unsigned":2}}"#
        );
        assert_eq!(to_canonical_string_for_signing(&json!([1])).unwrap(), "[1]");
    }
}
