use std::fmt;

use ed25519_dalek::pkcs8::spki::der::pem::LineEnding;
use ed25519_dalek::pkcs8::{
    DecodePrivateKey, DecodePublicKey, EncodePrivateKey, EncodePublicKey, KeypairBytes,
};
use ed25519_dalek::{SECRET_KEY_LENGTH, SigningKey, VerifyingKey};
use zeroize::Zeroizing;

use crate::AuthError;

/// An Ed25519 key pair in PEM form, as handed to [`crate::TokenIssuer`] and
/// [`crate::TokenVerifier`].
#[derive(Clone, PartialEq, Eq)]
pub struct KeyPair {
    pub kid: String,
    /// PKCS#8 v1 (`BEGIN PRIVATE KEY`), the form `openssl genpkey -algorithm ed25519` writes.
    pub private_pem: String,
    /// SubjectPublicKeyInfo (`BEGIN PUBLIC KEY`).
    pub public_pem: String,
}

impl KeyPair {
    pub fn generate(kid: &str) -> Result<KeyPair, AuthError> {
        check_kid(kid)?;
        let mut seed = Zeroizing::new([0u8; SECRET_KEY_LENGTH]);
        getrandom::fill(seed.as_mut()).map_err(|e| {
            AuthError::Key(format!(
                "no OS randomness for key generation (无法获取随机数): {e}"
            ))
        })?;
        let signing = SigningKey::from_bytes(&seed);

        // v1 without the embedded public key: the most widely readable form.
        let private_pem = KeypairBytes {
            secret_key: *seed,
            public_key: None,
        }
        .to_pkcs8_pem(LineEnding::LF)
        .map_err(|e| AuthError::Key(format!("PKCS#8 encoding failed (私钥编码失败): {e}")))?;
        let public_pem = signing
            .verifying_key()
            .to_public_key_pem(LineEnding::LF)
            .map_err(|e| AuthError::Key(format!("SPKI encoding failed (公钥编码失败): {e}")))?;

        Ok(KeyPair {
            kid: kid.to_owned(),
            private_pem: private_pem.as_str().to_owned(),
            public_pem,
        })
    }
}

// Hand-written so that logging a KeyPair never prints the private key.
impl fmt::Debug for KeyPair {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeyPair")
            .field("kid", &self.kid)
            .field("private_pem", &"[redacted]")
            .field("public_pem", &self.public_pem)
            .finish()
    }
}

pub(crate) fn check_kid(kid: &str) -> Result<(), AuthError> {
    if kid.trim().is_empty() {
        return Err(AuthError::Key("empty key id (密钥标识为空)".into()));
    }
    Ok(())
}

/// jsonwebtoken only checks an Ed25519 PEM when it first signs, so a bad
/// key would surface per request; parsing it here makes startup fail instead.
pub(crate) fn check_private_pem(pem: &str) -> Result<(), AuthError> {
    SigningKey::from_pkcs8_pem(pem)
        .map(drop)
        .map_err(|e| AuthError::Key(format!("not an Ed25519 PKCS#8 private key (私钥无效): {e}")))
}

/// Same reasoning as [`check_private_pem`]; additionally refuses small-order
/// points, under which signatures would not bind to this key.
pub(crate) fn check_public_pem(pem: &str) -> Result<(), AuthError> {
    let key = VerifyingKey::from_public_key_pem(pem)
        .map_err(|e| AuthError::Key(format!("not an Ed25519 SPKI public key (公钥无效): {e}")))?;
    if key.is_weak() {
        return Err(AuthError::Key("weak Ed25519 public key (弱公钥)".into()));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_pems_have_the_expected_armour() {
        let kp = KeyPair::generate("k1").unwrap();
        assert_eq!(kp.kid, "k1");
        assert!(kp.private_pem.starts_with("-----BEGIN PRIVATE KEY-----\n"));
        assert!(kp.public_pem.starts_with("-----BEGIN PUBLIC KEY-----\n"));
        check_private_pem(&kp.private_pem).unwrap();
        check_public_pem(&kp.public_pem).unwrap();
    }

    #[test]
    fn public_key_matches_private_key() {
        let kp = KeyPair::generate("k1").unwrap();
        let signing = SigningKey::from_pkcs8_pem(&kp.private_pem).unwrap();
        let public = VerifyingKey::from_public_key_pem(&kp.public_pem).unwrap();
        assert_eq!(signing.verifying_key(), public);
    }

    #[test]
    fn two_generated_keys_differ() {
        let a = KeyPair::generate("k").unwrap();
        let b = KeyPair::generate("k").unwrap();
        assert_ne!(a.private_pem, b.private_pem);
    }

    #[test]
    fn debug_hides_private_key() {
        let kp = KeyPair::generate("k1").unwrap();
        let shown = format!("{kp:?}");
        assert!(!shown.contains("PRIVATE"));
        assert!(shown.contains("[redacted]"));
    }

    #[test]
    fn empty_kid_and_swapped_pems_are_refused() {
        assert!(matches!(KeyPair::generate(" "), Err(AuthError::Key(_))));
        let kp = KeyPair::generate("k1").unwrap();
        assert!(check_private_pem(&kp.public_pem).is_err());
        assert!(check_public_pem(&kp.private_pem).is_err());
        assert!(check_public_pem("garbage").is_err());
    }
}
