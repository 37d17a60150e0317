//! The `X-Matrix` Authorization header: lenient parse, strict format.

/// A parsed `X-Matrix` header. Values are as sent; identifiers are
/// validated by the caller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct XMatrix {
    /// `origin`: the sending server.
    pub origin: String,
    /// `destination`: the receiving server, when sent.
    pub destination: Option<String>,
    /// `key`: the key ID.
    pub key: String,
    /// `sig`: the base64 signature.
    pub sig: String,
}

/// Why a header is not a usable `X-Matrix` header.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum XMatrixError {
    /// The scheme is not `X-Matrix`.
    #[error("not an X-Matrix authorization")]
    Scheme,
    /// The parameter list does not parse.
    #[error("malformed X-Matrix parameters")]
    Syntax,
    /// `origin`, `key` or `sig` is missing.
    #[error("X-Matrix parameter {0} is missing")]
    Missing(&'static str),
    /// A parameter appears twice.
    #[error("X-Matrix parameter {0} appears twice")]
    Duplicate(String),
}

impl XMatrix {
    /// Parses a header value leniently, as the spec allows.
    ///
    /// Accepted: the scheme in any case followed by one or more spaces;
    /// spaces and tabs around commas and `=`; parameter names in any case;
    /// quoted values with backslash escapes; unquoted values of visible
    /// ASCII other than `"`, `\` and `,` (so `key=ed25519:1` and a `sig`
    /// holding `/`, `+` or `=`, as Synapse accepts); unknown parameters,
    /// which are ignored. Rejected: a missing `origin`, `key` or `sig`,
    /// and `origin`, `destination`, `key` or `sig` given twice.
    pub fn parse(header: &str) -> Result<Self, XMatrixError> {
        let header = header.trim_matches(is_ows);
        let (scheme, params) = header.split_once(is_ows).unwrap_or((header, ""));
        if !scheme.eq_ignore_ascii_case("X-Matrix") {
            return Err(XMatrixError::Scheme);
        }
        let (mut origin, mut destination, mut key, mut sig) = (None, None, None, None);
        for param in Params(params.chars().peekable()) {
            let (name, value) = param?;
            let slot = match name.to_ascii_lowercase().as_str() {
                "origin" => &mut origin,
                "destination" => &mut destination,
                "key" => &mut key,
                "sig" => &mut sig,
                _ => continue,
            };
            if slot.is_some() {
                return Err(XMatrixError::Duplicate(name.to_ascii_lowercase()));
            }
            *slot = Some(value);
        }
        Ok(Self {
            origin: origin.ok_or(XMatrixError::Missing("origin"))?,
            destination,
            key: key.ok_or(XMatrixError::Missing("key"))?,
            sig: sig.ok_or(XMatrixError::Missing("sig"))?,
        })
    }
}

/// Optional whitespace (RFC 9110 `OWS`).
fn is_ows(c: char) -> bool {
    c == ' ' || c == '\t'
}

/// RFC 9110 `tchar`.
fn is_tchar(c: char) -> bool {
    c.is_ascii_alphanumeric() || "!#$%&'*+-.^_`|~".contains(c)
}

/// A character of an unquoted value: visible ASCII other than `"`, `\`
/// and `,`. RFC 9110 allows only `tchar`s there, but senders leave values
/// such as `ed25519:1`, `[::1]:8448` or a base64 `sig` (`/`, `+`, `=`)
/// unquoted, and Synapse reads an unquoted value up to the next comma.
fn is_unquoted(c: char) -> bool {
    c.is_ascii_graphic() && !matches!(c, '"' | '\\' | ',')
}

/// The `name=value` pairs of an `#auth-param` list; empty list elements
/// are skipped, as RFC 9110 §5.6.1 asks of recipients.
struct Params<'a>(std::iter::Peekable<std::str::Chars<'a>>);

