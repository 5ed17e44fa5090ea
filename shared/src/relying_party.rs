//! The passkeys' relying party: its id and the one origin a ceremony may
//! come from, from configuration (the page's origin, never a request's
//! Host), as `webauthn-rs` holds them; and what a registration asks of an
//! authenticator beyond the library's passkey defaults.

use webauthn_rs::prelude::{CreationChallengeResponse, Url, Webauthn, WebauthnBuilder};

use crate::config::{ConfigError, Source};
use crate::passkeys::CEREMONY_TTL;

/// The relying party: who the passkeys are for, and where a ceremony may
/// come from.
#[derive(Clone, Debug)]
pub struct PasskeyConfig {
    /// The relying party's id: the page's host, or a registrable suffix of
    /// it (`PASSKEY_RP_ID`). A passkey is bound to it for good.
    pub rp_id: String,
    /// The page's origin: the only one a ceremony's client data may name.
    pub origin: String,
}

impl PasskeyConfig {
    /// The origin ceremonies come from: `PASSKEY_ORIGIN`, else the page's
    /// (`PAGE_URL`, else `JWT_ISSUER`); and the relying party's id:
    /// `PASSKEY_RP_ID`, else the origin's host. The id must be the host or
    /// a suffix of it at a dot (WebAuthn's rule; the library checks it
    /// again), and never an IP address (a page served on 127.0.0.1 gets
    /// `PASSKEY_ORIGIN=http://localhost:<port>`).
    pub fn from_source(env: &impl Source) -> Result<Self, ConfigError> {
        let (var, page) = match env.get("PASSKEY_ORIGIN").filter(|v| !v.trim().is_empty()) {
            Some(origin) => ("PASSKEY_ORIGIN", origin.trim().to_owned()),
            None => ("PAGE_URL", crate::browser::page_origin(env)?),
        };
        // http:// only for the host localhost itself (with any port), never
        // a name that merely begins with it.
        let local = |o: &str| {
            o.strip_prefix("http://localhost")
                .is_some_and(|rest| rest.is_empty() || rest.starts_with(':'))
        };
        let origin = crate::browser::origin_of(&page)
            .filter(|o| o.starts_with("https://") || local(o))
            .ok_or_else(|| ConfigError::Invalid {
                var,
                reason: "passkeys need an https:// origin, or http://localhost (PASSKEY_ORIGIN sets it apart from the page's)".into(),
            })?;
        let host = origin
            .split_once("://")
            .map(|(_, authority)| authority)
            .and_then(|authority| {
                authority
                    .rsplit_once(':')
                    .map_or(Some(authority), |(h, port)| {
                        port.bytes().all(|b| b.is_ascii_digit()).then_some(h)
                    })
            })
            .unwrap_or_default()
            .to_owned();
        let rp_id = match env.get("PASSKEY_RP_ID").filter(|v| !v.trim().is_empty()) {
            Some(id) => id.trim().to_ascii_lowercase(),
            None => host.clone(),
        };
        let invalid = |reason: String| ConfigError::Invalid {
            var: "PASSKEY_RP_ID",
            reason,
        };
        if rp_id.parse::<std::net::IpAddr>().is_ok() || host.parse::<std::net::IpAddr>().is_ok() {
            return Err(invalid(format!(
                "a passkey's relying party is a domain name, not an address ({host}): serve the page on a name (localhost locally)"
            )));
        }
        if !(host == rp_id || host.ends_with(&format!(".{rp_id}"))) || rp_id.is_empty() {
            return Err(invalid(format!(
                "{rp_id} is neither the page's host ({host}) nor a suffix of it"
            )));
        }
        let config = PasskeyConfig { rp_id, origin };
        config.relying_party()?;
        Ok(config)
    }

    /// The library's relying party, as configured.
    pub fn relying_party(&self) -> Result<Webauthn, ConfigError> {
        let invalid = |e: webauthn_rs::prelude::WebauthnError| ConfigError::Invalid {
            var: "PASSKEY_RP_ID",
            reason: format!("the relying party ({} at {}): {e}", self.rp_id, self.origin),
        };
        let origin = Url::parse(&self.origin).map_err(|e| ConfigError::Invalid {
            var: "PASSKEY_ORIGIN",
            reason: e.to_string(),
        })?;
        WebauthnBuilder::new(&self.rp_id, &origin)
            .map_err(invalid)?
            .rp_name(&self.rp_id)
            .timeout(CEREMONY_TTL)
            .build()
            .map_err(invalid)
    }
}

