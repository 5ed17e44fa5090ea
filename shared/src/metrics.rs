//! Operations metrics in CloudWatch's Embedded Metric Format (EMF): one JSON
//! line on stdout per event, which CloudWatch Logs turns into metrics. No API
//! call and no latency: the line goes out with the function's logs. The line
//! carries `_aws` and its values at the top level (not under tracing's
//! `fields`) and a `level` that passes the function's `ApplicationLogLevel`
//! (Lambda drops JSON lines below it), so no setting can silence the metrics.
//!
//! Every name here is one the template's alarms and dashboard may use; the
//! template test compares them with `EVENTS` and the other names below.

use std::cell::RefCell;
use std::sync::OnceLock;
use std::time::{SystemTime, UNIX_EPOCH};

use serde_json::{Map, Value, json};

/// The environment variable naming the namespace (a template parameter).
pub const NAMESPACE_VAR: &str = "METRICS_NAMESPACE";
/// The namespace when none is set (the template's default too).
pub const DEFAULT_NAMESPACE: &str = "AuthService";
/// Dependency errors, by `Service` and `Kind`.
pub const DEPENDENCY_ERRORS: &str = "DependencyErrors";
/// Every response, and those of 5xx: both in total and by `StatusClass`.
pub const RESPONSES: &str = "Responses";
pub const SERVER_ERRORS: &str = "ServerErrors";
/// Acts on the admin API, done or refused: in total and by `Action` and `Outcome`.
pub const ADMIN_ACTIONS: &str = "AdminActions";

/// What happened, one count each.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Event {
    LoginSucceeded,
    LoginFailed,
    /// A password proof refused because the username is locked (login or password change).
    Lockout,
    /// A request refused by a per-IP window (login, password change, registration).
    IpRateLimited,
    Registration,
    Refresh,
    /// A refresh token used again after the grace period: its session revoked.
    RefreshReuseDetected,
    /// A refresh token presented again within the grace period: refused, nothing revoked.
    RefreshSuperseded,
    Logout,
    PasswordChanged,
    /// A password proved again within a session (`/reauthenticate`).
    Reauthenticated,
    /// An account deleted by its owner, an admin or `auth-admin`.
    AccountDeleted,
    /// A reset asked for (whether or not an account matches: the requester
    /// cannot tell, and neither can this count).
    ResetRequested,
    /// A password reset with a mailed link or code.
    PasswordReset,
    /// A link or code refused (wrong, expired, used, replaced).
    TicketRefused,
    EmailVerified,
    /// A message handed to SES.
    MailSent,
    /// A message SES refused, or a damaged job: nothing was sent (alarmed).
    MailFailed,
}

/// Every event, for the template test (`metric-names`) and for docs.
pub const EVENTS: [Event; 18] = [
    Event::LoginSucceeded,
    Event::LoginFailed,
    Event::Lockout,
    Event::IpRateLimited,
    Event::Registration,
    Event::Refresh,
    Event::RefreshReuseDetected,
    Event::RefreshSuperseded,
    Event::Logout,
    Event::PasswordChanged,
    Event::Reauthenticated,
    Event::AccountDeleted,
    Event::ResetRequested,
    Event::PasswordReset,
    Event::TicketRefused,
    Event::EmailVerified,
    Event::MailSent,
    Event::MailFailed,
];

impl Event {
    pub fn name(self) -> &'static str {
        match self {
            Event::LoginSucceeded => "LoginSucceeded",
            Event::LoginFailed => "LoginFailed",
            Event::Lockout => "Lockouts",
            Event::IpRateLimited => "IpRateLimited",
            Event::Registration => "Registrations",
            Event::Refresh => "Refreshes",
            Event::RefreshReuseDetected => "RefreshReuseDetected",
            Event::RefreshSuperseded => "RefreshSuperseded",
            Event::Logout => "Logouts",
            Event::PasswordChanged => "PasswordChanges",
            Event::Reauthenticated => "Reauthentications",
            Event::AccountDeleted => "AccountsDeleted",
            Event::ResetRequested => "ResetsRequested",
            Event::PasswordReset => "PasswordResets",
            Event::TicketRefused => "TicketsRefused",
            Event::EmailVerified => "EmailsVerified",
            Event::MailSent => "MailSent",
            Event::MailFailed => "MailFailed",
        }
    }
}

/// Every metric name the code can emit.
pub fn metric_names() -> Vec<&'static str> {
    let mut names: Vec<_> = EVENTS.iter().map(|e| e.name()).collect();
    names.extend([DEPENDENCY_ERRORS, RESPONSES, SERVER_ERRORS, ADMIN_ACTIONS]);
    names
}

/// Counts one event.
pub fn count(event: Event) {
    emit(&[(event.name(), 1)], &[], &[]);
}

/// Counts a failed call to a dependency that was the dependency's fault:
/// `kind` is `throttled`, `timeout` or `unavailable`.
pub fn dependency_error(service: &str, kind: &'static str) {
    emit(
        &[(DEPENDENCY_ERRORS, 1)],
        &[&["Service", "Kind"]],
        &[("Service", service), ("Kind", kind)],
    );
}

