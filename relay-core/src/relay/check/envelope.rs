//! The transaction a `send_relay` body stores: the body's own bytes, its
//! `origin` replaced, never re-serialised.

use std::collections::HashMap;

use serde::de::{Deserialize, Deserializer, MapAccess, Visitor};
use serde_json::value::RawValue;

use crate::id::ServerName;

/// A transaction body's top-level fields in the order sent, each value as
/// sent, `pdus` split into its elements. Borrows the body.
///
/// Implementation note: one pass over the body, which serde_json only
/// skims (a value borrowed as [`RawValue`] is checked, not built); the
/// meaning of the body was already parsed, once, for the signature.
#[derive(Debug)]
pub(super) struct RawTransaction<'a> {
    fields: Vec<(String, Field<'a>)>,
}

/// One top-level value as sent.
#[derive(Debug)]
enum Field<'a> {
    /// `pdus`: its elements.
    Elements(Vec<&'a RawValue>),
    /// Any other field.
    Whole(&'a RawValue),
}

impl<'a> RawTransaction<'a> {
    /// Splits `body`, a JSON object. Every `pdus` must be an array (a
    /// `pdus` sent twice too).
    pub(super) fn parse(body: &'a [u8]) -> Result<Self, serde_json::Error> {
        serde_json::from_slice(body)
    }

    /// The elements of `pdus` (of the last, if sent twice), as sent.
    pub(super) fn pdus(&self) -> &[&'a RawValue] {
        self.fields
            .iter()
            .rev()
            .find_map(|(key, field)| match field {
                Field::Elements(pdus) if key == "pdus" => Some(pdus.as_slice()),
                _ => None,
            })
            .unwrap_or_default()
    }

    /// The transaction to store: `{"origin": <origin>, …}`, then the other
    /// fields in the order sent, each value byte for byte as sent, except
    /// that the PDUs are written `[pdu,pdu,…]` (whitespace between them
    /// left out).
    ///
    /// Implementation note: a field sent twice is written once, with its
    /// last value, which is the one the signature and the checks saw
    /// (serde_json keeps the last of duplicate keys); a recipient that kept
    /// the first could otherwise be handed something nobody checked.
    pub(super) fn to_stored(&self, origin: &ServerName) -> Vec<u8> {
        let last: HashMap<&str, usize> = self
            .fields
            .iter()
            .enumerate()
            .map(|(i, (key, _))| (key.as_str(), i))
            .collect();
        let size: usize = self
            .fields
            .iter()
            .map(|(key, field)| {
                key.len()
                    + 4
                    + match field {
                        Field::Elements(items) => {
                            items.iter().map(|i| i.get().len() + 1).sum::<usize>() + 1
                        }
                        Field::Whole(raw) => raw.get().len(),
                    }
            })
            .sum();
        let mut out = String::with_capacity(size + origin.as_str().len() + 16);
        out.push_str("{\"origin\":");
        push_json_string(&mut out, origin.as_str());
        for (i, (key, field)) in self.fields.iter().enumerate() {
            if key == "origin" || last.get(key.as_str()) != Some(&i) {
                continue;
            }
            out.push(',');
            push_json_string(&mut out, key);
            out.push(':');
            match field {
                Field::Whole(raw) => out.push_str(raw.get()),
                Field::Elements(items) => {
                    out.push('[');
                    for (n, item) in items.iter().enumerate() {
                        if n > 0 {
                            out.push(',');
                        }
                        out.push_str(item.get());
                    }
                    out.push(']');
                }
            }
        }
        out.push('}');
        out.into_bytes()
    }
}

impl<'de> Deserialize<'de> for RawTransaction<'de> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_map(Fields)
    }
}

/// Visits the top-level object.
struct Fields;

impl<'de> Visitor<'de> for Fields {
    type Value = RawTransaction<'de>;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a transaction object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut fields = Vec::new();
        while let Some(key) = map.next_key::<String>()? {
            let field = if key == "pdus" {
                Field::Elements(map.next_value()?)
            } else {
                Field::Whole(map.next_value()?)
            };
            fields.push((key, field));
        }
        Ok(RawTransaction { fields })
    }
}

/// Writes `s` as a JSON string.
fn push_json_string(out: &mut String, s: &str) {
    // Serialising a `str` cannot fail.
    out.push_str(&serde_json::to_string(s).unwrap_or_default());
}
