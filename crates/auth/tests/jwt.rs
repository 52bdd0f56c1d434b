//! Issue → verify with real Ed25519 keys, and every way a token must be refused.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{Value, json};
use tongjiao_auth::{
    AuthError, Claims, DEFAULT_AUDIENCE, DEFAULT_ISSUER, KeyPair, LEEWAY_SECS, Role, TokenIssuer,
    TokenSpec, TokenVerifier, bearer_token,
};

struct Fixture {
    keys: KeyPair,
    issuer: TokenIssuer,
    verifier: TokenVerifier,
}

fn fixture(kid: &str) -> Fixture {
    let keys = KeyPair::generate(kid).unwrap();
    let issuer =
        TokenIssuer::from_pem(&keys.private_pem, kid, DEFAULT_ISSUER, DEFAULT_AUDIENCE).unwrap();
    let verifier = TokenVerifier::new(DEFAULT_ISSUER, DEFAULT_AUDIENCE)
        .with_public_pem(kid, &keys.public_pem)
        .unwrap();
    Fixture {
        keys,
        issuer,
        verifier,
    }
}

fn spec(role: Role) -> TokenSpec {
    TokenSpec {
        role,
        subject: "user-1".into(),
        org: None,
        county: None,
        ttl: Duration::from_secs(600),
    }
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

fn b64_json(value: &Value) -> String {
    URL_SAFE_NO_PAD.encode(serde_json::to_vec(value).unwrap())
}

fn decode_part(part: &str) -> Value {
    serde_json::from_slice(&URL_SAFE_NO_PAD.decode(part).unwrap()).unwrap()
}

fn valid_claims_json() -> Value {
    let t = now();
    json!({
        "iss": DEFAULT_ISSUER, "aud": DEFAULT_AUDIENCE, "sub": "attacker",
        "role": "auditor", "exp": t + 600, "nbf": t, "iat": t, "jti": "x",
    })
}

#[test]
fn round_trip_every_role_with_org_and_county() {
    let f = fixture("k1");
    for role in Role::ALL {
        let spec = TokenSpec {
            role,
            subject: format!("{role}-007"),
            org: Some("91110000100000000A".into()),
            county: Some("110105".into()),
            ttl: Duration::from_secs(3600),
        };
        let before = now();
        let token = f.issuer.issue(&spec).unwrap();
        let claims = f.verifier.verify(&token).unwrap();

        assert_eq!(claims.role, role);
        assert_eq!(claims.sub, spec.subject);
        assert_eq!(claims.iss, DEFAULT_ISSUER);
        assert_eq!(claims.aud, DEFAULT_AUDIENCE);
        assert_eq!(claims.org.as_deref(), Some("91110000100000000A"));
        assert_eq!(claims.county.as_deref(), Some("110105"));
        assert!(claims.iat >= before && claims.iat <= now());
        assert_eq!(claims.nbf, claims.iat);
        assert_eq!(claims.exp, claims.iat + 3600);
        assert_eq!(
            uuid::Uuid::parse_str(&claims.jti)
                .unwrap()
                .get_version_num(),
            4
        );
    }
}

#[test]
fn round_trip_without_org_or_county() {
    let f = fixture("k1");
    let token = f.issuer.issue(&spec(Role::HousingBureau)).unwrap();
    let claims: Claims = f.verifier.verify(&token).unwrap();
    assert_eq!(claims.org, None);
    assert_eq!(claims.county, None);
    let payload = decode_part(token.split('.').nth(1).unwrap());
    assert_eq!(payload["role"], "housing_bureau");
    assert!(payload.get("org").is_none());
}

#[test]
fn header_is_eddsa_with_kid() {
    let f = fixture("2026-11-a");
    let token = f.issuer.issue(&spec(Role::Clerk)).unwrap();
    let header = jsonwebtoken::decode_header(&token).unwrap();
    assert_eq!(header.alg, Algorithm::EdDSA);
    assert_eq!(header.kid.as_deref(), Some("2026-11-a"));
}

#[test]
fn jti_is_unique_per_token() {
    let f = fixture("k1");
    let a = f
        .verifier
        .verify(&f.issuer.issue(&spec(Role::Clerk)).unwrap())
        .unwrap();
    let b = f
        .verifier
        .verify(&f.issuer.issue(&spec(Role::Clerk)).unwrap())
        .unwrap();
    assert_ne!(a.jti, b.jti);
}

#[test]
fn expired_token_is_rejected() {
    let f = fixture("k1");
    // Expired by more than the leeway.
    let issued = now() - 600 - LEEWAY_SECS - 5;
    let token = f.issuer.issue_at(&spec(Role::Clerk), issued).unwrap();
    assert_eq!(f.verifier.verify(&token), Err(AuthError::Expired));
}

#[test]
fn expiry_within_leeway_is_tolerated() {
    let f = fixture("k1");
    let issued = now() - 600 - LEEWAY_SECS / 2;
    let token = f.issuer.issue_at(&spec(Role::Clerk), issued).unwrap();
    assert!(f.verifier.verify(&token).is_ok());
}

#[test]
fn token_from_the_future_is_rejected() {
    let f = fixture("k1");
    let token = f.issuer.issue_at(&spec(Role::Clerk), now() + 3600).unwrap();
    assert_eq!(f.verifier.verify(&token), Err(AuthError::NotYetValid));
}

#[test]
fn wrong_issuer_is_rejected() {
    let f = fixture("k1");
    let other =
        TokenIssuer::from_pem(&f.keys.private_pem, "k1", "someone-else", DEFAULT_AUDIENCE).unwrap();
    let token = other.issue(&spec(Role::Clerk)).unwrap();
    assert_eq!(f.verifier.verify(&token), Err(AuthError::WrongIssuer));
}

#[test]
fn wrong_audience_is_rejected() {
    let f = fixture("k1");
    let other =
        TokenIssuer::from_pem(&f.keys.private_pem, "k1", DEFAULT_ISSUER, "other-suite").unwrap();
    let token = other.issue(&spec(Role::Clerk)).unwrap();
    assert_eq!(f.verifier.verify(&token), Err(AuthError::WrongAudience));
}

#[test]
fn other_key_with_same_kid_is_bad_signature() {
    let f = fixture("k1");
    let rogue = fixture("k1");
    let token = rogue.issuer.issue(&spec(Role::Registrar)).unwrap();
    assert_eq!(f.verifier.verify(&token), Err(AuthError::BadSignature));
}

#[test]
fn unknown_kid_is_rejected() {
    let f = fixture("k1");
    let other = fixture("k2");
    let token = other.issuer.issue(&spec(Role::Clerk)).unwrap();
    assert_eq!(
        f.verifier.verify(&token),
        Err(AuthError::UnknownKey("k2".into()))
    );
}

#[test]
fn missing_kid_is_rejected() {
    let f = fixture("k1");
    // Properly signed with the right key, only the kid is left out.
    let key = EncodingKey::from_ed_pem(f.keys.private_pem.as_bytes()).unwrap();
    let token =
        jsonwebtoken::encode(&Header::new(Algorithm::EdDSA), &valid_claims_json(), &key).unwrap();
    assert!(matches!(
        f.verifier.verify(&token),
        Err(AuthError::Malformed(_))
    ));
}

#[test]
fn rotation_accepts_old_and_new_keys() {
    let old = fixture("2026-10");
    let new = fixture("2026-11");
    let verifier = TokenVerifier::new(DEFAULT_ISSUER, DEFAULT_AUDIENCE)
        .with_public_pem("2026-10", &old.keys.public_pem)
        .unwrap()
        .with_public_pem("2026-11", &new.keys.public_pem)
        .unwrap();
    assert_eq!(verifier.kids(), vec!["2026-10", "2026-11"]);
    for f in [&old, &new] {
        let token = f.issuer.issue(&spec(Role::TaxBureau)).unwrap();
        assert_eq!(verifier.verify(&token).unwrap().role, Role::TaxBureau);
    }
}

#[test]
fn hs256_token_is_rejected() {
    let f = fixture("k1");
    let mut header = Header::new(Algorithm::HS256);
    header.kid = Some("k1".into());
    let claims = valid_claims_json();

    let secret = EncodingKey::from_secret(b"a shared secret").unwrap();
    let token = jsonwebtoken::encode(&header, &claims, &secret).unwrap();
    assert_eq!(
        f.verifier.verify(&token),
        Err(AuthError::AlgorithmNotAllowed)
    );

    // The classic confusion attack: the public PEM used as the HMAC secret.
    let confused = EncodingKey::from_secret(f.keys.public_pem.as_bytes()).unwrap();
    let token = jsonwebtoken::encode(&header, &claims, &confused).unwrap();
    assert_eq!(
        f.verifier.verify(&token),
        Err(AuthError::AlgorithmNotAllowed)
    );
}

#[test]
fn alg_none_is_rejected() {
    let f = fixture("k1");
    let header = b64_json(&json!({ "alg": "none", "typ": "JWT", "kid": "k1" }));
    let payload = b64_json(&valid_claims_json());
    for token in [
        format!("{header}.{payload}."),
        format!("{header}.{payload}.AAAA"),
    ] {
        assert_eq!(
            f.verifier.verify(&token),
            Err(AuthError::AlgorithmNotAllowed)
        );
    }
    // Upper-case variants must not slip through a case-insensitive check.
    let header = b64_json(&json!({ "alg": "eddsa", "kid": "k1" }));
    assert_eq!(
        f.verifier.verify(&format!("{header}.{payload}.AAAA")),
        Err(AuthError::AlgorithmNotAllowed)
    );
}

#[test]
fn tampered_payload_is_rejected() {
    let f = fixture("k1");
    let token = f.issuer.issue(&spec(Role::Clerk)).unwrap();
    let parts: Vec<&str> = token.split('.').collect();
    let mut payload = decode_part(parts[1]);
    payload["role"] = json!("auditor");
    let forged = format!("{}.{}.{}", parts[0], b64_json(&payload), parts[2]);
    assert_eq!(f.verifier.verify(&forged), Err(AuthError::BadSignature));

    // Flipping one signature character must fail as well.
    let mut sig = parts[2].to_owned();
    let flipped = if sig.starts_with('A') { "B" } else { "A" };
    sig.replace_range(0..1, flipped);
    let forged = format!("{}.{}.{}", parts[0], parts[1], sig);
    assert_eq!(f.verifier.verify(&forged), Err(AuthError::BadSignature));
}

#[test]
fn garbage_is_malformed() {
    let f = fixture("k1");
    for token in ["x", "a.b.c", "eyJhbGciOiJFZERTQSJ9", "...."] {
        assert!(
            matches!(f.verifier.verify(token), Err(AuthError::Malformed(_))),
            "{token}"
        );
    }
    assert_eq!(f.verifier.verify(""), Err(AuthError::MissingToken));
}

#[test]
fn verifier_without_keys_rejects_everything() {
    let f = fixture("k1");
    let empty = TokenVerifier::new(DEFAULT_ISSUER, DEFAULT_AUDIENCE);
    let token = f.issuer.issue(&spec(Role::Clerk)).unwrap();
    assert_eq!(
        empty.verify(&token),
        Err(AuthError::UnknownKey("k1".into()))
    );
}

#[test]
fn bad_keys_are_refused_at_construction() {
    let f = fixture("k1");
    assert!(matches!(
        TokenIssuer::from_pem(&f.keys.public_pem, "k1", DEFAULT_ISSUER, DEFAULT_AUDIENCE),
        Err(AuthError::Key(_))
    ));
    assert!(matches!(
        TokenIssuer::from_pem("not a pem", "k1", DEFAULT_ISSUER, DEFAULT_AUDIENCE),
        Err(AuthError::Key(_))
    ));
    assert!(matches!(
        TokenIssuer::from_pem(&f.keys.private_pem, "", DEFAULT_ISSUER, DEFAULT_AUDIENCE),
        Err(AuthError::Key(_))
    ));
    assert!(matches!(
        TokenVerifier::new(DEFAULT_ISSUER, DEFAULT_AUDIENCE)
            .with_public_pem("k1", &f.keys.private_pem),
        Err(AuthError::Key(_))
    ));
}

#[test]
fn issuing_refuses_empty_subject_and_zero_ttl() {
    let f = fixture("k1");
    let mut s = spec(Role::Clerk);
    s.subject = " ".into();
    assert!(matches!(f.issuer.issue(&s), Err(AuthError::Encode(_))));
    let mut s = spec(Role::Clerk);
    s.ttl = Duration::from_millis(500);
    assert!(matches!(f.issuer.issue(&s), Err(AuthError::Encode(_))));
}

#[test]
fn bearer_header_feeds_verify() {
    let f = fixture("k1");
    let token = f.issuer.issue(&spec(Role::Developer)).unwrap();
    let header = format!("Bearer {token}");
    let claims = f.verifier.verify(bearer_token(&header).unwrap()).unwrap();
    assert_eq!(claims.role, Role::Developer);
    assert_eq!(bearer_token("bEaReR abc"), Ok("abc"));
    assert_eq!(bearer_token("Bearer "), Err(AuthError::MissingToken));
    assert!(matches!(
        bearer_token("Basic abc"),
        Err(AuthError::Malformed(_))
    ));
}

#[test]
fn debug_output_has_no_key_material() {
    let f = fixture("k1");
    let shown = format!("{:?} {:?} {:?}", f.keys, f.issuer, f.verifier);
    assert!(!shown.contains("PRIVATE KEY"));
    assert!(shown.contains("k1"));
}

/// Test-only pair from `openssl genpkey -algorithm ed25519` / `openssl pkey -pubout`:
/// keys minted outside this crate (e.g. by ops) must work too.
const OPENSSL_PRIVATE: &str = "-----BEGIN PRIVATE KEY-----
MC4CAQAwBQYDK2VwBCIEIF4WeuiPGg0vGH7L1v/Pnrdt4YpFjsXf8aNH8cGOatjt
-----END PRIVATE KEY-----
";
const OPENSSL_PUBLIC: &str = "-----BEGIN PUBLIC KEY-----
MCowBQYDK2VwAyEASbmc0dwsEcp0irrme9KOFh4UxMm74PR6fcMGTRVSnN0=
-----END PUBLIC KEY-----
";

#[test]
fn openssl_generated_keys_interoperate() {
    let issuer =
        TokenIssuer::from_pem(OPENSSL_PRIVATE, "ops-1", DEFAULT_ISSUER, DEFAULT_AUDIENCE).unwrap();
    let verifier = TokenVerifier::new(DEFAULT_ISSUER, DEFAULT_AUDIENCE)
        .with_public_pem("ops-1", OPENSSL_PUBLIC)
        .unwrap();
    let token = issuer.issue(&spec(Role::Auditor)).unwrap();
    assert_eq!(verifier.verify(&token).unwrap().role, Role::Auditor);
}
