//! The second factor through the handlers (issue 29), against DynamoDB
//! Local: enrolment (a fresh login, a secret, confirmed by a code, ten
//! recovery codes), and a login that asks for it (`mfa_required`, then
//! `POST /login/second-factor` with a code or a recovery code). Codes are
//! computed here from the secret the enrolment handed out, as an app does.

use auth::clock::Clock;
use auth::handlers::{login, second_factor};
use auth::mfa::{MAX_FACTOR_FAILURES, MAX_TICKET_FAILURES, MFA_TOKEN_TTL};
use auth::store::Store;
use auth::totp::{STEP_SECONDS, TotpSecret, step_of};
use auth::users::{User, Username};
use lambda_http::{Body, Response};
use serde_json::json;

use crate::support::race::{race, racing, statuses};
use crate::support::*;

const PASSWORD: &str = "correct horse battery staple";

/// A moment 10 s into a step, some 400 s ago: codes of this step stay
/// this step's for a while, racers' clocks (a second apart) included, and
/// the tests' clocks may move on ten minutes before the tokens they sign
/// are ahead of the verifier's (the system's) clock.
pub(crate) fn mid_step() -> i64 {
    ((auth::clock::system_now() - 400) / STEP_SECONDS) * STEP_SECONDS + 10
}

fn secret_from(base32: &str) -> TotpSecret {
    totp_secret_from_base32(base32)
}

pub(crate) fn code(secret: &TotpSecret, now: i64) -> String {
    secret.code_at(step_of(now)).unwrap().expose().to_owned()
}

/// A password login's access token (an account without a factor).
async fn access_of(app: &App, username: &str) -> String {
    body_json(&password_login(app, username).await)["access_token"]
        .as_str()
        .unwrap()
        .to_owned()
}

/// An enrolment begun with `access`: its secret.
async fn begin_enrolment(app: &App, access: &str) -> TotpSecret {
    let begun = second_factor::handle(
        &app.second_factor(),
        request("second-factor.json", Some(&bearer(access)), None),
    )
    .await;
    assert_eq!(begun.status(), 201, "{}", body_json(&begun));
    secret_from(body_json(&begun)["secret"].as_str().unwrap())
}

pub(crate) async fn password_login(app: &App, username: &str) -> Response<Body> {
    let body = json!({"username": username, "password": PASSWORD}).to_string();
    login::handle(&app.login(), request("login.json", None, Some(&body))).await
}

/// The `mfa_token` of a login that must ask for the second factor.
async fn mfa_token(app: &App, username: &str) -> String {
    let response = password_login(app, username).await;
    let json = assert_error(&response, 401, "mfa_required");
    assert_eq!(json["factors"], json!(["totp", "recovery_code"]));
    assert_eq!(json["expires_in"], MFA_TOKEN_TTL.as_secs());
    json["mfa_token"].as_str().unwrap().to_owned()
}

async fn second_step(app: &App, body: serde_json::Value) -> Response<Body> {
    second_factor::handle(
        &app.second_factor(),
        request("login-second-factor.json", None, Some(&body.to_string())),
    )
    .await
}

pub(crate) async fn with_code(app: &App, token: &str, code: &str) -> Response<Body> {
    second_step(app, json!({"mfa_token": token, "code": code})).await
}

async fn with_recovery(app: &App, token: &str, code: &str) -> Response<Body> {
    second_step(app, json!({"mfa_token": token, "recovery_code": code})).await
}

/// A signed-in user with an active factor: its secret and recovery codes.
pub(crate) struct Enrolled {
    pub(crate) user: User,
    pub(crate) secret: TotpSecret,
    pub(crate) recovery: Vec<String>,
}

