//! The passkeys function's success path: `POST /login/passkey`, a sign-in
//! with a passkey and no username. Each invocation answers a ceremony of
//! its own (a challenge is answered once), so the bench begins one for each,
//! untimed, as `POST /login/passkey/options` begins it (the library's state
//! kept in the table under the hash of the id the client holds), and signs
//! its challenge with the software authenticator the tests use
//! (tools/authenticator). What the function does then is what is measured:
//! the ceremony taken, the passkey and its owner read, the assertion
//! checked, the session started (the passkey's counter moved in the same
//! transaction) and its tokens signed.

use std::sync::Mutex;

use auth::passkeys::{Ceremony, CeremonyKind, StoredPasskey};
use auth::relying_party::{PasskeyConfig, discoverable};
use auth_authenticator::{Authenticator, Behaviour};
use webauthn_rs::prelude::{RegisterPublicKeyCredential, Webauthn};

use super::*;

/// The bench's relying party (the functions', from the same issuer) and
/// the authenticator that holds the bench user's passkey.
pub(super) struct Passkeys {
    relying_party: Webauthn,
    authenticator: Mutex<Authenticator>,
}

impl Passkeys {
    /// A user with a passkey, registered as `POST /account/passkeys` does.
    pub(super) async fn new(store: &Store, password_hash: String) -> Passkeys {
        let issuer = token_config().issuer;
        let config =
            PasskeyConfig::from_source(&|var: &str| (var == "JWT_ISSUER").then(|| issuer.clone()))
                .expect("the bench's relying party");
        let relying_party = config.relying_party().expect("the bench's relying party");
        let user = User::new(
            Username::parse("bench-passkey").unwrap(),
            "Bench User".into(),
            password_hash,
        );
        store.create(&user).await.unwrap();
        let handle = uuid::Uuid::parse_str(&user.id.to_string()).unwrap();
        let (options, registration) = relying_party
            .start_passkey_registration(handle, "bench-passkey", "Bench User", None)
            .expect("a registration's options");
        let mut authenticator = Authenticator::new(Behaviour::at(&issuer));
        let made = authenticator.create(&discoverable(&options));
        let credential: RegisterPublicKeyCredential =
            serde_json::from_value(made).expect("the authenticator's answer");
        let passkey = relying_party
            .finish_passkey_registration(&credential, &registration)
            .expect("the bench's passkey");
        let now = auth::clock::system_now();
        let stored = StoredPasskey::registered(user.id, "Bench".into(), passkey, now);
        store
            .add_passkey(&user, "bench", &stored, now)
            .await
            .expect("the bench's passkey stored");
        Passkeys {
            relying_party,
            authenticator: Mutex::new(authenticator),
        }
    }

    /// The next sign-in: a ceremony begun and stored, and the event that
    /// sends the authenticator's answer to its challenge.
    pub(super) async fn sign_in_event(&self, store: &Store) -> Value {
        let (options, authentication) = self
            .relying_party
            .start_discoverable_authentication()
            .expect("a sign-in's options");
        let state = serde_json::to_string(&authentication).unwrap();
        let now = auth::clock::system_now();
        let (ceremony, id) = Ceremony::begin(CeremonyKind::SignIn, None, state, now);
        store.put_ceremony(&ceremony).await.unwrap();
        let options = serde_json::to_value(&options).unwrap();
        let credential = self.authenticator.lock().unwrap().get(&options, 0);
        with_body(
            event("login-passkey.json"),
            &json!({"ceremony": id.expose(), "credential": credential}),
        )
    }
}