/// Counts an act on the admin API: `action` (`grant_role`, `delete_user`, …)
/// and its `outcome` (`done`, or the error code it was refused with).
pub fn admin_action(action: &str, outcome: &str) {
    emit(
        &[(ADMIN_ACTIONS, 1)],
        &[&[], &["Action", "Outcome"]],
        &[("Action", action), ("Outcome", outcome)],
    );
}

/// Counts a response by its status class (`2xx` … `5xx`).
pub fn response(status: u16) {
    let class = match status {
        100..=199 => "1xx",
        200..=299 => "2xx",
        300..=399 => "3xx",
        400..=499 => "4xx",
        _ => "5xx",
    };
    emit(
        &[(RESPONSES, 1), (SERVER_ERRORS, u64::from(class == "5xx"))],
        &[&[], &["StatusClass"]],
        &[("StatusClass", class)],
    );
}

/// The namespace and the line's level, read once.
struct Settings {
    namespace: String,
    level: String,
}

fn settings() -> &'static Settings {
    static SETTINGS: OnceLock<Settings> = OnceLock::new();
    SETTINGS.get_or_init(|| Settings {
        namespace: std::env::var(NAMESPACE_VAR)
            .ok()
            .filter(|n| !n.trim().is_empty())
            .unwrap_or_else(|| DEFAULT_NAMESPACE.to_owned()),
        // Exactly the threshold Lambda filters at, so the line always passes.
        level: std::env::var("AWS_LAMBDA_LOG_LEVEL")
            .ok()
            .filter(|l| !l.trim().is_empty())
            .map_or_else(|| "INFO".to_owned(), |l| l.trim().to_ascii_uppercase()),
    })
}

/// Reads the settings now (init), not at the first event.
pub fn init() {
    settings();
}

/// One EMF line: the values, their dimension sets, the dimensions' values.
fn emit(values: &[(&str, u64)], dimension_sets: &[&[&str]], dimensions: &[(&str, &str)]) {
    let settings = settings();
    let timestamp = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64);
    let dimension_sets: &[&[&str]] = if dimension_sets.is_empty() {
        &[&[]]
    } else {
        dimension_sets
    };
    let mut line = Map::new();
    line.insert("level".into(), json!(settings.level));
    line.insert(
        "message".into(),
        json!(format!(
            "metric {}",
            values.first().map_or("", |(name, _)| *name)
        )),
    );
    line.insert(
        "_aws".into(),
        json!({
            "Timestamp": timestamp,
            "CloudWatchMetrics": [{
                "Namespace": settings.namespace,
                "Dimensions": dimension_sets,
                "Metrics": values.iter().map(|(name, _)| json!({"Name": name, "Unit": "Count"})).collect::<Vec<_>>(),
            }],
        }),
    );
    for (name, value) in dimensions {
        line.insert((*name).into(), json!(value));
    }
    for (name, value) in values {
        line.insert((*name).into(), json!(value));
    }
    write(Value::Object(line).to_string());
}

thread_local! {
    static CAPTURED: RefCell<Option<Vec<String>>> = const { RefCell::new(None) };
}

fn write(line: String) {
    let captured = CAPTURED.with(|c| {
        c.borrow_mut()
            .as_mut()
            .map(|lines| lines.push(line.clone()))
    });
    if captured.is_none() {
        // One write of a whole line: stdout is shared with the log lines.
        println!("{line}");
    }
}

/// For tests: the lines this thread emits from now on, instead of stdout,
/// until the guard is dropped.
#[doc(hidden)]
pub fn capture() -> Capture {
    CAPTURED.with(|c| *c.borrow_mut() = Some(Vec::new()));
    Capture(())
}

#[doc(hidden)]
pub struct Capture(());

impl Capture {
    /// The lines so far, parsed; the buffer is emptied.
    pub fn take(&self) -> Vec<Value> {
        CAPTURED
            .with(|c| {
                c.borrow_mut()
                    .as_mut()
                    .map(std::mem::take)
                    .unwrap_or_default()
            })
            .iter()
            .map(|line| serde_json::from_str(line).expect("an EMF line is JSON"))
            .collect()
    }
}

impl Drop for Capture {
    fn drop(&mut self) {
        CAPTURED.with(|c| *c.borrow_mut() = None);
    }
}

