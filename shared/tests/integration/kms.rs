//! Signing with AWS KMS, against the local KMS (moto) `make test` started: the
//! private key never leaves KMS; tokens verify with its public key, fetched
//! with GetPublicKey, and through the JWKS any other library can use. Also the
//! discovery documents themselves.

use crate::support::*;
use auth::handlers::discovery::{self, CACHE_CONTROL, Discovery};
use auth::keys::{KeySource, PublicKey, Signer, load_public_keys};
use auth::tokens::{TokenIssuer, TokenVerifier};
use auth::users::{User, Username};
use aws_sdk_kms::types::{KeySpec, KeyUsageType};
use jsonwebtoken::jwk::JwkSet;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};

async fn kms() -> aws_sdk_kms::Client {
    aws_sdk_kms::Client::new(&sdk_for(&required_env("KMS_TEST_ENDPOINT"), &sdk_settings()).await)
}

/// A fresh RSA_2048 SIGN_VERIFY key; returns (key id, key ARN).
async fn create_key(kms: &aws_sdk_kms::Client) -> (String, String) {
    let created = kms
        .create_key()
        .key_spec(KeySpec::Rsa2048)
        .key_usage(KeyUsageType::SignVerify)
        .send()
        .await
        .unwrap_or_else(|e| panic!("cannot create a key on the local KMS: {e:?}"));
    let metadata = created.key_metadata().unwrap();
    (
        metadata.key_id().to_owned(),
        metadata.arn().unwrap().to_owned(),
    )
}

fn user() -> User {
    User::new(Username::parse("kms-user").unwrap(), "K".into(), "h".into())
}

#[tokio::test]
async fn tokens_signed_by_kms_verify_with_its_public_key() {
    let kms = kms().await;
    let (key_id, arn) = create_key(&kms).await;
    // Signer named by ARN, verifier by id: the kid is the key id either way.
    let signer = Signer::new(&KeySource::Kms(arn), &kms).unwrap();
    assert_eq!(signer.kid(), key_id);
    let issuer = TokenIssuer::new(signer, &token_config());
    let token = issuer
        .issue(
            &user(),
            "sid-1",
            auth::clock::system_now(),
            &[],
            auth::clock::system_now(),
        )
        .await
        .unwrap()
        .token;
    let header = jsonwebtoken::decode_header(&token).unwrap();
    assert_eq!(header.alg, Algorithm::RS256);
    assert_eq!(header.kid.as_deref(), Some(key_id.as_str()));

    let keys = load_public_keys(&[KeySource::Kms(key_id.clone())], &kms)
        .await
        .unwrap();
    assert_eq!(keys[0].kid, key_id);
    let claims = TokenVerifier::new(&keys, &token_config())
        .verify(&token)
        .await
        .unwrap();
    assert_eq!(claims.username, "kms-user");
    // A token of our local key does not pass a verifier that only knows the KMS key.
    let local = issuer_local_token().await;
    assert!(
        TokenVerifier::new(&keys, &token_config())
            .verify(&local)
            .await
            .is_err()
    );
}

async fn issuer_local_token() -> String {
    issuer()
        .issue(
            &user(),
            "sid-1",
            auth::clock::system_now(),
            &[],
            auth::clock::system_now(),
        )
        .await
        .unwrap()
        .token
}

#[tokio::test]
async fn a_verifier_may_name_the_kms_key_by_alias() {
    let kms = kms().await;
    let (key_id, _) = create_key(&kms).await;
    let alias = format!("alias/auth-test-{}", uuid::Uuid::new_v4().simple());
    kms.create_alias()
        .alias_name(&alias)
        .target_key_id(&key_id)
        .send()
        .await
        .unwrap();
    let keys = load_public_keys(&[KeySource::Kms(alias)], &kms)
        .await
        .unwrap();
    assert_eq!(keys[0].kid, key_id);
}

