//! Matrix's unpadded base64 (RFC 4648 standard alphabet, no `=`).

use base64::Engine as _;
use base64::alphabet;
use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};

/// The input is not base64.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid base64")]
pub struct Base64Error;

/// Writes without padding; reads with or without it, and tolerates non-zero
/// trailing bits.
const ENGINE: GeneralPurpose = GeneralPurpose::new(
    &alphabet::STANDARD,
    GeneralPurposeConfig::new()
        .with_encode_padding(false)
        .with_decode_allow_trailing_bits(true)
        .with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

/// Encodes `bytes` as unpadded standard base64.
pub fn encode(bytes: &[u8]) -> String {
    ENGINE.encode(bytes)
}

/// Decodes standard base64 leniently: padding optional, non-zero trailing
/// bits allowed (the spec's own test seed has them).
pub fn decode(s: &str) -> Result<Vec<u8>, Base64Error> {
    ENGINE.decode(s).map_err(|_| Base64Error)
}

#[cfg(test)]
mod tests {
    use super::*;

    const RFC4648: [(&str, &str); 7] = [
        ("", ""),
        ("f", "Zg"),
        ("fo", "Zm8"),
        ("foo", "Zm9v"),
        ("foob", "Zm9vYg"),
        ("fooba", "Zm9vYmE"),
        ("foobar", "Zm9vYmFy"),
    ];

    #[test]
    fn encodes_unpadded() {
        for (plain, b64) in RFC4648 {
            assert_eq!(encode(plain.as_bytes()), b64);
        }
    }

    #[test]
    fn decodes_with_or_without_padding() {
        for (plain, b64) in RFC4648 {
            assert_eq!(decode(b64).unwrap(), plain.as_bytes());
            let padded = format!("{b64}{}", "=".repeat((4 - b64.len() % 4) % 4));
            assert_eq!(decode(&padded).unwrap(), plain.as_bytes(), "{padded}");
        }
    }

    #[test]
    fn decodes_non_zero_trailing_bits() {
        // The spec's test seed: its last symbol carries non-zero spare bits.
        let seed = decode("YJDBA9Xnr2sVqXD9Vj7XVUnmFZcZrlw8Md7kMW+3XA1").unwrap();
        assert_eq!(seed.len(), 32);
        assert_eq!(decode("Zh").unwrap(), b"f");
    }

    #[test]
    fn rejects_non_base64() {
        for bad in ["Z", "Zm9v!", "Zm-_", "Zm 9v", "Zg=a", "Zm9vYg==="] {
            assert_eq!(decode(bad), Err(Base64Error), "{bad:?}");
        }
    }
}