/// A user whose password login gives tokens, enrolled through the routes.
pub(crate) async fn enrolled(app: &App, username: &str) -> Enrolled {
    let user = add_user(&app.store, username, "Enrolled", PASSWORD).await;
    let response = password_login(app, username).await;
    assert_eq!(response.status(), 200, "{}", body_json(&response));
    let access = body_json(&response)["access_token"]
        .as_str()
        .unwrap()
        .to_owned();
    let state = app.second_factor();
    let begun = second_factor::handle(
        &state,
        request("second-factor.json", Some(&bearer(&access)), None),
    )
    .await;
    assert_eq!(begun.status(), 201, "{}", body_json(&begun));
    let begun = body_json(&begun);
    let secret = secret_from(begun["secret"].as_str().unwrap());
    let uri = begun["otpauth_uri"].as_str().unwrap();
    assert!(uri.starts_with("otpauth://totp/"), "{uri}");
    assert!(uri.contains(begun["secret"].as_str().unwrap()), "{uri}");
    // Not active until a code confirms it: the password alone still signs
    // in, and its tokens say one factor.
    let one = password_login(app, username).await;
    assert_eq!(one.status(), 200);
    let claims = verifier()
        .verify(body_json(&one)["access_token"].as_str().unwrap())
        .await
        .unwrap();
    assert_eq!(claims.amr, ["pwd"]);
    assert_eq!(claims.acr.as_deref(), Some("aal1"));

    let now = app.clock.now();
    let confirm = |code: String| {
        let body = json!({ "code": code }).to_string();
        second_factor::handle(
            &state,
            request(
                "second-factor-confirm.json",
                Some(&bearer(&access)),
                Some(&body),
            ),
        )
    };
    let wrong = confirm(code(&secret, now + 10 * STEP_SECONDS)).await;
    assert_error(&wrong, 400, "invalid_code");
    let confirmed = confirm(code(&secret, now)).await;
    assert_eq!(confirmed.status(), 200, "{}", body_json(&confirmed));
    let recovery: Vec<String> = body_json(&confirmed)["recovery_codes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c.as_str().unwrap().to_owned())
        .collect();
    assert_eq!(recovery.len(), 10);
    Enrolled {
        user,
        secret,
        recovery,
    }
}

/// Signs `user` in at the next step (the enrolment spent this one's code).
pub(crate) fn next_step(app: &App) {
    app.clock.advance(STEP_SECONDS);
}

async fn sessions(app: &App, user: &User) -> usize {
    app.store
        .list_sessions(user, app.clock.now())
        .await
        .unwrap()
        .0
        .len()
}

async fn factor_failures(store: &Store, user: &User) -> u32 {
    store.get_factor(&user.id).await.unwrap().unwrap().failures
}

#[tokio::test]
async fn a_user_with_a_second_factor_signs_in_with_the_password_then_a_code() {
    let store = fresh_store().await;
    let app = App::with_clock(&store, Clock::manual(mid_step()));
    let alice = enrolled(&app, "alice").await;
    let stored = store.get(&Username::parse("alice").unwrap()).await.unwrap();
    assert!(stored.unwrap().second_factor);
    next_step(&app);

    // The password alone no longer yields tokens: no access token, no
    // refresh token, no session.
    let before = sessions(&app, &alice.user).await;
    let token = mfa_token(&app, "alice").await;
    assert_eq!(sessions(&app, &alice.user).await, before);
    let response = with_code(&app, &token, &code(&alice.secret, app.clock.now())).await;
    assert_eq!(response.status(), 200, "{}", body_json(&response));
    let tokens = body_json(&response);
    assert_eq!(tokens["message"], "Login Success");
    let claims = verifier()
        .verify(tokens["access_token"].as_str().unwrap())
        .await
        .unwrap();
    assert_eq!(claims.sub, alice.user.id.to_string());
    // The tokens say how: the password and a code, a second factor.
    assert_eq!(claims.amr, ["pwd", "otp", "mfa"]);
    assert_eq!(claims.acr.as_deref(), Some("aal2"));
    assert_eq!(claims.auth_time, app.clock.now());
    // And so do the session's refreshes.
    let refreshed = auth::handlers::refresh::handle(
        &app.refresh(),
        request(
            "refresh.json",
            None,
            Some(&json!({"refresh_token": tokens["refresh_token"]}).to_string()),
        ),
    )
    .await;
    assert_eq!(refreshed.status(), 200, "{}", body_json(&refreshed));
    let claims = verifier()
        .verify(body_json(&refreshed)["access_token"].as_str().unwrap())
        .await
        .unwrap();
    assert_eq!(claims.amr, ["pwd", "otp", "mfa"]);
    assert_eq!(claims.acr.as_deref(), Some("aal2"));
    assert!(tokens["refresh_token"].is_string());
    assert_eq!(sessions(&app, &alice.user).await, before + 1);
    // A completed sign-in clears the factor's count.
    assert_eq!(factor_failures(&store, &alice.user).await, 0);

    // The token is used up.
    let again = with_code(&app, &token, &code(&alice.secret, app.clock.now())).await;
    assert_error(&again, 401, "invalid_mfa_token");
}

#[tokio::test]
async fn a_code_is_accepted_once_and_only_from_its_own_steps() {
    let store = fresh_store().await;
    let app = App::with_clock(&store, Clock::manual(mid_step()));
    let alice = enrolled(&app, "alice-codes").await;
    next_step(&app);
    let now = app.clock.now();

    let first = mfa_token(&app, "alice-codes").await;
    let accepted = with_code(&app, &first, &code(&alice.secret, now)).await;
    assert_eq!(accepted.status(), 200);
    // Replayed on a new login: refused.
    let second = mfa_token(&app, "alice-codes").await;
    let replayed = with_code(&app, &second, &code(&alice.secret, now)).await;
    assert_error(&replayed, 400, "invalid_code");
    // A code of the step before the one accepted is no better.
    let older = with_code(&app, &second, &code(&alice.secret, now - STEP_SECONDS)).await;
    assert_error(&older, 400, "invalid_code");
    // Nor one two steps away, either side.
    let far = with_code(&app, &second, &code(&alice.secret, now + 2 * STEP_SECONDS)).await;
    assert_error(&far, 400, "invalid_code");
    // Three wrong codes: the token is void, a right code after them too.
    let right = with_code(&app, &second, &code(&alice.secret, now + STEP_SECONDS)).await;
    assert_error(&right, 401, "invalid_mfa_token");
    // A new login, the next step's code (one step of drift): accepted.
    let third = mfa_token(&app, "alice-codes").await;
    let next = with_code(&app, &third, &code(&alice.secret, now + STEP_SECONDS)).await;
    assert_eq!(next.status(), 200, "{}", body_json(&next));
}

#[tokio::test]
async fn an_mfa_token_is_refused_after_its_lifetime_and_with_another_users_code() {
    let store = fresh_store().await;
    let app = App::with_clock(&store, Clock::manual(mid_step()));
    let alice = enrolled(&app, "alice-life").await;
    let bob = enrolled(&app, "bob-life").await;
    next_step(&app);

    let token = mfa_token(&app, "alice-life").await;
    let bobs = with_code(&app, &token, &code(&bob.secret, app.clock.now())).await;
    assert_error(&bobs, 400, "invalid_code");
    let bobs = with_recovery(&app, &token, &bob.recovery[0]).await;
    assert_error(&bobs, 400, "invalid_code");

    app.clock.advance(MFA_TOKEN_TTL.as_secs() as i64);
    let late = with_code(&app, &token, &code(&alice.secret, app.clock.now())).await;
    assert_error(&late, 401, "invalid_mfa_token");
    // Bob's recovery code still works for Bob: nothing of his was spent.
    let bobs_token = mfa_token(&app, "bob-life").await;
    let bob_in = with_recovery(&app, &bobs_token, &bob.recovery[0]).await;
    assert_eq!(bob_in.status(), 200, "{}", body_json(&bob_in));
    // A token stands only while the account is as its password found it:
    // a deactivation and reactivation (the epoch moved on) voids it.
    let token = mfa_token(&app, "bob-life").await;
    let bob_now = store.get(&bob.user.username).await.unwrap().unwrap();
    assert!(store.set_active(&bob_now, false).await.unwrap());
    let bob_now = store.get(&bob.user.username).await.unwrap().unwrap();
    assert!(store.set_active(&bob_now, true).await.unwrap());
    let void = with_recovery(&app, &token, &bob.recovery[1]).await;
    assert_error(&void, 401, "invalid_mfa_token");
    // Tokens of other shapes are never looked up.
    let junk = with_code(&app, "not-a-token", "123456").await;
    assert_error(&junk, 401, "invalid_mfa_token");
}

#[tokio::test]
async fn a_recovery_code_signs_in_once() {
    let store = fresh_store().await;
    let app = App::with_clock(&store, Clock::manual(mid_step()));
    let alice = enrolled(&app, "alice-recovery").await;
    let typed = alice.recovery[3].to_uppercase().replace('-', " ");

    let token = mfa_token(&app, "alice-recovery").await;
    let response = with_recovery(&app, &token, &typed).await;
    assert_eq!(response.status(), 200, "{}", body_json(&response));
    let claims = verifier()
        .verify(body_json(&response)["access_token"].as_str().unwrap())
        .await
        .unwrap();
    assert_eq!(claims.amr, ["pwd", "recovery_code", "mfa"]);
    assert_eq!(claims.acr.as_deref(), Some("aal2"));
    let factor = store.get_factor(&alice.user.id).await.unwrap().unwrap();
    assert_eq!(factor.recovery.len(), 9);

    let token = mfa_token(&app, "alice-recovery").await;
    let twice = with_recovery(&app, &token, &alice.recovery[3]).await;
    assert_error(&twice, 400, "invalid_code");
    let other = with_recovery(&app, &token, &alice.recovery[4]).await;
    assert_eq!(other.status(), 200, "{}", body_json(&other));
}

#[tokio::test]
async fn a_hundred_wrong_codes_in_a_row_suspend_the_factor_until_a_recovery_code() {
    let store = fresh_store().await;
    let app = App::with_clock(&store, Clock::manual(mid_step()));
    let alice = enrolled(&app, "alice-suspend").await;
    next_step(&app);
    let wrong = code(&alice.secret, app.clock.now() + 5 * STEP_SECONDS);

    let mut tried = 0;
    while tried < MAX_FACTOR_FAILURES {
        let token = mfa_token(&app, "alice-suspend").await;
        for _ in 0..MAX_TICKET_FAILURES.min(MAX_FACTOR_FAILURES - tried) {
            assert_error(&with_code(&app, &token, &wrong).await, 400, "invalid_code");
            tried += 1;
        }
    }
    assert_eq!(
        factor_failures(&store, &alice.user).await,
        MAX_FACTOR_FAILURES
    );
    // Suspended: the right code is refused, and counts nothing more.
    let token = mfa_token(&app, "alice-suspend").await;
    let right = with_code(&app, &token, &code(&alice.secret, app.clock.now())).await;
    assert_error(&right, 403, "factor_suspended");
    assert_eq!(
        factor_failures(&store, &alice.user).await,
        MAX_FACTOR_FAILURES
    );
    // A recovery code restores it.
    let restored = with_recovery(&app, &token, &alice.recovery[0]).await;
    assert_eq!(restored.status(), 200, "{}", body_json(&restored));
    assert_eq!(factor_failures(&store, &alice.user).await, 0);
    let token = mfa_token(&app, "alice-suspend").await;
    let right = with_code(&app, &token, &code(&alice.secret, app.clock.now())).await;
    assert_eq!(right.status(), 200, "{}", body_json(&right));
}

#[tokio::test]
async fn an_enrolment_needs_a_fresh_login_and_no_factor_already() {
    let store = fresh_store().await;
    let app = App::with_clock(&store, Clock::manual(mid_step()));
    let alice = enrolled(&app, "alice-enrol").await;
    next_step(&app);
    let token = mfa_token(&app, "alice-enrol").await;
    let tokens = body_json(&with_code(&app, &token, &code(&alice.secret, app.clock.now())).await);
    let access = tokens["access_token"].as_str().unwrap();
    let state = app.second_factor();
    let begin = |access: String| {
        second_factor::handle(
            &state,
            request("second-factor.json", Some(&bearer(&access)), None),
        )
    };
    assert_error(&begin(access.to_owned()).await, 409, "conflict");
    // Another user, signed in long ago: the password again first.
    add_user(&store, "carol-enrol", "Carol", PASSWORD).await;
    let carol = body_json(&password_login(&app, "carol-enrol").await);
    let access = carol["access_token"].as_str().unwrap().to_owned();
    app.clock
        .advance(auth::permissions::DEFAULT_FRESH_AUTH_MAX_AGE.as_secs() as i64 + 1);
    let stale = begin(access).await;
    assert_error(&stale, 401, "insufficient_user_authentication");
}

/// Racers at once on threads, each its own client and clock: one
/// `mfa_token` and one right code; one token and the codes of two adjacent
/// steps (the ticket's conditional delete is all that stops the second);
/// two tokens of two logins and one code (the step's conditional write is
/// all that stops the second). Each round, one signs in and one session
/// more; every other is refused as a token used up or a code spent (or a
/// store too slow).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn racers_with_one_mfa_token_or_one_code_sign_in_once() {
    const RACERS: usize = 6;
    let store = fresh_store().await;
    let app = App::with_clock(&store, Clock::manual(mid_step()));
    let alice = enrolled(&app, "alice-race").await;
    for round in 0..6 {
        // Two steps on: the last round's codes are past.
        app.clock.advance(2 * STEP_SECONDS);
        let before = sessions(&app, &alice.user).await;
        let now = app.clock.now();
        let first = mfa_token(&app, "alice-race").await;
        let second = mfa_token(&app, "alice-race").await;
        let (kind, tokens, codes) = match round % 3 {
            0 => ("one token, one code", [&first, &first], [now, now]),
            1 => (
                "one token, two steps' codes",
                [&first, &first],
                [now, now + STEP_SECONDS],
            ),
            _ => ("two tokens, one code", [&first, &second], [now, now]),
        };
        let mut requests = Vec::new();
        for (i, racer) in app.racers(RACERS).await.into_iter().enumerate() {
            let token = tokens[i % 2].clone();
            let code = code(&alice.secret, codes[i % 2]);
            requests.push(racing(
                async move { with_code(&racer, &token, &code).await },
            ));
        }
        let responses = race(requests).await;
        let won = responses.iter().filter(|r| r.status() == 200).count();
        assert_eq!(won, 1, "{kind}: {:?}", statuses(&responses));
        for lost in responses.iter().filter(|r| r.status() != 200) {
            let json = body_json(lost);
            // Or, on a loaded machine, DynamoDB Local too slow for the
            // SDK's bounds: refused all the same (the count below holds).
            assert!(
                [
                    "invalid_mfa_token",
                    "invalid_code",
                    "conflict",
                    "service_unavailable"
                ]
                .contains(&json["error"].as_str().unwrap()),
                "{kind}: {json}"
            );
        }
        assert_eq!(sessions(&app, &alice.user).await, before + 1, "{kind}");
    }
}

