//! Permissions: the roles a user holds, the `scope` claim that carries them in
//! access tokens (one scope per role, of the same name, so API Gateway's JWT
//! authorizer can check a route's `AuthorizationScopes`), and how recent a
//! proof of the password must be for sensitive acts (`auth_time`, RFC 9470).

use std::collections::BTreeSet;
use std::fmt;
use std::time::Duration;

use crate::config::{ConfigError, Source};

/// The role of the admin API.
pub const ADMIN: &str = "admin";
/// Roles one user may hold: each costs at most 33 bytes of every token.
pub const MAX_ROLES: usize = 10;
pub const ROLE_MAX_CHARS: usize = 32;
/// How old a password proof may be for an admin act when
/// `FRESH_AUTH_MAX_AGE_SECONDS` is unset.
pub const DEFAULT_FRESH_AUTH_MAX_AGE: Duration = Duration::from_secs(600);

/// A role name: 1 to 32 characters of lower-case ASCII letters, digits, `_`,
/// `-` and `.`, starting with a letter. Valid as an OAuth scope token as it is
/// (RFC 6749 §3.3), so a role is its own scope.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Role(String);

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error(
    "a role is 1 to {ROLE_MAX_CHARS} characters of lower-case ASCII letters, digits, '_', '-' or '.', starting with a letter"
)]
pub struct InvalidRole;

