//! Join tokens: `SHOAL-1-<ca digest>-<secret>`.

use std::fmt;
use std::str::FromStr;

use ring::rand::{SecureRandom, SystemRandom};
use subtle::ConstantTimeEq;

use crate::encoding::{base32_lower, is_lower_base32, is_lower_hex};
use crate::{JoinTokenError, PkiError};

/// The first field of every join token.
pub const JOIN_TOKEN_PREFIX: &str = "SHOAL";
/// The only join token format version.
pub const JOIN_TOKEN_VERSION: &str = "1";
/// Random bytes in a generated secret (160 bits, 32 base32 characters).
const SECRET_BYTES: usize = 20;
/// Shortest secret accepted when parsing: 26 base32 characters carry 130 ≥ 128 bits.
pub const MIN_SECRET_CHARS: usize = 26;
/// Length of a hex SHA-256 digest.
pub const DIGEST_HEX_CHARS: usize = 64;

/// A join token: the digest of the cluster CA certificate, which a joining node pins before it
/// trusts anything the manager says, plus a random secret proving the node may join.
///
/// `Display` prints the whole token (it is what `join-token` shows the operator); `Debug`
/// redacts the secret, so a token that ends up in a log line or error does not leak it.
/// There is deliberately no `PartialEq`: compare tokens with [`JoinToken::matches`], which runs
/// in constant time.
#[derive(Clone)]
pub struct JoinToken {
    /// Lowercase hex SHA-256 of the CA certificate DER (64 characters).
    pub ca_digest: String,
    /// Lowercase base32 random secret.
    pub secret: String,
}

/// Checks that `digest` is 64 lowercase hex characters.
pub(crate) fn check_digest(digest: &str) -> Result<(), JoinTokenError> {
    if digest.len() != DIGEST_HEX_CHARS {
        return Err(JoinTokenError::DigestLength { found: digest.chars().count() });
    }
    if !is_lower_hex(digest) {
        return Err(JoinTokenError::DigestChars);
    }
    Ok(())
}

impl JoinToken {
    /// A new token for the CA with digest `ca_digest` (see [`crate::Ca::digest`]) and a fresh
    /// 160-bit secret from the system RNG.
    pub fn generate(ca_digest: &str) -> Result<JoinToken, PkiError> {
        check_digest(ca_digest).map_err(|_| PkiError::InvalidDigest)?;
        let mut bytes = [0u8; SECRET_BYTES];
        SystemRandom::new().fill(&mut bytes).map_err(|_| PkiError::Random)?;
        Ok(JoinToken { ca_digest: ca_digest.to_owned(), secret: base32_lower(&bytes) })
    }

    /// Whether `presented` is this token: digest and secret compared in constant time (with
    /// respect to their contents).
    pub fn matches(&self, presented: &JoinToken) -> bool {
        let digest_eq = self.ca_digest.as_bytes().ct_eq(presented.ca_digest.as_bytes());
        let secret_eq = self.secret.as_bytes().ct_eq(presented.secret.as_bytes());
        bool::from(digest_eq & secret_eq)
    }
}

impl fmt::Display for JoinToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{JOIN_TOKEN_PREFIX}-{JOIN_TOKEN_VERSION}-{}-{}", self.ca_digest, self.secret)
    }
}

impl fmt::Debug for JoinToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{JOIN_TOKEN_PREFIX}-{JOIN_TOKEN_VERSION}-{}-<redacted>", self.ca_digest)
    }
}

impl FromStr for JoinToken {
    type Err = JoinTokenError;

    /// Parses `SHOAL-1-<64 lowercase hex>-<≥26 lowercase base32>`; surrounding whitespace (a
    /// pasted newline) is ignored.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let s = s.trim();
        let rest = s
            .strip_prefix(JOIN_TOKEN_PREFIX)
            .and_then(|r| r.strip_prefix('-'))
            .ok_or(JoinTokenError::WrongPrefix)?;
        let (version, rest) = rest.split_once('-').ok_or(JoinTokenError::WrongVersion)?;
        if version != JOIN_TOKEN_VERSION {
            return Err(JoinTokenError::WrongVersion);
        }
        let (digest, secret) = rest.split_once('-').unwrap_or((rest, ""));
        check_digest(digest)?;
        if secret.is_empty() {
            return Err(JoinTokenError::MissingSecret);
        }
        if !is_lower_base32(secret) {
            return Err(JoinTokenError::SecretChars);
        }
        if secret.len() < MIN_SECRET_CHARS {
            return Err(JoinTokenError::SecretTooShort { found: secret.len(), min: MIN_SECRET_CHARS });
        }
        Ok(JoinToken { ca_digest: digest.to_owned(), secret: secret.to_owned() })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DIGEST: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

    fn token() -> JoinToken {
        JoinToken::generate(DIGEST).expect("valid digest")
    }

    #[test]
    fn generated_token_has_expected_shape() {
        let t = token();
        assert_eq!(t.ca_digest, DIGEST);
        assert_eq!(t.secret.len(), 32);
        assert!(is_lower_base32(&t.secret));
        let s = t.to_string();
        assert_eq!(s, format!("SHOAL-1-{DIGEST}-{}", t.secret));
    }