/// Only the session that began an enrolment confirms it: another session
/// of the same user (a stolen token) finds none, and its wrong codes cost
/// the enrolment nothing.
#[tokio::test]
async fn only_the_session_that_began_an_enrolment_confirms_it() {
    let store = fresh_store().await;
    let app = App::with_clock(&store, Clock::manual(mid_step()));
    add_user(&store, "alice-bound", "Alice", PASSWORD).await;
    let mine = access_of(&app, "alice-bound").await;
    let stolen = access_of(&app, "alice-bound").await;
    let state = app.second_factor();
    let secret = begin_enrolment(&app, &mine).await;
    let confirm = |access: &str, code: String| {
        let body = json!({ "code": code }).to_string();
        second_factor::handle(
            &state,
            request(
                "second-factor-confirm.json",
                Some(&bearer(access)),
                Some(&body),
            ),
        )
    };
    let right = code(&secret, app.clock.now());
    assert_error(&confirm(&stolen, right.clone()).await, 409, "conflict");
    let user = store
        .get(&Username::parse("alice-bound").unwrap())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(factor_failures(&store, &user).await, 0);
    assert!(!user.second_factor);
    let confirmed = confirm(&mine, right).await;
    assert_eq!(confirmed.status(), 200, "{}", body_json(&confirmed));
}