#[tokio::test]
async fn kms_signed_tokens_verify_through_the_jwks_with_a_generic_jwk_decoder() {
    let kms = kms().await;
    let (key_id, _) = create_key(&kms).await;
    let keys = load_public_keys(&[KeySource::Kms(key_id.clone())], &kms)
        .await
        .unwrap();
    let discovery = Discovery::new(&keys, None, &token_config(), &permissions());
    let response = discovery::handle(&discovery, event("jwks.json")).await;
    assert_eq!(response.status(), 200);
    let jwks: JwkSet = serde_json::from_slice(&body_bytes(&response)).unwrap();

    let signer = Signer::new(&KeySource::Kms(key_id.clone()), &kms).unwrap();
    let token = TokenIssuer::new(signer, &token_config())
        .issue(
            &user(),
            "sid-1",
            auth::clock::system_now(),
            &[],
            auth::clock::system_now(),
        )
        .await
        .unwrap()
        .token;
    // Verify the way any JWKS consumer would: find the kid, build the key from the JWK.
    let kid = jsonwebtoken::decode_header(&token).unwrap().kid.unwrap();
    let jwk = jwks.find(&kid).expect("the token's kid is in the JWKS");
    let key = DecodingKey::from_jwk(jwk).unwrap();
    let mut validation = Validation::new(Algorithm::RS256);
    validation.set_audience(&[AUDIENCE]);
    validation.set_issuer(&[ISSUER]);
    let data = jsonwebtoken::decode::<serde_json::Value>(&token, &key, &validation).unwrap();
    assert_eq!(data.claims["username"], "kms-user");
}

fn discovery_with(keys: &[PublicKey]) -> Discovery {
    Discovery::new(keys, None, &token_config(), &permissions())
}

#[tokio::test]
async fn the_jwks_lists_every_verification_key_with_the_rfc_7517_members() {
    let keys = [our_key().public.clone(), stranger_key().public.clone()];
    let response = discovery::handle(&discovery_with(&keys), event("jwks.json")).await;
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["cache-control"], CACHE_CONTROL);
    assert_eq!(response.headers()["content-type"], "application/json");
    let json: serde_json::Value = serde_json::from_slice(&body_bytes(&response)).unwrap();
    let listed = json["keys"].as_array().unwrap();
    assert_eq!(listed.len(), 2);
    for (jwk, key) in listed.iter().zip(&keys) {
        assert_eq!(jwk["kid"], key.kid.as_str());
        assert_eq!(jwk["kty"], "RSA");
        assert_eq!(jwk["alg"], "RS256");
        assert_eq!(jwk["use"], "sig");
        assert_eq!(jwk["e"], "AQAB");
        assert!(jwk["n"].as_str().unwrap().len() > 300);
        assert!(
            jwk.get("d").is_none() && jwk.get("p").is_none(),
            "no private members"
        );
    }
}

#[tokio::test]
async fn the_openid_configuration_names_our_issuer_and_jwks() {
    let response = discovery::handle(
        &discovery_with(&[our_key().public.clone()]),
        event("openid-configuration.json"),
    )
    .await;
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["cache-control"], CACHE_CONTROL);
    let json: serde_json::Value = serde_json::from_slice(&body_bytes(&response)).unwrap();
    assert_eq!(json["issuer"], ISSUER);
    assert_eq!(json["jwks_uri"], format!("{ISSUER}/.well-known/jwks.json"));
    assert_eq!(
        json["id_token_signing_alg_values_supported"],
        serde_json::json!(["RS256"])
    );
    // One scope per role the deployment knows (ROLES), admin always.
    assert_eq!(
        json["scopes_supported"],
        serde_json::json!(["admin", "support"])
    );
    let claims = json["claims_supported"].as_array().unwrap();
    for claim in ["auth_time", "scope", "sub", "sid"] {
        assert!(claims.contains(&claim.into()), "{claim}");
    }
}

#[tokio::test]
async fn discovery_answers_other_methods_with_405_and_other_paths_with_404() {
    let state = discovery_with(&[our_key().public.clone()]);
    let response = discovery::handle(&state, event("jwks-wrong-method.json")).await;
    assert_error(&response, 405, "method_not_allowed");
    assert_eq!(response.headers()["allow"], "GET");
    let mut other = event("jwks.json");
    *other.uri_mut() = "/.well-known/other".parse().unwrap();
    assert_error(&discovery::handle(&state, other).await, 404, "not_found");
}
