//! The passkeys' relying party: its id and the origins a ceremony may come
//! from, from configuration (the page's origin, never a request's Host), as
//! `webauthn-rs` holds them; and what a registration asks of an
//! authenticator beyond the library's passkey defaults.

use webauthn_rs::prelude::{CreationChallengeResponse, Url, Webauthn, WebauthnBuilder};

use crate::config::{ConfigError, Source};
use crate::passkeys::CEREMONY_TTL;

/// The relying party: who the passkeys are for, and where a ceremony may
/// come from.
#[derive(Clone, Debug)]
pub struct PasskeyConfig {
    /// The relying party's id: the first origin's host, or a registrable
    /// suffix of every origin's host (`PASSKEY_RP_ID`). A passkey is bound
    /// to it for good.
    pub rp_id: String,
    /// The origins a ceremony's client data may name (the page's, or
    /// `PASSKEY_ORIGINS`), each once, in the order given.
    pub origins: Vec<String>,
}

impl PasskeyConfig {
    /// The origins ceremonies come from: `PASSKEY_ORIGINS` (a comma-separated
    /// list), else the page's (`PAGE_URL`, else `JWT_ISSUER`); and the
    /// relying party's id: `PASSKEY_RP_ID`, else the first origin's host.
    /// Every origin's host must be the id or end with it at a dot
    /// (WebAuthn's rule; the library checks it again for the first), and
    /// none may be an IP address (a page served on 127.0.0.1 gets
    /// `PASSKEY_ORIGINS=http://localhost:<port>`).
    pub fn from_source(env: &impl Source) -> Result<Self, ConfigError> {
        let (var, pages) = match env.get("PASSKEY_ORIGINS").filter(|v| !v.trim().is_empty()) {
            Some(list) => (
                "PASSKEY_ORIGINS",
                list.split(',')
                    .map(str::trim)
                    .filter(|o| !o.is_empty())
                    .map(str::to_owned)
                    .collect::<Vec<_>>(),
            ),
            None => ("PAGE_URL", vec![crate::browser::page_origin(env)?]),
        };
        // Each parsed as the browser and the library parse it (never
        // matched as text: `https://evil.com\.example.com` is evil.com's),
        // and kept as its origin.
        let mut origins: Vec<String> = Vec::new();
        let mut hosts: Vec<String> = Vec::new();
        for page in &pages {
            let refused = |reason: String| ConfigError::Invalid {
                var,
                reason: format!("{page}: {reason}"),
            };
            let url = Url::parse(page).map_err(|e| refused(e.to_string()))?;
            let local = url.scheme() == "http" && url.host_str() == Some("localhost");
            if !(url.scheme() == "https" || local) || url.host_str().is_none_or(str::is_empty) {
                return Err(refused(
                    "passkeys need an https:// origin, or http://localhost (PASSKEY_ORIGINS sets them apart from the page's)".into(),
                ));
            }
            if !url.username().is_empty() || url.password().is_some() {
                return Err(refused("an origin has no user part".into()));
            }
            let Some(host) = url.domain() else {
                return Err(ConfigError::Invalid {
                    var: "PASSKEY_RP_ID",
                    reason: format!(
                        "a passkey's relying party is a domain name, not an address ({page}): serve the page on a name (localhost locally)"
                    ),
                });
            };
            let origin = url.origin().ascii_serialization();
            if !origins.contains(&origin) {
                origins.push(origin);
                hosts.push(host.to_owned());
            }
        }
        let Some(first) = hosts.first() else {
            return Err(ConfigError::Invalid {
                var,
                reason: "no origin given".into(),
            });
        };
        let rp_id = match env.get("PASSKEY_RP_ID").filter(|v| !v.trim().is_empty()) {
            Some(id) => id.trim().to_ascii_lowercase(),
            None => first.clone(),
        };
        let invalid = |reason: String| ConfigError::Invalid {
            var: "PASSKEY_RP_ID",
            reason,
        };
        if rp_id.parse::<std::net::IpAddr>().is_ok() {
            return Err(invalid(format!(
                "a passkey's relying party is a domain name, not an address ({rp_id})"
            )));
        }
        for host in &hosts {
            if !(*host == rp_id || host.ends_with(&format!(".{rp_id}"))) {
                return Err(invalid(format!(
                    "{rp_id} is neither the origin's host ({host}) nor a suffix of it"
                )));
            }
        }
        let config = PasskeyConfig { rp_id, origins };
        config.relying_party()?;
        Ok(config)
    }