/// The kinds of the mail jobs in the table.
async fn mail_kinds(store: &Store) -> Vec<String> {
    let mut kinds: Vec<String> = crate::matrix::snapshot(store.table())
        .await
        .into_iter()
        .filter(|((pk, _), _)| pk.starts_with("MAIL#"))
        .map(|(_, item)| item["kind"].as_s().unwrap().clone())
        .collect();
    kinds.sort();
    kinds
}

/// The owner of a verified address is told: a factor added (in its
/// confirmation's transaction), a wrong code after the right password (at
/// most once an hour, however many logins), a recovery code used and how
/// many remain.
#[tokio::test]
async fn the_owner_is_told_of_a_factor_added_a_wrong_code_and_a_recovery_code_used() {
    let store = fresh_store().await;
    let app = App::with_clock(&store, Clock::manual(mid_step()));
    add_user(&store, "alice-told", "Alice", PASSWORD).await;
    crate::matrix::verify_directly(&store, "alice-told", "alice-told@example.com").await;
    let before = mail_kinds(&store).await;
    let access = access_of(&app, "alice-told").await;
    let state = app.second_factor();
    let secret = begin_enrolment(&app, &access).await;
    let body = json!({ "code": code(&secret, app.clock.now()) }).to_string();
    let confirmed = second_factor::handle(
        &state,
        request(
            "second-factor-confirm.json",
            Some(&bearer(&access)),
            Some(&body),
        ),
    )
    .await;
    let recovery = body_json(&confirmed)["recovery_codes"][0]
        .as_str()
        .unwrap()
        .to_owned();
    let added = mail_kinds(&store).await;
    assert_eq!(
        added.iter().filter(|k| *k == "second_factor_added").count(),
        1,
        "{added:?} after {before:?}"
    );

    next_step(&app);
    // Wrong codes of two logins within the hour: one notice.
    for _ in 0..2 {
        let token = mfa_token(&app, "alice-told").await;
        for _ in 0..2 {
            let wrong = with_code(&app, &token, "000000").await;
            assert_error(&wrong, 400, "invalid_code");
        }
    }
    let kinds = mail_kinds(&store).await;
    assert_eq!(
        kinds
            .iter()
            .filter(|k| *k == "wrong_second_factor_code")
            .count(),
        1,
        "{kinds:?}"
    );
    let token = mfa_token(&app, "alice-told").await;
    let used = with_recovery(&app, &token, &recovery).await;
    assert_eq!(used.status(), 200, "{}", body_json(&used));
    let jobs = crate::matrix::snapshot(store.table()).await;
    let told = jobs
        .values()
        .find(|item| {
            item.get("kind")
                .and_then(|k| k.as_s().ok())
                .map(String::as_str)
                == Some("recovery_code_used")
        })
        .expect("a recovery code's notice");
    assert_eq!(told["remaining"].as_s().unwrap(), "9");
}

