//! A software authenticator and the browser around it, as WebAuthn (Level
//! 3) has them make a passkey and sign with it: its own P-256 keys (ES256),
//! `none` attestation, discoverable credentials holding the user handle,
//! and what a test needs to bend: the origin and relying party id the
//! client names, the UV flag, the counter, the backup flags.

use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::{ECDSA_P256_SHA256_ASN1_SIGNING, EcdsaKeyPair, KeyPair as _};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde_json::{Value, json};

const UP: u8 = 0x01;
const UV: u8 = 0x04;
const BE: u8 = 0x08;
const BS: u8 = 0x10;
const AT: u8 = 0x40;

/// One passkey held by the authenticator.
pub struct Credential {
    pub id: Vec<u8>,
    pub user_handle: Vec<u8>,
    pub rp_id: String,
    key: EcdsaKeyPair,
    /// The key as made, for `Authenticator::saved`.
    pkcs8: Vec<u8>,
    pub counter: u32,
}

impl Credential {
    /// Its id as the API shows it.
    pub fn id_text(&self) -> String {
        URL_SAFE_NO_PAD.encode(&self.id)
    }
}

/// How the authenticator and its browser behave.
#[derive(Clone, Debug)]
pub struct Behaviour {
    /// The origin the client data names (the page's, unless bent).
    pub origin: String,
    /// The relying party id hashed into the authenticator data (`None`:
    /// the one the options name).
    pub rp_id: Option<String>,
    /// Whether the person was verified (the UV flag).
    pub user_verified: bool,
    /// Whether the counter counts (a hardware key's) or stays 0 (a synced
    /// passkey's).
    pub counts: bool,
    /// The backup flags (BE, BS).
    pub backup_eligible: bool,
    pub backed_up: bool,
    /// What the browser says of the credential's discoverability
    /// (`credProps.rk`), if anything.
    pub says_resident: Option<bool>,
}

impl Behaviour {
    pub fn at(origin: &str) -> Self {
        Behaviour {
            origin: origin.to_owned(),
            rp_id: None,
            user_verified: true,
            counts: true,
            backup_eligible: false,
            backed_up: false,
            says_resident: Some(true),
        }
    }
}

pub struct Authenticator {
    pub behaviour: Behaviour,
    pub credentials: Vec<Credential>,
}

fn b64(bytes: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

fn unb64(text: &str) -> Vec<u8> {
    URL_SAFE_NO_PAD
        .decode(text.trim_end_matches('='))
        .unwrap_or_else(|e| panic!("{text}: {e}"))
}

fn sha256(bytes: &[u8]) -> [u8; 32] {
    let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, bytes);
    digest.as_ref().try_into().unwrap()
}

/// CBOR, as much of it as attestation objects and COSE keys use.
fn cbor_head(out: &mut Vec<u8>, major: u8, value: u64) {
    let major = major << 5;
    match value {
        0..=23 => out.push(major | value as u8),
        24..=0xff => out.extend([major | 24, value as u8]),
        0x100..=0xffff => {
            out.push(major | 25);
            out.extend((value as u16).to_be_bytes());
        }
        _ => {
            out.push(major | 26);
            out.extend((value as u32).to_be_bytes());
        }
    }
}

fn cbor_int(out: &mut Vec<u8>, value: i64) {
    if value >= 0 {
        cbor_head(out, 0, value as u64);
    } else {
        cbor_head(out, 1, (-1 - value) as u64);
    }
}

fn cbor_bytes(out: &mut Vec<u8>, bytes: &[u8]) {
    cbor_head(out, 2, bytes.len() as u64);
    out.extend(bytes);
}

fn cbor_text(out: &mut Vec<u8>, text: &str) {
    cbor_head(out, 3, text.len() as u64);
    out.extend(text.as_bytes());
}

