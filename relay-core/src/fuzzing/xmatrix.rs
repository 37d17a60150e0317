//! The `xmatrix` target: `X-Matrix` header values.

use super::lossy;
use crate::xmatrix::XMatrix;

/// Parses `data` as an `X-Matrix` header value. A header that parses must
/// format (strictly, via `Display`) to text that parses back to an equal
/// header, and so must a lenient rendering of it that the spec or Synapse
/// allows (scheme case, spaces, name case, unquoted values, a `sig` with
/// `/`, `+` or `=` among them, escapes, order, unknown parameters), its
/// style picked by the input's first byte.
pub fn xmatrix(data: &[u8]) {
    let text = lossy(data);
    let Ok(parsed) = XMatrix::parse(&text) else {
        return;
    };
    let strict = parsed.to_string();
    assert!(
        strict.starts_with("X-Matrix origin=\""),
        "strict form {strict:?} does not start with the origin"
    );
    match XMatrix::parse(&strict) {
        Ok(again) => assert_eq!(
            again, parsed,
            "strict form {strict:?} of {text:?} parses differently"
        ),
        Err(e) => panic!("strict form {strict:?} of {text:?} does not parse: {e}"),
    }
    let lenient = lenient_form(&parsed, data.first().copied().unwrap_or_default());
    match XMatrix::parse(&lenient) {
        Ok(again) => assert_eq!(
            again, parsed,
            "lenient form {lenient:?} of {text:?} parses differently"
        ),
        Err(e) => panic!("lenient form {lenient:?} of {text:?} does not parse: {e}"),
    }
}

/// `header` as another sender may write it; each bit of `style` turns on
/// one liberty the spec allows.
fn lenient_form(header: &XMatrix, style: u8) -> String {
    let on = |bit: u8| style & (1 << bit) != 0;
    let mut params = vec![("origin", header.origin.as_str())];
    params.extend(header.destination.as_deref().map(|d| ("destination", d)));
    params.push(("key", header.key.as_str()));
    params.push(("sig", header.sig.as_str()));
    if on(0) {
        params.reverse();
    }
    if on(1) {
        params.insert(1, ("x-unknown", "ignored \"value\""));
    }
    let mut out = String::from(if on(2) { "x-matrix" } else { "X-MATRIX" });
    out.push_str(if on(3) { "  \t " } else { " " });
    let separator = if on(4) { " \t,, \t" } else { "," };
    for (i, (name, value)) in params.into_iter().enumerate() {
        if i > 0 {
            out.push_str(separator);
        }
        if on(5) {
            out.push_str(&name.to_ascii_uppercase());
        } else {
            out.push_str(name);
        }
        out.push_str(if on(4) { " = " } else { "=" });
        let unquotable = !value.is_empty() && value.chars().all(is_unquoted);
        if unquotable && on(6) {
            out.push_str(value);
        } else {
            out.push('"');
            for c in value.chars() {
                if on(7) || c == '"' || c == '\\' {
                    out.push('\\');
                }
                out.push(c);
            }
            out.push('"');
        }
    }
    out
}

/// What senders leave unquoted: RFC 9110 `tchar`s, and also `:` (a key
/// ID, a port), `/` and `=` (base64), `[` and `]` (an IPv6 origin): any
/// visible ASCII but `"`, `\` and `,`.
fn is_unquoted(c: char) -> bool {
    c.is_ascii_graphic() && !matches!(c, '"' | '\\' | ',')
}
