//! JWT issuing and verification for tongjiao (房证同交).
//!
//! Every RPC of the suite carries a JWT. The signature algorithm is pinned to
//! EdDSA (Ed25519): the verifier refuses every other `alg`, so a token signed
//! with an HMAC secret or with `alg: none` can never pass. Keys are selected by
//! the header `kid`, which lets the issuer rotate keys while verifiers accept
//! both the old and the new public key for a while.
//!
//! ```
//! use std::time::Duration;
//! use tongjiao_auth::{
//!     DEFAULT_AUDIENCE, DEFAULT_ISSUER, KeyPair, Role, TokenIssuer, TokenSpec, TokenVerifier,
//! };
//!
//! let keys = KeyPair::generate("k1")?;
//! let issuer = TokenIssuer::from_pem(&keys.private_pem, &keys.kid, DEFAULT_ISSUER, DEFAULT_AUDIENCE)?;
//! let verifier = TokenVerifier::new(DEFAULT_ISSUER, DEFAULT_AUDIENCE)
//!     .with_public_pem(&keys.kid, &keys.public_pem)?;
//!
//! let token = issuer.issue(&TokenSpec {
//!     role: Role::Clerk,
//!     subject: "clerk-001".into(),
//!     org: None,
//!     county: Some("110105".into()),
//!     ttl: Duration::from_secs(3600),
//! })?;
//! let claims = verifier.verify(&token)?;
//! assert_eq!(claims.role, Role::Clerk);
//! # Ok::<(), tongjiao_auth::AuthError>(())
//! ```

mod bearer;
mod claims;
mod error;
mod issuer;
mod keys;
mod verifier;

pub use bearer::bearer_token;
pub use claims::{Claims, ParseRoleError, Role};
pub use error::AuthError;
pub use issuer::{TokenIssuer, TokenSpec};
pub use keys::KeyPair;
pub use verifier::{LEEWAY_SECS, TokenVerifier};

/// Issuer (`iss`) used by development and test deployments.
pub const DEFAULT_ISSUER: &str = "tongjiao-dev";
/// Audience (`aud`) shared by all tongjiao services.
pub const DEFAULT_AUDIENCE: &str = "tongjiao";