/// The credential's public key as COSE (EC2, P-256, ES256).
fn cose_key(public: &[u8]) -> Vec<u8> {
    assert_eq!(public.len(), 65, "an uncompressed P-256 point");
    let mut out = Vec::new();
    cbor_head(&mut out, 5, 5);
    cbor_int(&mut out, 1);
    cbor_int(&mut out, 2); // kty: EC2
    cbor_int(&mut out, 3);
    cbor_int(&mut out, -7); // alg: ES256
    cbor_int(&mut out, -1);
    cbor_int(&mut out, 1); // crv: P-256
    cbor_int(&mut out, -2);
    cbor_bytes(&mut out, &public[1..33]);
    cbor_int(&mut out, -3);
    cbor_bytes(&mut out, &public[33..65]);
    out
}

impl Authenticator {
    pub fn new(behaviour: Behaviour) -> Self {
        Authenticator {
            behaviour,
            credentials: Vec::new(),
        }
    }

    /// Its passkeys as JSON, keys included (a test's own, never a real
    /// person's), for `restored`.
    pub fn saved(&self) -> Value {
        let credentials: Vec<Value> = self
            .credentials
            .iter()
            .map(|c| {
                json!({
                    "id": b64(&c.id),
                    "user_handle": b64(&c.user_handle),
                    "rp_id": c.rp_id,
                    "pkcs8": b64(&c.pkcs8),
                    "counter": c.counter,
                })
            })
            .collect();
        json!({ "credentials": credentials })
    }