/// A password reset by mail ends every session and sets the password, and
/// leaves the second factor as it was: the next sign-in, with the new
/// password, still asks for it.
#[tokio::test]
async fn a_password_reset_keeps_the_second_factor() {
    use auth::tickets::{Purpose, Ticket};
    let store = fresh_store().await;
    let app = App::with_clock(&store, Clock::manual(mid_step()));
    let alice = enrolled(&app, "alice-reset").await;
    let address = "alice-reset@example.com";
    let user = crate::matrix::verify_directly(&store, "alice-reset", address).await;
    let factor = store.get_factor(&user.id).await.unwrap().unwrap();
    let (ticket, secrets) = Ticket::issue(
        Purpose::Reset,
        &user,
        auth::email::Email::parse(address).unwrap(),
        app.clock.now(),
    );
    store.put_ticket(&ticket).await.unwrap();
    let new_password = "a brand new passphrase";
    let body = json!({"email": address, "code": secrets.code, "new_password": new_password});
    let req = crate::recovery::call(
        lambda_http::http::Method::POST,
        "/password/reset/confirm",
        None,
        Some(body),
    );
    let reset = auth::handlers::recovery::handle(&crate::recovery::recovery_state(&app), req).await;
    assert_eq!(reset.status(), 200, "{}", body_json(&reset));
    assert_eq!(store.get_factor(&user.id).await.unwrap(), Some(factor));

    next_step(&app);
    let body = json!({"username": "alice-reset", "password": new_password}).to_string();
    let asked = login::handle(&app.login(), request("login.json", None, Some(&body))).await;
    let token = assert_error(&asked, 401, "mfa_required")["mfa_token"]
        .as_str()
        .unwrap()
        .to_owned();
    let signed_in = with_code(&app, &token, &code(&alice.secret, app.clock.now())).await;
    assert_eq!(signed_in.status(), 200, "{}", body_json(&signed_in));
}

/// Guesses racing at the factor's last allowed failure: each login its own
/// token, all at once on threads, after 99 failures. One is checked (a
/// wrong code), every other finds the factor suspended, and the count
/// stops at 100: the reservation, not the read before it, decides.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn racing_guesses_never_pass_the_hundredth_failure() {
    const RACERS: usize = 6;
    let store = fresh_store().await;
    let app = App::with_clock(&store, Clock::manual(mid_step()));
    let alice = enrolled(&app, "alice-guess").await;
    let factor = store.get_factor(&alice.user.id).await.unwrap().unwrap();
    // 99 tries counted, as 99 wrong codes would have been.
    for _ in 0..MAX_FACTOR_FAILURES - 1 {
        let counted = store
            .reserve_code_try(&factor, None, false, app.clock.now())
            .await
            .unwrap();
        assert_eq!(counted, auth::store::CodeTry::Reserved);
    }
    let wrong = code(&alice.secret, app.clock.now() + 5 * STEP_SECONDS);
    let mut requests = Vec::new();
    for racer in app.racers(RACERS).await {
        let token = mfa_token(&app, "alice-guess").await;
        let wrong = wrong.clone();
        requests.push(racing(
            async move { with_code(&racer, &token, &wrong).await },
        ));
    }
    let responses = race(requests).await;
    let errors: Vec<String> = responses
        .iter()
        .map(|r| body_json(r)["error"].as_str().unwrap().to_owned())
        .collect();
    let checked = errors.iter().filter(|e| *e == "invalid_code").count();
    let suspended = errors.iter().filter(|e| *e == "factor_suspended").count();
    assert_eq!((checked, suspended), (1, RACERS - 1), "{errors:?}");
    assert_eq!(
        factor_failures(&store, &alice.user).await,
        MAX_FACTOR_FAILURES
    );
}

/// A sign-in that read the account before its factor was confirmed begins
/// no session after: the flag, as read, is a condition of the sign-in's
/// transaction (the store's `start_session`, from a stale read).
#[tokio::test]
async fn a_sign_in_that_read_the_account_before_its_factor_was_confirmed_begins_no_session() {
    let store = fresh_store().await;
    let user = add_user(&store, "alice-stale", "Alice", PASSWORD).await;
    let stale = store.get(&user.username).await.unwrap().unwrap();
    crate::matrix::factor_directly(&store, "alice-stale", true).await;
    let refused = crate::store::start_session_for(&store, &stale).await;
    assert!(
        matches!(refused, Err(auth::store::StoreError::Conflict)),
        "{refused:?}"
    );
    // As read now, it would (the second step's write, with its own conditions).
    let fresh = store.get(&user.username).await.unwrap().unwrap();
    assert!(fresh.second_factor);
    crate::store::start_session_for(&store, &fresh)
        .await
        .unwrap();
}

/// No secret outlives its account: a deletion takes the factor with it.
#[tokio::test]
async fn an_accounts_deletion_deletes_its_second_factor() {
    let store = fresh_store().await;
    let app = App::with_clock(&store, Clock::manual(mid_step()));
    let alice = enrolled(&app, "alice-gone").await;
    assert!(store.get_factor(&alice.user.id).await.unwrap().is_some());
    let user = store.get(&alice.user.username).await.unwrap().unwrap();
    store
        .delete_user(&user, auth::store::DeletedBy::Operator)
        .await
        .unwrap();
    assert_eq!(store.get_factor(&alice.user.id).await.unwrap(), None);
}

async fn with_access(
    app: &App,
    method: lambda_http::http::Method,
    path: &str,
    access: &str,
    body: serde_json::Value,
) -> Response<Body> {
    let req = crate::recovery::call(method, path, Some(&bearer(access)), Some(body));
    second_factor::handle(&app.second_factor(), req).await
}

