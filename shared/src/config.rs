//! Typed configuration, read from the environment once at init. A missing or bad
//! value stops the function at init with a message naming the variable. The
//! `Source` of settings lives here, below every module: each module reads its
//! own settings through it (`BcryptCost::from_source` in `passwords`, and so
//! on), and this one depends on none of them.

use std::time::Duration;

/// Access token lifetime when `ACCESS_TOKEN_TTL_SECONDS` is unset.
pub const DEFAULT_ACCESS_TOKEN_TTL: Duration = Duration::from_secs(15 * 60);

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ConfigError {
    #[error("{0} is not set")]
    Missing(&'static str),
    #[error("{var} is invalid: {reason}")]
    Invalid { var: &'static str, reason: String },
}

/// Which table holds users, sessions and refresh tokens.
#[derive(Clone, Debug)]
pub struct StoreConfig {
    pub table_name: String,
}

/// The claims every access token carries and checks: issuer, audience, lifetime.
/// (Which keys sign and verify is `keys::KeyConfig`.)
#[derive(Clone, Debug)]
pub struct TokenConfig {
    pub issuer: String,
    pub audience: String,
    pub access_token_ttl: Duration,
}

/// A source of configuration values: the process environment, or a map in tests.
pub trait Source {
    fn get(&self, var: &str) -> Option<String>;
}

/// The process environment.
pub struct Environment;

impl Source for Environment {
    fn get(&self, var: &str) -> Option<String> {
        std::env::var(var).ok()
    }
}

impl<F: Fn(&str) -> Option<String>> Source for F {
    fn get(&self, var: &str) -> Option<String> {
        self(var)
    }
}

impl StoreConfig {
    pub fn from_source(env: &impl Source) -> Result<Self, ConfigError> {
        Ok(StoreConfig {
            table_name: required(env, "TABLE_NAME")?,
        })
    }
}

impl TokenConfig {
    pub fn from_source(env: &impl Source) -> Result<Self, ConfigError> {
        let ttl = number(
            env,
            "ACCESS_TOKEN_TTL_SECONDS",
            DEFAULT_ACCESS_TOKEN_TTL.as_secs(),
            60..=24 * 3600,
        )?;
        Ok(TokenConfig {
            issuer: required(env, "JWT_ISSUER")?,
            audience: required(env, "JWT_AUDIENCE")?,
            access_token_ttl: Duration::from_secs(ttl),
        })
    }
}

pub(crate) fn required(env: &impl Source, var: &'static str) -> Result<String, ConfigError> {
    match env.get(var) {
        Some(value) if !value.trim().is_empty() => Ok(value),
        _ => Err(ConfigError::Missing(var)),
    }
}

pub(crate) fn number<T>(
    env: &impl Source,
    var: &'static str,
    default: T,
    range: std::ops::RangeInclusive<T>,
) -> Result<T, ConfigError>
where
    T: std::str::FromStr + PartialOrd + std::fmt::Display + Copy,
{
    let Some(raw) = env.get(var) else {
        return Ok(default);
    };
    let value: T = raw.trim().parse().map_err(|_| ConfigError::Invalid {
        var,
        reason: format!("{raw:?} is not a whole number"),
    })?;
    if !range.contains(&value) {
        return Err(ConfigError::Invalid {
            var,
            reason: format!("{value} is outside {}..={}", range.start(), range.end()),
        });
    }
    Ok(value)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    use crate::passwords::BcryptCost;

    fn source(pairs: &[(&str, &str)]) -> impl Source {
        let map: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        move |var: &str| map.get(var).cloned()
    }

    #[test]
    fn token_config_defaults_to_a_15_minute_lifetime() {
        let config = TokenConfig::from_source(&source(&[
            ("JWT_ISSUER", "https://auth.example"),
            ("JWT_AUDIENCE", "api"),
        ]))
        .unwrap();
        assert_eq!(config.access_token_ttl, Duration::from_secs(900));
        let err = TokenConfig::from_source(&source(&[
            ("JWT_ISSUER", "i"),
            ("JWT_AUDIENCE", "a"),
            ("ACCESS_TOKEN_TTL_SECONDS", "10"),
        ]))
        .unwrap_err();
        assert!(matches!(
            err,
            ConfigError::Invalid {
                var: "ACCESS_TOKEN_TTL_SECONDS",
                ..
            }
        ));
    }

    #[test]
    fn token_config_names_the_missing_issuer_and_audience() {
        let err = TokenConfig::from_source(&source(&[("JWT_AUDIENCE", "a")]));
        assert_eq!(err.unwrap_err(), ConfigError::Missing("JWT_ISSUER"));
        let err = TokenConfig::from_source(&source(&[("JWT_ISSUER", "i")]));
        assert_eq!(err.unwrap_err(), ConfigError::Missing("JWT_AUDIENCE"));
    }

    #[test]
    fn bcrypt_cost_defaults_to_12_and_refuses_below_10() {
        assert_eq!(BcryptCost::from_source(&source(&[])).unwrap().get(), 12);
        assert_eq!(
            BcryptCost::from_source(&source(&[("BCRYPT_COST", "10")]))
                .unwrap()
                .get(),
            10
        );
        let err = BcryptCost::from_source(&source(&[("BCRYPT_COST", "9")])).unwrap_err();
        assert!(
            matches!(
                err,
                ConfigError::Invalid {
                    var: "BCRYPT_COST",
                    ..
                }
            ),
            "{err}"
        );
        let err = BcryptCost::from_source(&source(&[("BCRYPT_COST", "twelve")])).unwrap_err();
        assert!(
            matches!(
                err,
                ConfigError::Invalid {
                    var: "BCRYPT_COST",
                    ..
                }
            ),
            "{err}"
        );
    }

    #[test]
    fn store_config_needs_a_table() {
        assert_eq!(
            StoreConfig::from_source(&source(&[])).unwrap_err(),
            ConfigError::Missing("TABLE_NAME")
        );
    }
}