impl Params<'_> {
    fn skip_ows(&mut self) {
        while self.0.next_if(|&c| is_ows(c)).is_some() {}
    }

    fn param(&mut self) -> Result<(String, String), XMatrixError> {
        let mut name = String::new();
        while let Some(c) = self.0.next_if(|&c| is_tchar(c)) {
            name.push(c);
        }
        self.skip_ows();
        if name.is_empty() || self.0.next() != Some('=') {
            return Err(XMatrixError::Syntax);
        }
        self.skip_ows();
        let mut value = String::new();
        if self.0.next_if_eq(&'"').is_some() {
            loop {
                match self.0.next() {
                    Some('"') => break,
                    Some('\\') => value.push(self.0.next().ok_or(XMatrixError::Syntax)?),
                    Some(c) => value.push(c),
                    None => return Err(XMatrixError::Syntax),
                }
            }
        } else {
            while let Some(c) = self.0.next_if(|&c| is_unquoted(c)) {
                value.push(c);
            }
            if value.is_empty() {
                return Err(XMatrixError::Syntax);
            }
        }
        self.skip_ows();
        match self.0.next() {
            None | Some(',') => Ok((name, value)),
            Some(_) => Err(XMatrixError::Syntax),
        }
    }
}

impl Iterator for Params<'_> {
    type Item = Result<(String, String), XMatrixError>;

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            self.skip_ows();
            match self.0.peek() {
                None => return None,
                Some(',') => {
                    self.0.next();
                }
                Some(_) => return Some(self.param()),
            }
        }
    }
}

impl std::fmt::Display for XMatrix {
    /// The strict form: `X-Matrix origin="…",destination="…",key="…",sig="…"`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("X-Matrix ")?;
        write_param(f, "origin", &self.origin)?;
        if let Some(destination) = &self.destination {
            f.write_str(",")?;
            write_param(f, "destination", destination)?;
        }
        f.write_str(",")?;
        write_param(f, "key", &self.key)?;
        f.write_str(",")?;
        write_param(f, "sig", &self.sig)
    }
}

