//! The `canonical_json` target: canonical JSON and its signing form.

use serde_json::Value;

use crate::canonical::{canonical_integer, to_canonical_string, to_canonical_string_for_signing};

/// Parses `data` as JSON; if it has a canonical form, that form must parse
/// back to the same data (numbers compared as canonical integers) and
/// canonicalise to itself. Whether or not it has one, the signing form
/// equals the canonical form of the value without its top-level
/// `signatures` and `unsigned`.
pub fn canonical_json(data: &[u8]) {
    let Ok(value) = serde_json::from_slice::<Value>(data) else {
        return;
    };
    let canonical = to_canonical_string(&value);

    let stripped = match &value {
        Value::Object(map) => {
            let mut map = map.clone();
            map.remove("signatures");
            map.remove("unsigned");
            to_canonical_string(&Value::Object(map))
        }
        _ => canonical.clone(),
    };
    assert_eq!(
        to_canonical_string_for_signing(&value),
        stripped,
        "signing form of {value}"
    );

    let Ok(canonical) = canonical else {
        return;
    };
    let reparsed: Value = serde_json::from_str(&canonical)
        .unwrap_or_else(|e| panic!("canonical form {canonical:?} is not JSON: {e}"));
    assert!(
        same_modulo_number_form(&value, &reparsed),
        "canonical form {canonical:?} changed the data of {value}"
    );
    assert_eq!(
        to_canonical_string(&reparsed).as_ref(),
        Ok(&canonical),
        "canonicalising {canonical:?} again"
    );
}

/// Equal values, where numbers are equal when they stand for the same
/// canonical integer (`1e10` and `10000000000`, `-0` and `0`). Both values
/// have a canonical form, so the recursion is bounded by its depth limit.
fn same_modulo_number_form(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => {
            matches!((canonical_integer(x), canonical_integer(y)), (Ok(x), Ok(y)) if x == y)
        }
        (Value::Array(x), Value::Array(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(x, y)| same_modulo_number_form(x, y))
        }
        (Value::Object(x), Value::Object(y)) => {
            x.len() == y.len()
                && x.iter()
                    .all(|(k, v)| y.get(k).is_some_and(|w| same_modulo_number_form(v, w)))
        }
        _ => a == b,
    }
}