    #[test]
    fn format_parse_round_trip() {
        let t = token();
        let parsed: JoinToken = t.to_string().parse().expect("own token parses");
        assert_eq!(
            (parsed.ca_digest.as_str(), parsed.secret.as_str()),
            (t.ca_digest.as_str(), t.secret.as_str())
        );
        assert!(parsed.matches(&t));
        let with_newline: JoinToken = format!("  {t}\n").parse().expect("whitespace is trimmed");
        assert!(with_newline.matches(&t));
        assert_eq!(with_newline.to_string(), t.to_string());
    }

    #[test]
    fn debug_redacts_secret() {
        let t = token();
        let debug = format!("{t:?}");
        assert!(!debug.contains(&t.secret), "Debug leaked the secret: {debug}");
        assert_eq!(debug, format!("SHOAL-1-{DIGEST}-<redacted>"));
        let wrapped = format!("{:?}", Some(&t));
        assert!(!wrapped.contains(&t.secret));
        assert!(t.to_string().contains(&t.secret), "Display must show the full token");
    }

    #[test]
    fn tampered_tokens_do_not_match() {
        let t = token();
        let mut other_secret = t.clone();
        let last = other_secret.secret.pop().expect("non-empty secret");
        other_secret.secret.push(if last == 'a' { 'b' } else { 'a' });
        assert!(!t.matches(&other_secret));

        let mut other_digest = t.clone();
        other_digest.ca_digest = "f".repeat(64);
        assert!(!t.matches(&other_digest));

        let mut truncated = t.clone();
        truncated.secret.truncate(26);
        assert!(!t.matches(&truncated));

        assert!(t.matches(&t.clone()));
    }

    #[test]
    fn two_generated_tokens_differ() {
        let a = token();
        let b = token();
        assert_ne!(a.secret, b.secret);
        assert!(!a.matches(&b));
    }

    #[test]
    fn generate_rejects_bad_digest() {
        for bad in ["", "abc", &"A".repeat(64), &"g".repeat(64), &"a".repeat(65)] {
            assert!(matches!(JoinToken::generate(bad), Err(PkiError::InvalidDigest)), "{bad:?}");
        }
    }

    #[test]
    fn malformed_tokens_are_rejected_precisely() {
        let secret = "abcdefghijklmnopqrstuvwxyz234567";
        let upper_digest = DIGEST.to_uppercase();
        let cases: Vec<(String, JoinTokenError)> = vec![
            (String::new(), JoinTokenError::WrongPrefix),
            (format!("SWARM-1-{DIGEST}-{secret}"), JoinTokenError::WrongPrefix),
            (format!("shoal-1-{DIGEST}-{secret}"), JoinTokenError::WrongPrefix),
            (format!("SHOAL1-{DIGEST}-{secret}"), JoinTokenError::WrongPrefix),
            ("SHOAL-".to_owned(), JoinTokenError::WrongVersion),
            ("SHOAL-1".to_owned(), JoinTokenError::WrongVersion),
            (format!("SHOAL-2-{DIGEST}-{secret}"), JoinTokenError::WrongVersion),
            (format!("SHOAL-01-{DIGEST}-{secret}"), JoinTokenError::WrongVersion),
            (format!("SHOAL-1-{}-{secret}", &DIGEST[..63]), JoinTokenError::DigestLength { found: 63 }),
            (format!("SHOAL-1-{DIGEST}0-{secret}"), JoinTokenError::DigestLength { found: 65 }),
            (format!("SHOAL-1--{secret}"), JoinTokenError::DigestLength { found: 0 }),
            (format!("SHOAL-1-{upper_digest}-{secret}"), JoinTokenError::DigestChars),
            (format!("SHOAL-1-{}-{secret}", "z".repeat(64)), JoinTokenError::DigestChars),
            (format!("SHOAL-1-{DIGEST}"), JoinTokenError::MissingSecret),
            (format!("SHOAL-1-{DIGEST}-"), JoinTokenError::MissingSecret),
            (
                format!("SHOAL-1-{DIGEST}-{}", &secret[..25]),
                JoinTokenError::SecretTooShort { found: 25, min: MIN_SECRET_CHARS },
            ),
            (format!("SHOAL-1-{DIGEST}-{}", secret.to_uppercase()), JoinTokenError::SecretChars),
            (format!("SHOAL-1-{DIGEST}-{secret}-extra"), JoinTokenError::SecretChars),
            (format!("SHOAL-1-{DIGEST}-{secret}1"), JoinTokenError::SecretChars),
            (format!("SHOAL-1-{DIGEST}-{secret} {secret}"), JoinTokenError::SecretChars),
        ];
        for (input, expected) in cases {
            let got = input.parse::<JoinToken>();
            assert_eq!(got.as_ref().err(), Some(&expected), "input {input:?} gave {:?}", got.as_ref().ok());
            // Error messages never contain the secret.
            if let Err(e) = got {
                assert!(!e.to_string().contains(secret), "error leaked secret: {e}");
            }
        }
        // Exactly the minimum length parses.
        let min: JoinToken = format!("SHOAL-1-{DIGEST}-{}", &secret[..26]).parse().expect("26 chars suffice");
        assert_eq!(min.secret.len(), 26);
    }
}