impl Role {
    pub fn parse(raw: &str) -> Result<Self, InvalidRole> {
        let allowed =
            |c: char| c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '_' | '-' | '.');
        if raw.is_empty()
            || raw.len() > ROLE_MAX_CHARS
            || !raw.starts_with(|c: char| c.is_ascii_lowercase())
            || !raw.chars().all(allowed)
        {
            return Err(InvalidRole);
        }
        Ok(Role(raw.to_owned()))
    }

    pub fn admin() -> Self {
        Role(ADMIN.to_owned())
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// The `scope` claim for `roles`: their names, space-separated (RFC 8693
/// §4.2), or `None` for a user without roles.
pub fn scope_of(roles: &BTreeSet<Role>) -> Option<String> {
    (!roles.is_empty()).then(|| roles.iter().map(Role::as_str).collect::<Vec<_>>().join(" "))
}

/// Whether a `scope` claim grants `role`.
pub fn scope_grants(scope: Option<&str>, role: &Role) -> bool {
    scope.is_some_and(|s| s.split(' ').any(|granted| granted == role.as_str()))
}

/// How recent a proof of the password sensitive acts require
/// (`FRESH_AUTH_MAX_AGE_SECONDS`): admin acts, and a change of address.
pub fn fresh_auth_max_age(env: &impl Source) -> Result<Duration, ConfigError> {
    let max_age = crate::config::number(
        env,
        "FRESH_AUTH_MAX_AGE_SECONDS",
        DEFAULT_FRESH_AUTH_MAX_AGE.as_secs(),
        30..=24 * 3600,
    )?;
    Ok(Duration::from_secs(max_age))
}

/// The roles that need a second factor (`SECOND_FACTOR_ROLES`, space- or
/// comma-separated; `admin` when unset; `none` for none; blank refused). A token
/// carries such a role in its `scope` only when its session proved a second
/// factor (`acr` `aal2`), so a resource that checks the scope (API Gateway's
/// JWT authorizer too) requires the factor with it; the admin API answers an
/// admin without it with RFC 9470's challenge.
pub fn second_factor_roles(env: &impl Source) -> Result<BTreeSet<Role>, ConfigError> {
    let Some(raw) = env.get("SECOND_FACTOR_ROLES") else {
        return Ok(BTreeSet::from([Role::admin()]));
    };
    // Only the word unguards: a blank value is a mistake, not a choice.
    if raw.trim() == "none" {
        return Ok(BTreeSet::new());
    }
    if raw.trim().is_empty() {
        return Err(ConfigError::Invalid {
            var: "SECOND_FACTOR_ROLES",
            reason: "empty: name the roles, or none".into(),
        });
    }
    raw.split([' ', ','])
        .filter(|r| !r.is_empty())
        .map(|r| {
            Role::parse(r).map_err(|e| ConfigError::Invalid {
                var: "SECOND_FACTOR_ROLES",
                reason: format!("{r:?}: {e} (or none)"),
            })
        })
        .collect()
}

/// The `scope` claim of a token for a holder of `roles`: every role, but
/// one of `second_factor_roles` only when the session proved a second
/// factor the account still has (`second`).
pub fn scope_at(
    roles: &BTreeSet<Role>,
    second_factor_roles: &BTreeSet<Role>,
    second: bool,
) -> Option<String> {
    if second {
        return scope_of(roles);
    }
    scope_of(&roles.difference(second_factor_roles).cloned().collect())
}

/// What a deployment knows of permissions: the roles that may be granted
/// (`ROLES`, space- or comma-separated, `admin` always among them; published
/// as `scopes_supported`), the freshness admin acts require, and the roles
/// that need a second factor.
#[derive(Clone, Debug)]
pub struct PermissionConfig {
    pub roles: BTreeSet<Role>,
    pub fresh_auth_max_age: Duration,
    pub second_factor_roles: BTreeSet<Role>,
}

impl PermissionConfig {
    pub fn from_source(env: &impl Source) -> Result<Self, ConfigError> {
        let mut roles = BTreeSet::from([Role::admin()]);
        for raw in env
            .get("ROLES")
            .unwrap_or_default()
            .split([' ', ','])
            .filter(|r| !r.is_empty())
        {
            roles.insert(Role::parse(raw).map_err(|e| ConfigError::Invalid {
                var: "ROLES",
                reason: format!("{raw:?}: {e}"),
            })?);
        }
        if roles.len() > 50 {
            return Err(ConfigError::Invalid {
                var: "ROLES",
                reason: "at most 50 roles".into(),
            });
        }
        Ok(PermissionConfig {
            roles,
            fresh_auth_max_age: fresh_auth_max_age(env)?,
            second_factor_roles: second_factor_roles(env)?,
        })
    }

    /// `raw` as a role this deployment knows.
    pub fn known_role(&self, raw: &str) -> Result<Role, String> {
        let role = Role::parse(raw).map_err(|e| e.to_string())?;
        if !self.roles.contains(&role) {
            let known: Vec<&str> = self.roles.iter().map(Role::as_str).collect();
            return Err(format!(
                "unknown role {role}; this deployment knows: {} (ROLES)",
                known.join(", ")
            ));
        }
        Ok(role)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn role_names_follow_the_rule() {
        for good in [
            "admin",
            "a",
            "billing-ops",
            "team.lead",
            "r2_d2",
            &"a".repeat(32),
        ] {
            assert_eq!(Role::parse(good).unwrap().as_str(), good);
        }
        for bad in [
            "",
            "Admin",
            "1st",
            "-x",
            "with space",
            "a:b",
            "é",
            "\"",
            &"a".repeat(33),
        ] {
            assert_eq!(Role::parse(bad), Err(InvalidRole), "{bad:?}");
        }
    }

    #[test]
    fn the_scope_claim_lists_each_role_once_and_grants_exactly_them() {
        let roles: BTreeSet<Role> = ["support", "admin"]
            .iter()
            .map(|r| Role::parse(r).unwrap())
            .collect();
        let scope = scope_of(&roles).unwrap();
        assert_eq!(scope, "admin support");
        assert!(scope_grants(Some(&scope), &Role::admin()));
        assert!(!scope_grants(Some(&scope), &Role::parse("adm").unwrap()));
        assert!(!scope_grants(None, &Role::admin()));
        assert_eq!(scope_of(&BTreeSet::new()), None);
    }

    #[test]
    fn a_role_that_needs_a_second_factor_is_in_the_scope_only_at_aal2() {
        let roles: BTreeSet<Role> = ["support", "admin"]
            .iter()
            .map(|r| Role::parse(r).unwrap())
            .collect();
        let guarded = BTreeSet::from([Role::admin()]);
        assert_eq!(scope_at(&roles, &guarded, true).unwrap(), "admin support");
        assert_eq!(scope_at(&roles, &guarded, false).unwrap(), "support");
        let admin_only = BTreeSet::from([Role::admin()]);
        assert_eq!(scope_at(&admin_only, &guarded, false), None);
        assert_eq!(
            scope_at(&roles, &BTreeSet::new(), false).unwrap(),
            "admin support"
        );
    }

    #[test]
    fn second_factor_roles_default_to_admin_and_can_be_none() {
        let of = |value: Option<&str>| {
            second_factor_roles(&|v: &str| {
                (v == "SECOND_FACTOR_ROLES")
                    .then(|| value.map(str::to_owned))
                    .flatten()
            })
        };
        assert_eq!(of(None).unwrap(), BTreeSet::from([Role::admin()]));
        assert_eq!(of(Some("none")).unwrap(), BTreeSet::new());
        assert!(of(Some("")).is_err());
        assert!(of(Some(" ")).is_err());
        assert_eq!(of(Some("admin, billing")).unwrap().len(), 2);
        assert!(of(Some("Admin")).is_err());
    }

    #[test]
    fn the_config_always_knows_admin_and_bounds_freshness() {
        let config = PermissionConfig::from_source(&|_: &str| None).unwrap();
        assert_eq!(config.roles, BTreeSet::from([Role::admin()]));
        assert_eq!(config.fresh_auth_max_age, Duration::from_secs(600));
        let config = PermissionConfig::from_source(&|v: &str| match v {
            "ROLES" => Some("support, billing".into()),
            "FRESH_AUTH_MAX_AGE_SECONDS" => Some("120".into()),
            _ => None,
        })
        .unwrap();
        assert_eq!(config.roles.len(), 3);
        assert!(config.known_role("billing").is_ok());
        assert!(
            config
                .known_role("auditor")
                .unwrap_err()
                .contains("admin, billing, support")
        );
        assert!(config.known_role("Billing").is_err());
        assert_eq!(config.fresh_auth_max_age, Duration::from_secs(120));
        for (var, value) in [("ROLES", "Admin"), ("FRESH_AUTH_MAX_AGE_SECONDS", "5")] {
            let err = PermissionConfig::from_source(&|v: &str| (v == var).then(|| value.into()))
                .unwrap_err();
            assert!(
                matches!(err, ConfigError::Invalid { var: v, .. } if v == var),
                "{err}"
            );
        }
    }
}