    /// An authenticator holding the passkeys `saved` wrote.
    pub fn restored(behaviour: Behaviour, saved: &Value) -> Self {
        let credentials = saved["credentials"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|c| {
                let text = |field: &str| c[field].as_str().unwrap_or_else(|| panic!("{field}"));
                let pkcs8 = unb64(text("pkcs8"));
                Credential {
                    id: unb64(text("id")),
                    user_handle: unb64(text("user_handle")),
                    rp_id: text("rp_id").to_owned(),
                    key: EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_ASN1_SIGNING, &pkcs8)
                        .expect("a saved P-256 key"),
                    pkcs8,
                    counter: c["counter"]
                        .as_u64()
                        .and_then(|n| n.try_into().ok())
                        .expect("counter"),
                }
            })
            .collect();
        Authenticator {
            behaviour,
            credentials,
        }
    }

    fn flags(&self) -> u8 {
        let b = &self.behaviour;
        UP | if b.user_verified { UV } else { 0 }
            | if b.backup_eligible { BE } else { 0 }
            | if b.backed_up { BS } else { 0 }
    }

    fn client_data(&self, kind: &str, challenge: &str) -> Vec<u8> {
        json!({
            "type": kind,
            "challenge": challenge,
            "origin": self.behaviour.origin,
            "crossOrigin": false,
        })
        .to_string()
        .into_bytes()
    }

    /// `navigator.credentials.create` with `options` (the `options` the API
    /// gave: `{"publicKey": …}`): a new passkey, and the browser's answer
    /// as `PublicKeyCredential.toJSON()` encodes it.
    pub fn create(&mut self, options: &Value) -> Value {
        let public_key = &options["publicKey"];
        let excluded = public_key["excludeCredentials"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|c| c["id"].as_str())
            .map(unb64)
            .any(|id| self.credentials.iter().any(|c| c.id == id));
        assert!(
            !excluded,
            "the browser refuses: this authenticator holds one already"
        );
        let rng = SystemRandom::new();
        let pkcs8 = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_ASN1_SIGNING, &rng).unwrap();
        let key =
            EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_ASN1_SIGNING, pkcs8.as_ref()).unwrap();
        let credential = Credential {
            id: uuid::Uuid::new_v4().as_bytes().to_vec(),
            user_handle: unb64(public_key["user"]["id"].as_str().expect("user.id")),
            rp_id: public_key["rp"]["id"].as_str().expect("rp.id").to_owned(),
            key,
            pkcs8: pkcs8.as_ref().to_vec(),
            counter: u32::from(self.behaviour.counts),
        };
        let answer = self.registration(options, &credential);
        self.credentials.push(credential);
        answer
    }

    /// The passkey at `index` registered again under `options` (its id and
    /// key): what a client that ignored `excludeCredentials` would send for
    /// another account.
    pub fn create_again(&self, options: &Value, index: usize) -> Value {
        self.registration(options, &self.credentials[index])
    }

    /// The browser's answer to `options` making `credential`.
    fn registration(&self, options: &Value, credential: &Credential) -> Value {
        let public_key = &options["publicKey"];
        let rp_id = public_key["rp"]["id"].as_str().expect("rp.id");
        let challenge = public_key["challenge"].as_str().expect("challenge");
        let hashed_rp = self.behaviour.rp_id.as_deref().unwrap_or(rp_id);
        let mut auth_data = sha256(hashed_rp.as_bytes()).to_vec();
        auth_data.push(self.flags() | AT);
        auth_data.extend(credential.counter.to_be_bytes());
        auth_data.extend([0u8; 16]); // AAGUID: none
        auth_data.extend((credential.id.len() as u16).to_be_bytes());
        auth_data.extend(&credential.id);
        auth_data.extend(cose_key(credential.key.public_key().as_ref()));
        let mut attestation = Vec::new();
        cbor_head(&mut attestation, 5, 3);
        cbor_text(&mut attestation, "fmt");
        cbor_text(&mut attestation, "none");
        cbor_text(&mut attestation, "attStmt");
        cbor_head(&mut attestation, 5, 0);
        cbor_text(&mut attestation, "authData");
        cbor_bytes(&mut attestation, &auth_data);
        let client_data = self.client_data("webauthn.create", challenge);
        let extensions = match self.behaviour.says_resident {
            Some(rk) => json!({"credProps": {"rk": rk}}),
            None => json!({}),
        };
        json!({
            "id": b64(&credential.id),
            "rawId": b64(&credential.id),
            "type": "public-key",
            "response": {
                "attestationObject": b64(&attestation),
                "clientDataJSON": b64(&client_data),
                "transports": ["internal"],
            },
            "extensions": extensions,
        })
    }

    /// `navigator.credentials.get` with `options` (`{"publicKey": …}`), by
    /// the passkey at `index` (the person's choice in the browser's list):
    /// its assertion, as `PublicKeyCredential.toJSON()` encodes it.
    pub fn get(&mut self, options: &Value, index: usize) -> Value {
        let behaviour = self.behaviour.clone();
        let flags = self.flags();
        let public_key = &options["publicKey"];
        let challenge = public_key["challenge"]
            .as_str()
            .expect("challenge")
            .to_owned();
        let credential = &mut self.credentials[index];
        if behaviour.counts {
            credential.counter += 1;
        }
        let rp_id = public_key["rpId"]
            .as_str()
            .map(str::to_owned)
            .unwrap_or_else(|| credential.rp_id.clone());
        let hashed_rp = behaviour.rp_id.clone().unwrap_or(rp_id);
        let mut auth_data = sha256(hashed_rp.as_bytes()).to_vec();
        auth_data.push(flags);
        auth_data.extend(credential.counter.to_be_bytes());
        let client_data = json!({
            "type": "webauthn.get",
            "challenge": challenge,
            "origin": behaviour.origin,
            "crossOrigin": false,
        })
        .to_string()
        .into_bytes();
        let mut signed = auth_data.clone();
        signed.extend(sha256(&client_data));
        let signature = credential.key.sign(&SystemRandom::new(), &signed).unwrap();
        json!({
            "id": b64(&credential.id),
            "rawId": b64(&credential.id),
            "type": "public-key",
            "response": {
                "authenticatorData": b64(&auth_data),
                "clientDataJSON": b64(&client_data),
                "signature": b64(signature.as_ref()),
                "userHandle": b64(&credential.user_handle),
            },
            "extensions": {},
        })
    }
}