    /// The library's relying party, as configured.
    pub fn relying_party(&self) -> Result<Webauthn, ConfigError> {
        let invalid = |e: webauthn_rs::prelude::WebauthnError| ConfigError::Invalid {
            var: "PASSKEY_RP_ID",
            reason: format!(
                "the relying party ({} at {}): {e}",
                self.rp_id,
                self.origins.join(", ")
            ),
        };
        let urls = self
            .origins
            .iter()
            .map(|o| Url::parse(o))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| ConfigError::Invalid {
                var: "PASSKEY_ORIGINS",
                reason: e.to_string(),
            })?;
        let (first, others) = urls.split_first().ok_or(ConfigError::Invalid {
            var: "PASSKEY_ORIGINS",
            reason: "no origin given".into(),
        })?;
        let builder = WebauthnBuilder::new(&self.rp_id, first).map_err(invalid)?;
        others
            .iter()
            .fold(builder, |builder, origin| {
                builder.append_allowed_origin(origin)
            })
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
        assert_eq!(local.origins, ["http://localhost:9000"]);
        let page = config(&[
            ("JWT_ISSUER", "https://api.example.com"),
            ("PAGE_URL", "https://login.example.com/"),
        ])
        .unwrap();
        assert_eq!(page.rp_id, "login.example.com");
        assert_eq!(page.origins, ["https://login.example.com"]);
        let own = config(&[
            ("JWT_ISSUER", "http://127.0.0.1:9000"),
            ("PASSKEY_ORIGINS", "http://localhost:9000/"),
        ])
        .unwrap();
        assert_eq!(own.rp_id, "localhost");
        assert_eq!(own.origins, ["http://localhost:9000"]);
        for bad in [
            "http://example.com",
            "ftp://localhost",
            "https://",
            "http://localhost.evil.example",
            "http://localhostx:9000",
        ] {
            let err = config(&[
                ("JWT_ISSUER", "https://a.example"),
                ("PASSKEY_ORIGINS", bad),
            ])
            .unwrap_err();
            assert!(
                matches!(
                    err,
                    ConfigError::Invalid {
                        var: "PASSKEY_ORIGINS",
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
    fn several_origins_share_one_relying_party_each_within_it() {
        let both = config(&[
            ("JWT_ISSUER", "https://api.example.com"),
            (
                "PASSKEY_ORIGINS",
                " https://login.example.com , https://app.example.com,https://login.example.com/",
            ),
            ("PASSKEY_RP_ID", "example.com"),
        ])
        .unwrap();
        assert_eq!(both.rp_id, "example.com");
        assert_eq!(
            both.origins,
            ["https://login.example.com", "https://app.example.com"]
        );
        // Without an id, the first origin's host: the second is not within it.
        let err = config(&[(
            "PASSKEY_ORIGINS",
            "https://login.example.com,https://app.example.com",
        )])
        .unwrap_err();
        assert!(
            matches!(
                err,
                ConfigError::Invalid {
                    var: "PASSKEY_RP_ID",
                    ..
                }
            ),
            "{err}"
        );
        for list in [
            "https://login.example.com,https://example.org",
            "https://login.example.com,https://127.0.0.1",
            "https://login.example.com,http://app.example.com",
            " , ",
            // Read as text these would pass; parsed, they are other hosts.
            "https://login.example.com,https://evil.com\\.example.com",
            "https://login.example.com,https://[::1]",
            "https://login.example.com,https://0x7f000001",
            "https://login.example.com,https://me@app.example.com",
        ] {
            let refused = config(&[
                ("JWT_ISSUER", "https://login.example.com"),
                ("PASSKEY_ORIGINS", list),
                ("PASSKEY_RP_ID", "example.com"),
            ]);
            assert!(refused.is_err(), "{list}: {refused:?}");
        }
    }

    #[test]
    fn a_ceremony_from_any_configured_origin_is_accepted_and_from_no_other() {
        use auth_authenticator::{Authenticator, Behaviour};
        let rp = config(&[
            (
                "PASSKEY_ORIGINS",
                "https://login.example.com,https://app.example.com",
            ),
            ("PASSKEY_RP_ID", "example.com"),
        ])
        .unwrap()
        .relying_party()
        .unwrap();
        for (origin, accepted) in [
            ("https://login.example.com", true),
            ("https://app.example.com", true),
            ("https://other.example.com", false),
        ] {
            let (options, registration) = rp
                .start_passkey_registration(uuid::Uuid::new_v4(), "alice", "Alice", None)
                .unwrap();
            let mut authenticator = Authenticator::new(Behaviour::at(origin));
            let answer = authenticator.create(&discoverable(&options));
            let credential = serde_json::from_value(answer).unwrap();
            let outcome = rp.finish_passkey_registration(&credential, &registration);
            assert_eq!(outcome.is_ok(), accepted, "{origin}: {outcome:?}");
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