/// Checks that `line` is valid EMF as CloudWatch reads it; returns its
/// metric names. For tests, here and in `tests/`.
#[doc(hidden)]
pub fn check_emf(line: &Value) -> Result<Vec<String>, String> {
    let aws = line.get("_aws").ok_or("no _aws")?;
    // Milliseconds: a time in seconds reads as 1970, which CloudWatch drops.
    aws.get("Timestamp")
        .and_then(Value::as_u64)
        .filter(|ms| *ms > 1_000_000_000_000)
        .ok_or("no Timestamp in milliseconds")?;
    let directives = aws
        .get("CloudWatchMetrics")
        .and_then(Value::as_array)
        .filter(|d| !d.is_empty())
        .ok_or("no CloudWatchMetrics")?;
    let mut names = Vec::new();
    for directive in directives {
        directive
            .get("Namespace")
            .and_then(Value::as_str)
            .filter(|n| !n.is_empty())
            .ok_or("no Namespace")?;
        for set in directive
            .get("Dimensions")
            .and_then(Value::as_array)
            .filter(|sets| !sets.is_empty())
            .ok_or("no dimension set (an empty one, [[]], is how to say none)")?
        {
            for dimension in set.as_array().ok_or("a dimension set is not an array")? {
                let name = dimension.as_str().ok_or("a dimension is not a string")?;
                line.get(name).and_then(Value::as_str).ok_or(format!(
                    "dimension {name} has no string value at the top level"
                ))?;
            }
        }
        for metric in directive
            .get("Metrics")
            .and_then(Value::as_array)
            .ok_or("no Metrics")?
        {
            let name = metric
                .get("Name")
                .and_then(Value::as_str)
                .ok_or("a metric has no Name")?;
            if metric.get("Unit").and_then(Value::as_str) != Some("Count") {
                return Err(format!("{name}: unit is not Count"));
            }
            line.get(name)
                .and_then(Value::as_u64)
                .ok_or(format!("{name} has no number at the top level"))?;
            names.push(name.to_owned());
        }
    }
    Ok(names)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_event_is_one_valid_emf_line_with_its_count_at_the_top_level() {
        let capture = capture();
        for event in EVENTS {
            count(event);
        }
        let lines = capture.take();
        assert_eq!(lines.len(), EVENTS.len());
        for (line, event) in lines.iter().zip(EVENTS) {
            assert_eq!(check_emf(line), Ok(vec![event.name().to_owned()]));
            assert_eq!(line[event.name()], 1);
            assert_eq!(line["level"], "INFO");
            assert_eq!(
                line["_aws"]["CloudWatchMetrics"][0]["Namespace"],
                DEFAULT_NAMESPACE
            );
            assert_eq!(
                line["_aws"]["CloudWatchMetrics"][0]["Dimensions"],
                json!([[]])
            );
            assert!(line.get("fields").is_none());
        }
    }

    #[test]
    fn dependency_errors_have_service_and_kind_dimensions() {
        let capture = capture();
        dependency_error("dynamodb", "throttled");
        let line = &capture.take()[0];
        assert_eq!(check_emf(line), Ok(vec![DEPENDENCY_ERRORS.to_owned()]));
        assert_eq!(
            line["_aws"]["CloudWatchMetrics"][0]["Dimensions"],
            json!([["Service", "Kind"]])
        );
        assert_eq!(
            (&line["Service"], &line["Kind"]),
            (&json!("dynamodb"), &json!("throttled"))
        );
    }

    #[test]
    fn responses_count_in_total_and_by_class_and_5xx_as_server_errors() {
        let capture = capture();
        for status in [200, 401, 503] {
            response(status);
        }
        let lines = capture.take();
        let classes: Vec<_> = lines.iter().map(|l| l["StatusClass"].clone()).collect();
        assert_eq!(classes, [json!("2xx"), json!("4xx"), json!("5xx")]);
        let errors: Vec<_> = lines.iter().map(|l| l[SERVER_ERRORS].clone()).collect();
        assert_eq!(errors, [json!(0), json!(0), json!(1)]);
        for line in &lines {
            assert_eq!(
                check_emf(line),
                Ok(vec![RESPONSES.to_owned(), SERVER_ERRORS.to_owned()])
            );
            assert_eq!(
                line["_aws"]["CloudWatchMetrics"][0]["Dimensions"],
                json!([[], ["StatusClass"]])
            );
        }
    }

    #[test]
    fn the_checker_refuses_what_cloudwatch_would_not_read() {
        let nested = json!({"fields": {"_aws": {}}});
        assert!(check_emf(&nested).is_err());
        let ms = 1_795_000_000_000_u64;
        let valid = json!({"X": 1, "_aws": {"Timestamp": ms, "CloudWatchMetrics": [
            {"Namespace": "N", "Dimensions": [[]], "Metrics": [{"Name": "X", "Unit": "Count"}]}]}});
        assert!(check_emf(&valid).is_ok());
        let mut value_missing = valid.clone();
        value_missing.as_object_mut().unwrap().remove("X");
        assert!(check_emf(&value_missing).is_err());
        let mut in_seconds = valid.clone();
        in_seconds["_aws"]["Timestamp"] = json!(ms / 1000);
        assert!(check_emf(&in_seconds).is_err());
        let mut no_dimension_set = valid.clone();
        no_dimension_set["_aws"]["CloudWatchMetrics"][0]["Dimensions"] = json!([]);
        assert!(check_emf(&no_dimension_set).is_err());
        let mut dimension_missing = valid.clone();
        dimension_missing["_aws"]["CloudWatchMetrics"][0]["Dimensions"] = json!([["Service"]]);
        assert!(check_emf(&dimension_missing).is_err());
    }
}