/// `name="value"`, with `"` and `\` escaped.
fn write_param(f: &mut std::fmt::Formatter<'_>, name: &str, value: &str) -> std::fmt::Result {
    write!(f, "{name}=\"")?;
    for c in value.chars() {
        if c == '"' || c == '\\' {
            f.write_str("\\")?;
        }
        write!(f, "{c}")?;
    }
    f.write_str("\"")
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    const SIG: &str =
        "STBA1xu0p9jKYatO5IAB/Um7OEkoMewBqfy6Anp5JbAOubPnQvKeAl3yn0wEw0IMPo5QVBTzKVOaFZxsV78FBA";

    fn expected(destination: Option<&str>) -> XMatrix {
        XMatrix {
            origin: "origin.example".into(),
            destination: destination.map(Into::into),
            key: "ed25519:1".into(),
            sig: SIG.into(),
        }
    }

    #[test]
    fn parses_what_senders_emit() {
        let full = expected(Some("relay.example"));
        for header in [
            // Synapse, and our own strict form.
            format!(
                r#"X-Matrix origin="origin.example",destination="relay.example",key="ed25519:1",sig="{SIG}""#
            ),
            // gomatrixserverlib.
            format!(
                r#"X-Matrix origin="origin.example",key="ed25519:1",sig="{SIG}",destination="relay.example""#
            ),
            // ruma: quoted only where needed.
            format!(
                r#"X-Matrix destination=relay.example,key="ed25519:1",origin=origin.example,sig="{SIG}""#
            ),
        ] {
            assert_eq!(XMatrix::parse(&header), Ok(full.clone()), "{header}");
        }
    }

    #[test]
    fn parses_leniently() {
        let full = expected(Some("relay.example"));
        for header in [
            format!(
                r#"x-matrix origin="origin.example",destination="relay.example",key="ed25519:1",sig="{SIG}""#
            ),
            format!(
                r#"X-MATRIX   origin="origin.example",destination="relay.example",key="ed25519:1",sig="{SIG}""#
            ),
            format!(
                "X-Matrix origin=\"origin.example\" \t,\tdestination=\"relay.example\" , key=\"ed25519:1\",\t sig=\"{SIG}\""
            ),
            format!(
                r#"X-Matrix ORIGIN="origin.example",Destination="relay.example",KEY="ed25519:1",Sig="{SIG}""#
            ),
            format!(
                r#"X-Matrix origin="origin\.example",destination="relay.example",key="ed25519\:1",sig="{SIG}""#
            ),
            format!(
                r#"X-Matrix origin=origin.example,destination=relay.example,key=ed25519:1,sig="{SIG}""#
            ),
            // Unquoted everywhere, `sig` with `/` and `+` (as Synapse accepts).
            format!(
                r#"X-Matrix origin=origin.example,destination=relay.example,key=ed25519:1,sig={SIG}"#
            ),
            format!(
                "X-Matrix sig={SIG} ,\tkey = ed25519:1,destination=relay.example,origin=origin.example"
            ),
            format!(
                r#"X-Matrix origin="origin.example",foo=bar,destination="relay.example",x="a,b=\"c\"",key="ed25519:1",sig="{SIG}",foo=again"#
            ),
            format!(
                r#"X-Matrix origin = "origin.example", destination="relay.example",,key="ed25519:1",sig="{SIG}","#
            ),
            format!(
                "  X-Matrix origin=\"origin.example\",destination=\"relay.example\",key=\"ed25519:1\",sig=\"{SIG}\"\t"
            ),
        ] {
            assert_eq!(XMatrix::parse(&header), Ok(full.clone()), "{header}");
        }
        let no_destination =
            format!(r#"X-Matrix origin="origin.example",key="ed25519:1",sig="{SIG}""#);
        assert_eq!(XMatrix::parse(&no_destination), Ok(expected(None)));
        let escapes = XMatrix::parse(r#"X-Matrix origin="a\"b\\c",key=k:1,sig=s"#).unwrap();
        assert_eq!(escapes.origin, r#"a"b\c"#);
        let ipv6 = XMatrix::parse(r#"X-Matrix origin="[::1]:8448",key=ed25519:1,sig=s"#).unwrap();
        assert_eq!(ipv6.origin, "[::1]:8448");
    }

    #[test]
    fn unquoted_values() {
        for (header, origin, key, sig) in [
            ("X-Matrix origin=o,key=k:1,sig=ab/cd", "o", "k:1", "ab/cd"),
            (
                "X-Matrix origin=o,key=k:1,sig=a+b/c==",
                "o",
                "k:1",
                "a+b/c==",
            ),
            ("X-Matrix origin=o,key=k:1,sig==", "o", "k:1", "="),
            ("X-Matrix sig=/+=,key=k:1,origin=o", "o", "k:1", "/+="),
            (
                "X-Matrix origin=[::1]:8448,key=ed25519:a_b-c.d,sig=s",
                "[::1]:8448",
                "ed25519:a_b-c.d",
                "s",
            ),
            (
                "X-Matrix origin=o,key=k:1,sig=!#$%&'*+-.^_`|~;<>?@[]{}",
                "o",
                "k:1",
                "!#$%&'*+-.^_`|~;<>?@[]{}",
            ),
            ("X-Matrix origin=o\t,\tkey=k:1 ,sig=s=\t", "o", "k:1", "s="),
        ] {
            assert_eq!(
                XMatrix::parse(header),
                Ok(XMatrix {
                    origin: origin.into(),
                    destination: None,
                    key: key.into(),
                    sig: sig.into(),
                }),
                "{header}"
            );
        }
    }

    #[test]
    fn rejects_missing_and_duplicate_params() {
        for (header, err) in [
            (
                "X-Matrix key=ed25519:1,sig=s",
                XMatrixError::Missing("origin"),
            ),
            ("X-Matrix origin=o,sig=s", XMatrixError::Missing("key")),
            (
                "X-Matrix origin=o,key=ed25519:1",
                XMatrixError::Missing("sig"),
            ),
            (
                "X-Matrix origin=o,destination=d,key=ed25519:1",
                XMatrixError::Missing("sig"),
            ),
            ("X-Matrix", XMatrixError::Missing("origin")),
            (
                "X-Matrix origin=o,key=k:1,sig=s,origin=o",
                XMatrixError::Duplicate("origin".into()),
            ),
            (
                "X-Matrix origin=o,key=k:1,sig=s,ORIGIN=p",
                XMatrixError::Duplicate("origin".into()),
            ),
            (
                "X-Matrix destination=a,origin=o,key=k:1,Destination=a,sig=s",
                XMatrixError::Duplicate("destination".into()),
            ),
            (
                "X-Matrix origin=o,key=k:1,key=k:2,sig=s",
                XMatrixError::Duplicate("key".into()),
            ),
            (
                "X-Matrix origin=o,key=k:1,sig=s,sig=s",
                XMatrixError::Duplicate("sig".into()),
            ),
        ] {
            assert_eq!(XMatrix::parse(header), Err(err), "{header}");
        }
    }

    #[test]
    fn rejects_other_schemes_and_bad_syntax() {
        for header in [
            "",
            "Bearer abc",
            "X-Matrixorigin=o,key=k:1,sig=s",
            "X-Matrix-2 origin=o,key=k:1,sig=s",
            "Basic Zm9vOmJhcg==",
        ] {
            assert_eq!(
                XMatrix::parse(header),
                Err(XMatrixError::Scheme),
                "{header:?}"
            );
        }
        for header in [
            r#"X-Matrix origin="o,key=k:1,sig=s"#,
            r#"X-Matrix origin="o\"#,
            "X-Matrix origin,key=k:1,sig=s",
            "X-Matrix =o,key=k:1,sig=s",
            "X-Matrix origin=,key=k:1,sig=s",
            r#"X-Matrix origin="o"x,key=k:1,sig=s"#,
            "X-Matrix origin=o key=k:1,sig=s",
            // Unquoted values hold no quote, backslash, space or
            // non-ASCII character.
            r#"X-Matrix origin=o,key=k:1,sig=ab"cd"#,
            r#"X-Matrix origin=o,key=k:1,sig=ab\cd"#,
            "X-Matrix origin=o,key=k:1,sig=ab cd",
            "X-Matrix origin=\u{e9},key=k:1,sig=s",
            "X-Matrix origin=o,key=k:1,sig=s\u{7f}",
            "X-Matrix abc",
        ] {
            assert_eq!(
                XMatrix::parse(header),
                Err(XMatrixError::Syntax),
                "{header:?}"
            );
        }
    }

    #[test]
    fn display_is_strict() {
        let header = expected(Some("relay.example")).to_string();
        assert_eq!(
            header,
            format!(
                r#"X-Matrix origin="origin.example",destination="relay.example",key="ed25519:1",sig="{SIG}""#
            )
        );
        assert_eq!(
            expected(None).to_string(),
            format!(r#"X-Matrix origin="origin.example",key="ed25519:1",sig="{SIG}""#)
        );
        let odd = XMatrix {
            origin: r#"a"b\c"#.into(),
            destination: Some(String::new()),
            key: "k:1".into(),
            sig: "s".into(),
        };
        assert_eq!(
            odd.to_string(),
            r#"X-Matrix origin="a\"b\\c",destination="",key="k:1",sig="s""#
        );
        assert_eq!(XMatrix::parse(&odd.to_string()), Ok(odd));
    }

    proptest! {
        #[test]
        fn display_then_parse_round_trips(
            origin in any::<String>(),
            destination in proptest::option::of(any::<String>()),
            key in any::<String>(),
            sig in any::<String>(),
        ) {
            let header = XMatrix { origin, destination, key, sig };
            prop_assert_eq!(XMatrix::parse(&header.to_string()), Ok(header));
        }
    }
}