/// A fresh access token of `username`'s, through the second step.
async fn signed_in(app: &App, username: &str, secret: &TotpSecret) -> String {
    next_step(app);
    let token = mfa_token(app, username).await;
    let response = with_code(app, &token, &code(secret, app.clock.now())).await;
    assert_eq!(response.status(), 200, "{}", body_json(&response));
    body_json(&response)["access_token"]
        .as_str()
        .unwrap()
        .to_owned()
}

/// Removing the factor needs a fresh login and a fresh code (or a recovery
/// code): a wrong one, one already used, or a stale login removes nothing;
/// then the password alone signs in again, and the owner is told.
#[tokio::test]
async fn removing_the_factor_needs_a_fresh_login_and_a_code() {
    use lambda_http::http::Method;
    let store = fresh_store().await;
    let app = App::with_clock(&store, Clock::manual(mid_step()));
    let alice = enrolled(&app, "alice-remove").await;
    crate::matrix::verify_directly(&store, "alice-remove", "alice-remove@example.com").await;
    let access = signed_in(&app, "alice-remove", &alice.secret).await;
    let path = "/account/second-factor";
    // The code that just signed in is spent; a wrong one is wrong.
    let used = code(&alice.secret, app.clock.now());
    let spent = with_access(&app, Method::DELETE, path, &access, json!({"code": used})).await;
    assert_error(&spent, 400, "invalid_code");
    let wrong = with_access(
        &app,
        Method::DELETE,
        path,
        &access,
        json!({"code": "000000"}),
    )
    .await;
    assert_error(&wrong, 400, "invalid_code");
    let neither = with_access(&app, Method::DELETE, path, &access, json!({})).await;
    assert_error(&neither, 400, "invalid_request");
    assert!(store.get_factor(&alice.user.id).await.unwrap().is_some());
    // A stale login: the password again first.
    let stale = App::with_clock(&store, Clock::manual(app.clock.now() + 601));
    let later = code(&alice.secret, stale.clock.now());
    let refused = with_access(
        &stale,
        Method::DELETE,
        path,
        &access,
        json!({"code": later}),
    )
    .await;
    assert_error(&refused, 401, "insufficient_user_authentication");

    next_step(&app);
    let fresh = code(&alice.secret, app.clock.now());
    let removed = with_access(&app, Method::DELETE, path, &access, json!({"code": fresh})).await;
    assert_eq!(removed.status(), 200, "{}", body_json(&removed));
    assert_eq!(store.get_factor(&alice.user.id).await.unwrap(), None);
    let user = store.get(&alice.user.username).await.unwrap().unwrap();
    assert!(!user.second_factor);
    assert_eq!(password_login(&app, "alice-remove").await.status(), 200);
    assert!(
        mail_kinds(&store)
            .await
            .contains(&"second_factor_removed".to_owned())
    );
    // And a new enrolment may begin.
    let begun = second_factor::handle(
        &app.second_factor(),
        request("second-factor.json", Some(&bearer(&access)), None),
    )
    .await;
    assert_eq!(begun.status(), 201, "{}", body_json(&begun));
}

