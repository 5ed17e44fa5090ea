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
use zeroize::Zeroizing;

use crate::support::race::{race, racing, statuses};
use crate::support::*;

const PASSWORD: &str = "correct horse battery staple";

/// A moment 10 s into a step, some 400 s ago: codes of this step stay
/// this step's for a while, racers' clocks (a second apart) included, and
/// the tests' clocks may move on ten minutes before the tokens they sign
/// are ahead of the verifier's (the system's) clock.
fn mid_step() -> i64 {
    ((auth::clock::system_now() - 400) / STEP_SECONDS) * STEP_SECONDS + 10
}

/// The RFC 4648 base32 an enrolment answers, back to bytes.
fn secret_from(base32: &str) -> TotpSecret {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";
    let (mut bits, mut value, mut bytes) = (0u32, 0u64, Vec::new());
    for c in base32.trim_end_matches('=').bytes() {
        let index = ALPHABET.iter().position(|a| *a == c).expect("base32");
        value = (value << 5) | index as u64;
        bits += 5;
        if bits >= 8 {
            bits -= 8;
            bytes.push((value >> bits) as u8);
            value &= (1 << bits) - 1;
        }
    }
    TotpSecret::from_bytes(Zeroizing::new(bytes)).expect("a 160-bit secret")
}

fn code(secret: &TotpSecret, now: i64) -> String {
    secret.code_at(step_of(now)).unwrap().expose().to_owned()
}

async fn password_login(app: &App, username: &str) -> Response<Body> {
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

async fn with_code(app: &App, token: &str, code: &str) -> Response<Body> {
    second_step(app, json!({"mfa_token": token, "code": code})).await
}

async fn with_recovery(app: &App, token: &str, code: &str) -> Response<Body> {
    second_step(app, json!({"mfa_token": token, "recovery_code": code})).await
}

/// A signed-in user with an active factor: its secret and recovery codes.
struct Enrolled {
    user: User,
    secret: TotpSecret,
    recovery: Vec<String>,
}

/// A user whose password login gives tokens, enrolled through the routes.
async fn enrolled(app: &App, username: &str) -> Enrolled {
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
    // Not active until a code confirms it: the password alone still signs in.
    assert_eq!(password_login(app, username).await.status(), 200);

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
fn next_step(app: &App) {
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

/// One `mfa_token` and one right code, sent by racers at once: one signs
/// in; every other is refused as a token used up, or a code spent.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn racers_with_one_mfa_token_and_one_code_sign_in_once() {
    const RACERS: usize = 6;
    let store = fresh_store().await;
    let app = App::with_clock(&store, Clock::manual(mid_step()));
    let alice = enrolled(&app, "alice-race").await;
    next_step(&app);
    for round in 0..3 {
        app.clock.advance(STEP_SECONDS);
        let before = sessions(&app, &alice.user).await;
        let token = mfa_token(&app, "alice-race").await;
        let code = code(&alice.secret, app.clock.now());
        let mut requests = Vec::new();
        for racer in app.racers(RACERS).await {
            let (token, code) = (token.clone(), code.clone());
            requests.push(racing(
                async move { with_code(&racer, &token, &code).await },
            ));
        }
        let responses = race(requests).await;
        let won = responses.iter().filter(|r| r.status() == 200).count();
        assert_eq!(won, 1, "round {round}: {:?}", statuses(&responses));
        for lost in responses.iter().filter(|r| r.status() != 200) {
            let json = body_json(lost);
            assert!(
                ["invalid_mfa_token", "invalid_code", "conflict"]
                    .contains(&json["error"].as_str().unwrap()),
                "{json}"
            );
        }
        assert_eq!(sessions(&app, &alice.user).await, before + 1);
    }
}
