//! The second factor's success path: `POST /login/second-factor`, a login
//! that answered `mfa_required` completed with a code from the app. Each
//! invocation needs a ticket of its own (single use) and a time step its
//! user has not spent (each accepted step is never accepted again), so the
//! bench makes, untimed, for each one: a user with an active factor (its
//! secret sealed under the layer's data key, its last step the one before
//! now), a ticket as the password step makes it, and the code of the step
//! of now. What the function does then is what is measured: the ticket
//! read, the user and factor read, the code's try reserved, the secret
//! opened (in memory: the data key was unsealed at its init), the code
//! checked, the session started and its tokens signed.
//!
//! The data key, as deployed: on the plain and logs layers a local file
//! (`file:`, as `make dev` has it, as the PEM key is there); on the sealed,
//! production and KMS layers sealed under a symmetric KMS key of its own
//! (`kms:`, the template's `SecondFactorKey`), made and stored before the
//! first process, so that every init reads and unseals it (a `GetItem` and
//! a `Decrypt`, credited to its init as the keys' calls are).

use auth::mfa::{Factor, MfaTicket};
use auth::second_factor::{RecoveryCodes, SecretBox};
use auth::sessions::SignIn;
use auth::totp::{TotpSecret, step_of};

use super::*;

/// The data keys of the run, one per kind of `SECOND_FACTOR_KEY`.
pub(super) struct DataKeys {
    /// `file:` — the key's file, and the box it opens.
    file: PathBuf,
    file_box: SecretBox,
    /// `kms:` — the symmetric KMS key that seals the stored data key, and
    /// the box the stored key opens.
    sealing_key: String,
    kms_box: SecretBox,
    /// A password hash the pool's users share (bcrypt once, not per user:
    /// the ticket binds to its fingerprint, nothing checks it again).
    password_hash: String,
    /// Users made so far.
    made: AtomicUsize,
}

impl DataKeys {
    /// The file key in `dir`, and the KMS data key made under a new
    /// symmetric key and stored in `store`'s table as the first init would.
    pub(super) async fn new(
        dir: &std::path::Path,
        kms: &aws_sdk_kms::Client,
        store: &Store,
        password_hash: String,
    ) -> DataKeys {
        let hex: String = auth::second_factor::generate_data_key()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        let file = dir.join("second-factor-key");
        std::fs::write(&file, &hex).unwrap();
        let source = auth::second_factor_key::DataKeySource::File(file.display().to_string());
        let now = auth::clock::system_now();
        let file_box = auth::second_factor_key::secret_box_from(&source, store, kms, now)
            .await
            .expect("the bench's file data key");
        let sealing = kms
            .create_key()
            .key_spec(aws_sdk_kms::types::KeySpec::SymmetricDefault)
            .key_usage(aws_sdk_kms::types::KeyUsageType::EncryptDecrypt)
            .send()
            .await
            .expect("moto: CreateKey");
        let sealing_key = sealing.key_metadata().unwrap().key_id().to_owned();
        let (kms_box, origin) =
            auth::second_factor_key::ensure_secret_box(store, kms, &sealing_key, now)
                .await
                .expect("the bench's data key, made under KMS");
        assert_eq!(
            origin,
            auth::second_factor_key::DataKeyOrigin::Made,
            "the bench's table held a data key already"
        );
        DataKeys {
            file,
            file_box,
            sealing_key,
            kms_box,
            password_hash,
            made: AtomicUsize::new(0),
        }
    }

    /// Whether `layer`'s functions hold the data key sealed under KMS.
    pub(super) fn sealed(layer: Layer) -> bool {
        !matches!(layer, Layer::Plain | Layer::Logs)
    }

    /// `SECOND_FACTOR_KEY` on `layer`.
    pub(super) fn env(&self, layer: Layer) -> Vec<(String, String)> {
        let source = if Self::sealed(layer) {
            format!("kms:{}", self.sealing_key)
        } else {
            format!("file:{}", self.file.display())
        };
        vec![("SECOND_FACTOR_KEY".into(), source)]
    }

    /// The next sign-in's second step: a new user with an active factor
    /// (sealed under `layer`'s data key), a ticket for it, and the event
    /// that sends the ticket's token with the code of now.
    pub(super) async fn sign_in_event(&self, store: &Store, layer: Layer) -> Value {
        let secrets = if Self::sealed(layer) {
            &self.kms_box
        } else {
            &self.file_box
        };
        let n = self.made.fetch_add(1, Ordering::Relaxed);
        let username = Username::parse(&format!("bench-mfa-{n}")).unwrap();
        let user = User::new(
            username.clone(),
            "Bench User".into(),
            self.password_hash.clone(),
        );
        store.create(&user).await.unwrap();
        let now = auth::clock::system_now();
        let secret = TotpSecret::generate();
        let factor = Factor::pending(user.id, "bench", secrets.seal(&user.id, &secret), now);
        assert!(store.put_pending_factor(&factor).await.unwrap());
        // Confirmed by the step before now's, so that now's is unspent.
        let step = step_of(now);
        let codes = RecoveryCodes::generate();
        store
            .confirm_factor(&user, &factor, step - 1, &codes.hashes(&user.id))
            .await
            .unwrap();
        let user = store.get(&username).await.unwrap().unwrap();
        assert!(user.second_factor, "the bench's user has its factor");
        let (ticket, token) = MfaTicket::issue(&user, SignIn::Password, None, now);
        store.put_mfa_ticket(&ticket).await.unwrap();
        let code = secret.code_at(step).expect("a code for now's step");
        with_body(
            event("login-second-factor.json"),
            &json!({"mfa_token": token.expose(), "code": code.expose()}),
        )
    }
}

/// Whether a second step's 200 signed the user in at two factors: an
/// access token whose `acr` is `aal2`.
pub(super) fn signed_in(reply: &Value) -> bool {
    let body: Value = reply["body"]
        .as_str()
        .and_then(|b| serde_json::from_str(b).ok())
        .unwrap_or(Value::Null);
    body["access_token"]
        .as_str()
        .and_then(|token| token.split('.').nth(1))
        .and_then(|claims| {
            use base64::Engine as _;
            base64::engine::general_purpose::URL_SAFE_NO_PAD
                .decode(claims)
                .ok()
        })
        .and_then(|claims| serde_json::from_slice::<Value>(&claims).ok())
        .is_some_and(|claims| claims["acr"] == "aal2")
}