/// New recovery codes need a fresh login and a code: the old ones stop
/// working, the new ones work once, and the owner is told.
#[tokio::test]
async fn new_recovery_codes_replace_the_old_ones() {
    use lambda_http::http::Method;
    let store = fresh_store().await;
    let app = App::with_clock(&store, Clock::manual(mid_step()));
    let alice = enrolled(&app, "alice-codes-new").await;
    crate::matrix::verify_directly(&store, "alice-codes-new", "alice-new@example.com").await;
    let access = signed_in(&app, "alice-codes-new", &alice.secret).await;
    let path = "/account/second-factor/recovery-codes";
    let wrong = with_access(&app, Method::POST, path, &access, json!({"code": "000000"})).await;
    assert_error(&wrong, 400, "invalid_code");
    // A recovery code proves it too (and is spent with the rest).
    let replaced = with_access(
        &app,
        Method::POST,
        path,
        &access,
        json!({"recovery_code": alice.recovery[0]}),
    )
    .await;
    assert_eq!(replaced.status(), 200, "{}", body_json(&replaced));
    let new: Vec<String> = body_json(&replaced)["recovery_codes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c.as_str().unwrap().to_owned())
        .collect();
    assert_eq!(new.len(), 10);
    assert!(
        mail_kinds(&store)
            .await
            .contains(&"recovery_codes_replaced".to_owned())
    );
    let token = mfa_token(&app, "alice-codes-new").await;
    let old = with_recovery(&app, &token, &alice.recovery[1]).await;
    assert_error(&old, 400, "invalid_code");
    let fresh = with_recovery(&app, &token, &new[0]).await;
    assert_eq!(fresh.status(), 200, "{}", body_json(&fresh));
}

/// RFC 9470's step up. Deleting an account with a second factor needs a
/// fresh login and the second factor proved since: a password
/// re-authentication is a proof of its own (`aal1`), so the deletion
/// answers the challenge (`acr_values="aal2"`, `max_age`); a code at
/// `/account/second-factor/verify` (itself within a fresh login) steps the
/// same session up without renewing `auth_time` (its refreshes carry it
/// on), and the deletion then goes through, until the password's proof is
/// older than the fresh-login window.
#[tokio::test]
async fn deleting_an_account_with_a_second_factor_needs_a_step_up() {
    use lambda_http::http::Method;
    let store = fresh_store().await;
    let app = App::with_clock(&store, Clock::manual(mid_step()));
    let alice = enrolled(&app, "alice-step").await;
    let access = signed_in(&app, "alice-step", &alice.secret).await;
    let reauth = request(
        "reauthenticate.json",
        Some(&bearer(&access)),
        Some(&json!({"password": PASSWORD}).to_string()),
    );
    let reauthed = auth::handlers::account::handle(&app.account(), reauth).await;
    assert_eq!(reauthed.status(), 200, "{}", body_json(&reauthed));
    let password_time = app.clock.now();
    let password_only = body_json(&reauthed)["access_token"]
        .as_str()
        .unwrap()
        .to_owned();
    let claims = verifier().verify(&password_only).await.unwrap();
    assert_eq!(
        (claims.amr, claims.acr.as_deref()),
        (vec!["pwd".to_owned()], Some("aal1"))
    );

    let delete = |access: &str| {
        let req = request(
            "delete-account.json",
            Some(&bearer(access)),
            Some(&json!({"password": PASSWORD}).to_string()),
        );
        let state = app.account();
        async move { auth::handlers::account::handle(&state, req).await }
    };
    let challenged = delete(&password_only).await;
    assert_error(&challenged, 401, "insufficient_user_authentication");
    let challenge = challenged.headers()["www-authenticate"].to_str().unwrap();
    assert!(challenge.contains("acr_values=\"aal2\""), "{challenge}");
    assert!(challenge.contains("max_age=600"), "{challenge}");

    let path = "/account/second-factor/verify";
    // A step up needs a fresh login itself: a stolen, stale token cannot
    // even guess.
    let stale_clock = App::with_clock(&store, Clock::manual(app.clock.now() + 601));
    let refused = with_access(
        &stale_clock,
        Method::POST,
        path,
        &password_only,
        json!({"code": code(&alice.secret, stale_clock.clock.now())}),
    )
    .await;
    assert_error(&refused, 401, "insufficient_user_authentication");
    let wrong = with_access(
        &app,
        Method::POST,
        path,
        &password_only,
        json!({"code": "000000"}),
    )
    .await;
    assert_error(&wrong, 400, "invalid_code");
    next_step(&app);
    let right = code(&alice.secret, app.clock.now());
    let stepped = with_access(
        &app,
        Method::POST,
        path,
        &password_only,
        json!({"code": right}),
    )
    .await;
    assert_eq!(stepped.status(), 200, "{}", body_json(&stepped));
    let stepped_up = body_json(&stepped)["access_token"]
        .as_str()
        .unwrap()
        .to_owned();
    let claims = verifier().verify(&stepped_up).await.unwrap();
    assert_eq!(claims.amr, ["pwd", "otp", "mfa"]);
    assert_eq!(claims.acr.as_deref(), Some("aal2"));
    // A code renews no freshness: auth_time stays the password's.
    assert_eq!(claims.auth_time, password_time);
    assert_eq!(claims.sid, crate::session_list::sid_of(&password_only));
    // The same code again: spent.
    let again = with_access(
        &app,
        Method::POST,
        path,
        &password_only,
        json!({"code": right}),
    )
    .await;
    assert_error(&again, 400, "invalid_code");
    // The session says it from now on: its stored proof is the step up's.
    let session = store.get_session(&claims.sid).await.unwrap().unwrap();
    assert_eq!(
        (session.auth_time, session.amr.clone()),
        (password_time, claims.amr.clone())
    );

    // Past the window, stepped up or not, the challenge again.
    let later = App::with_clock(&store, Clock::manual(app.clock.now() + 601));
    let req = request(
        "delete-account.json",
        Some(&bearer(&stepped_up)),
        Some(&json!({"password": PASSWORD}).to_string()),
    );
    let stale = auth::handlers::account::handle(&later.account(), req).await;
    assert_error(&stale, 401, "insufficient_user_authentication");
    let deleted = delete(&stepped_up).await;
    assert_eq!(deleted.status(), 200, "{}", body_json(&deleted));
    assert_eq!(store.get_factor(&alice.user.id).await.unwrap(), None);
}

/// A person who lost the device and every recovery code: an admin (a
/// fresh login, the role) removes the factor through the admin API, which
/// ends every session of the user, tells the owner and says so in its
/// audit; never an admin's own (a code's to do), and 409 for a user with
/// none.
#[tokio::test]
async fn an_admin_removes_a_lost_second_factor_and_every_session_ends() {
    use lambda_http::http::Method;
    let store = fresh_store().await;
    let app = App::with_clock(&store, Clock::manual(mid_step()));
    let alice = enrolled(&app, "alice-lost").await;
    crate::matrix::verify_directly(&store, "alice-lost", "alice-lost@example.com").await;
    let alices = signed_in(&app, "alice-lost", &alice.secret).await;
    crate::permissions::admin_in(&store, "chief-lost").await;
    let chief = crate::sessions::session(&app, "chief-lost").await.access;
    let admin = |path: &str| {
        let mut req = request("admin-user.json", Some(&bearer(&chief)), None);
        *req.method_mut() = Method::DELETE;
        *req.uri_mut() = path.parse().unwrap();
        let state = app.admin();
        async move { auth::handlers::admin::handle(&state, req).await }
    };
    let (logs, _guard) = capture_logs();
    let removed = admin("/admin/users/alice-lost/second-factor").await;
    assert_eq!(removed.status(), 200, "{}", body_json(&removed));
    assert_eq!(body_json(&removed)["user"]["second_factor"], false);
    assert_eq!(store.get_factor(&alice.user.id).await.unwrap(), None);
    assert!(
        mail_kinds(&store)
            .await
            .contains(&"second_factor_removed".to_owned())
    );
    assert!(
        logs.lines()
            .iter()
            .any(|l| l["fields"]["action"] == "remove_second_factor"
                && l["fields"]["outcome"] == "done"),
        "{}",
        logs.text()
    );
    // Alice's session is over; her password alone signs in now.
    let ended = auth::handlers::get_name::handle(
        &app.get_name(),
        request("get-name.json", Some(&bearer(&alices)), None),
    )
    .await;
    assert_error(&ended, 401, "invalid_token");
    assert_eq!(password_login(&app, "alice-lost").await.status(), 200);
    // None left: 409. An admin's own: never.
    let none = admin("/admin/users/alice-lost/second-factor").await;
    assert_error(&none, 409, "conflict");
    let own = admin("/admin/users/chief-lost/second-factor").await;
    assert_error(&own, 403, "forbidden");
}

/// With `admin` needing a second factor (a deployment's default,
/// `SECOND_FACTOR_ROLES`): a password-only session's token carries no
/// `admin` scope and the admin API answers RFC 9470's challenge (an admin
/// without a factor is told to add one); a session that signed in with a
/// code acts, and so does its refresh; a password-only session acts once
/// it steps up, within the fresh-login window only.
#[tokio::test]
async fn the_admin_role_needs_a_second_factor() {
    use auth::permissions::Role;
    use lambda_http::http::Method;
    let store = fresh_store().await;
    let app = App::with_clock(&store, Clock::manual(mid_step())).guarded();
    add_user(&store, "plain-guard", "Plain", PASSWORD).await;
    let look_up = |app: &App, access: &str| {
        let mut req = request("admin-user.json", Some(&bearer(access)), None);
        *req.uri_mut() = "/admin/users/plain-guard".parse().unwrap();
        let state = app.admin();
        async move { auth::handlers::admin::handle(&state, req).await }
    };
    let scope_of = async |access: &str| verifier().verify(access).await.unwrap().scope;
    let challenged = |response: &Response<Body>| {
        let json = assert_error(response, 401, "insufficient_user_authentication");
        let challenge = response.headers()["www-authenticate"].to_str().unwrap();
        assert!(challenge.contains("acr_values=\"aal2\""), "{challenge}");
        assert!(challenge.contains("max_age=600"), "{challenge}");
        json["message"].as_str().unwrap().to_owned()
    };

    // An admin without a factor: no admin scope, and told to add one.
    let bare = add_user(&store, "chief-bare", "Bare", PASSWORD).await;
    store.grant_role(&bare, &Role::admin()).await.unwrap();
    let bare_access = access_of(&app, "chief-bare").await;
    assert_eq!(scope_of(&bare_access).await, None);
    let told = challenged(&look_up(&app, &bare_access).await);
    assert!(told.contains("has none"), "{told}");

    // An admin with one, signed in with the password and a code.
    let chief = enrolled(&app, "chief-guard").await;
    store.grant_role(&chief.user, &Role::admin()).await.unwrap();
    next_step(&app);
    let token = mfa_token(&app, "chief-guard").await;
    let signed = with_code(&app, &token, &code(&chief.secret, app.clock.now())).await;
    let tokens = crate::sessions::Tokens::from(&signed);
    assert_eq!(scope_of(&tokens.access).await.as_deref(), Some("admin"));
    let found = look_up(&app, &tokens.access).await;
    assert_eq!(found.status(), 200, "{}", body_json(&found));
    let refreshed =
        crate::sessions::Tokens::from(&crate::sessions::do_refresh(&app, &tokens.refresh).await);
    assert_eq!(scope_of(&refreshed.access).await.as_deref(), Some("admin"));
    assert_eq!(look_up(&app, &refreshed.access).await.status(), 200);
    // Past the fresh-login window: the challenge again.
    let later = App::with_clock(&store, Clock::manual(app.clock.now() + 601)).guarded();
    challenged(&look_up(&later, &tokens.access).await);

    // A password-only proof of the same admin (a reauthentication): no
    // admin scope and the challenge, until a code steps the session up.
    let reauth = request(
        "reauthenticate.json",
        Some(&bearer(&tokens.access)),
        Some(&json!({"password": PASSWORD}).to_string()),
    );
    let reauthed = auth::handlers::account::handle(&app.account(), reauth).await;
    assert_eq!(reauthed.status(), 200, "{}", body_json(&reauthed));
    let password_only = body_json(&reauthed)["access_token"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(scope_of(&password_only).await, None);
    let told = challenged(&look_up(&app, &password_only).await);
    assert!(told.contains("/account/second-factor/verify"), "{told}");
    next_step(&app);
    let stepped = with_access(
        &app,
        Method::POST,
        "/account/second-factor/verify",
        &password_only,
        json!({"code": code(&chief.secret, app.clock.now())}),
    )
    .await;
    assert_eq!(stepped.status(), 200, "{}", body_json(&stepped));
    let stepped_up = body_json(&stepped)["access_token"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(scope_of(&stepped_up).await.as_deref(), Some("admin"));
    assert_eq!(look_up(&app, &stepped_up).await.status(), 200);
    // The factor removed: the token still says aal2 (until it expires),
    // but the account has none now.
    next_step(&app);
    let removed = with_access(
        &app,
        Method::DELETE,
        "/account/second-factor",
        &stepped_up,
        json!({"code": code(&chief.secret, app.clock.now())}),
    )
    .await;
    assert_eq!(removed.status(), 200, "{}", body_json(&removed));
    let told = challenged(&look_up(&app, &stepped_up).await);
    assert!(told.contains("has none"), "{told}");
    // And the session's refreshes carry the role no more: its proof was
    // of a factor the account no longer has.
    let after =
        crate::sessions::Tokens::from(&crate::sessions::do_refresh(&app, &refreshed.refresh).await);
    assert_eq!(scope_of(&after.access).await, None);

    // A deployment that leaves admin out of SECOND_FACTOR_ROLES: the
    // password alone opens the admin API.
    let open = App::with_clock(&store, app.clock.clone());
    let bare_open = access_of(&open, "chief-bare").await;
    assert_eq!(scope_of(&bare_open).await.as_deref(), Some("admin"));
    assert_eq!(look_up(&open, &bare_open).await.status(), 200);
}