/// What a registration asks of the authenticator beyond the library's
/// passkey defaults (user verification required, no attestation): a
/// discoverable credential, the kind that signs in with no username: the
/// options as WebAuthn's JSON encodes them.
pub fn discoverable(options: &CreationChallengeResponse) -> serde_json::Value {
    let mut options = serde_json::to_value(options).unwrap_or_default();
    let selection = &mut options["publicKey"]["authenticatorSelection"];
    if !selection.is_object() {
        *selection = serde_json::json!({"userVerification": "required"});
    }
    selection["residentKey"] = "required".into();
    selection["requireResidentKey"] = true.into();
    options
}

#[cfg(test)]
mod tests {
    use super::*;
    use base64::Engine as _;
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;

    fn config(vars: &[(&str, &str)]) -> Result<PasskeyConfig, ConfigError> {
        let vars: Vec<(String, String)> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        PasskeyConfig::from_source(&move |var: &str| {
            vars.iter().find(|(k, _)| k == var).map(|(_, v)| v.clone())
        })
    }

    #[test]
    fn the_relying_party_is_the_pages_host_or_a_suffix_of_it() {
        let local = config(&[("JWT_ISSUER", "http://localhost:9000")]).unwrap();
        assert_eq!(local.rp_id, "localhost");
        assert_eq!(local.origin, "http://localhost:9000");
        let page = config(&[
            ("JWT_ISSUER", "https://api.example.com"),
            ("PAGE_URL", "https://login.example.com/"),
        ])
        .unwrap();
        assert_eq!(page.rp_id, "login.example.com");
        assert_eq!(page.origin, "https://login.example.com");
        let own = config(&[
            ("JWT_ISSUER", "http://127.0.0.1:9000"),
            ("PASSKEY_ORIGIN", "http://localhost:9000/"),
        ])
        .unwrap();
        assert_eq!(
            (&*own.rp_id, &*own.origin),
            ("localhost", "http://localhost:9000")
        );
        for bad in [
            "http://example.com",
            "ftp://localhost",
            "https://",
            "http://localhost.evil.example",
            "http://localhostx:9000",
        ] {
            let err = config(&[("JWT_ISSUER", "https://a.example"), ("PASSKEY_ORIGIN", bad)])
                .unwrap_err();
            assert!(
                matches!(
                    err,
                    ConfigError::Invalid {
                        var: "PASSKEY_ORIGIN",
                        ..
                    }
                ),
                "{bad}: {err}"
            );
        }
        let address = config(&[("JWT_ISSUER", "http://127.0.0.1:9000")]).unwrap_err();
        assert!(
            matches!(
                address,
                ConfigError::Invalid {
                    var: "PAGE_URL",
                    ..
                }
            ),
            "{address}"
        );
        let suffix = config(&[
            ("JWT_ISSUER", "https://login.example.com"),
            ("PASSKEY_RP_ID", "Example.com"),
        ])
        .unwrap();
        assert_eq!(suffix.rp_id, "example.com");
        for (page, rp) in [
            ("https://login.example.com", "other.com"),
            ("https://login.example.com", "ample.com"),
            ("https://example.com", "login.example.com"),
            ("https://127.0.0.1:9000", ""),
        ] {
            let err = config(&[("JWT_ISSUER", page), ("PASSKEY_RP_ID", rp)]).unwrap_err();
            assert!(
                matches!(
                    err,
                    ConfigError::Invalid {
                        var: "PASSKEY_RP_ID",
                        ..
                    }
                ),
                "{page} {rp}: {err}"
            );
        }
    }

    #[test]
    fn a_registration_asks_for_a_discoverable_credential_and_user_verification() {
        let rp = config(&[("JWT_ISSUER", "http://localhost:9000")])
            .unwrap()
            .relying_party()
            .unwrap();
        let (options, _) = rp
            .start_passkey_registration(uuid::Uuid::new_v4(), "alice", "Alice", None)
            .unwrap();
        let options = discoverable(&options);
        let selection = &options["publicKey"]["authenticatorSelection"];
        assert_eq!(selection["residentKey"], "required", "{options}");
        assert_eq!(selection["requireResidentKey"], true);
        assert_eq!(selection["userVerification"], "required");
        assert_eq!(options["publicKey"]["rp"]["id"], "localhost");
        // At least 64 random bits (ASVS 6.7.2): the library draws 32 bytes.
        let challenge = options["publicKey"]["challenge"].as_str().unwrap();
        assert!(URL_SAFE_NO_PAD.decode(challenge).unwrap().len() >= 16);
    }
}
