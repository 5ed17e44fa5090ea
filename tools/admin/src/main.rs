//! Operator CLI for the user table and local keys. Reads the same variables as
//! the functions (`TABLE_NAME`, `BCRYPT_COST`, the standard AWS ones). Passwords
//! come from standard input, never from the command line, where `ps` would show them.
//!
//!   auth-admin create-table
//!   auth-admin create-user <username> <name> [--inactive] [--if-missing]   (password on stdin)
//!   auth-admin show <username | user id>   (a user id, as the logs name users: no scan)
//!   auth-admin set-password <username>   (password on stdin: every session ends, a lockout too)
//!   auth-admin deactivate <username> | activate <username> | delete <username>
//!   auth-admin unlock <username>   (forget failed logins: ends a lockout)
//!   auth-admin remove-second-factor <username>   (a lost device and codes: every session ends)
//!   auth-admin grant <username> <role> | revoke <username> <role>
//!     (the break-glass for roles: works when no admin is left to use the admin API)
//!   auth-admin generate-key <private.pem> <public.pem>   (a local RS256 key pair)
//!   auth-admin list-keys | rotate-keys | revoke-key <kid> | revoke-keys-made-before <unix time>
//!     (sealed mode's issuer keys: `JWT_SIGNING_KEY=sealed:<sealing key>`; with
//!     `ROTATE_KEYS_FUNCTION`, the runs go to the stack's rotation function, the
//!     only role that may seal: docs/operations.md)

use std::io::{BufRead, IsTerminal};
use std::process::ExitCode;

use auth::aws::{SdkSettings, sdk_config_loader};
use auth::config::{Environment, StoreConfig, TokenConfig};
use auth::issuer_keys::signing_key;
use auth::key_set::KeySettings;
use auth::keys::{generate_pem_pair, public_key_from_pem};
use auth::passwords::{BcryptCost, PasswordHasher, check_new_password};
use auth::permissions::{PermissionConfig, Role};
use auth::rotation::{Rotated, Rotation, RotationConfig, RotationEvent};
use auth::store::{DeletedBy, RoleGrant, Store, StoreError, create_table, dynamodb_client};
use auth::users::{User, UserId, Username, display_name};

const USAGE: &str = "usage:
  auth-admin create-table
  auth-admin create-user <username> <name> [--inactive] [--if-missing]   (password on stdin)
  auth-admin show <username | user id>
  auth-admin set-password <username>                (password on stdin; every session ends)
  auth-admin activate <username>
  auth-admin deactivate <username>
  auth-admin delete <username>
  auth-admin unlock <username>
  auth-admin remove-second-factor <username>        (every session ends; verify the person first)
  auth-admin grant <username> <role>     (a role of ROLES; admin always)
  auth-admin revoke <username> <role>
  auth-admin generate-key <private.pem> <public.pem>
  auth-admin list-keys
  auth-admin rotate-keys                            (a rotation run, now)
  auth-admin revoke-key <kid>                       (at once; a new key signs if it was signing)
  auth-admin revoke-keys-made-before <unix time>    (every key made before then)";

#[tokio::main]
async fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match run(&args).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("auth-admin: {message}");
            ExitCode::FAILURE
        }
    }
}

async fn run(args: &[String]) -> Result<(), String> {
    let (command, rest) = args.split_first().ok_or(USAGE)?;
    if command == "generate-key" {
        return generate_key(rest);
    }
    let config = StoreConfig::from_source(&Environment).map_err(|e| e.to_string())?;
    let settings = SdkSettings::from_source(&Environment).map_err(|e| e.to_string())?;
    // The full provider chain: an operator may use profiles or SSO.
    let client = dynamodb_client(&sdk_config_loader(&settings).load().await);
    let users = Store::new(client.clone(), config.table_name.clone());
    let username = |i: usize| -> Result<Username, String> {
        Username::parse(rest.get(i).ok_or(USAGE)?).map_err(|e| e.to_string())
    };
    if command.ends_with("-keys") || command == "revoke-key" {
        let sdk = sdk_config_loader(&settings).load().await;
        // A run makes RSA keys on a function that may start cold: its own
        // bounds, past the function's timeout, and never sent twice (a
        // second send could start a second run).
        let mut lambda = aws_sdk_lambda::config::Builder::from(&sdk)
            .timeout_config(
                aws_sdk_lambda::config::timeout::TimeoutConfig::builder()
                    .operation_attempt_timeout(std::time::Duration::from_secs(120))
                    .operation_timeout(std::time::Duration::from_secs(120))
                    .build(),
            )
            .retry_config(aws_sdk_lambda::config::retry::RetryConfig::disabled());
        if let Some(url) = auth::aws::endpoint_override("LAMBDA") {
            lambda = lambda.endpoint_url(url);
        }
        let lambda = aws_sdk_lambda::Client::from_conf(lambda.build());
        return keys(command, rest, users, auth::aws::kms_client(&sdk), lambda).await;
    }
    match command.as_str() {
        "create-table" => {
            create_table(&client, &config.table_name)
                .await
                .map_err(|e| e.to_string())?;
            println!("table {} is ready", config.table_name);
        }
        "create-user" => {
            let username = username(0)?;
            let name = display_name(rest.get(1).ok_or(USAGE)?)?;
            let flags = &rest[2..];
            if let Some(unknown) = flags
                .iter()
                .find(|f| !["--inactive", "--if-missing"].contains(&f.as_str()))
            {
                return Err(format!("unknown option {unknown}\n{USAGE}"));
            }
            if flags.iter().any(|f| f == "--if-missing")
                && users
                    .get(&username)
                    .await
                    .map_err(|e| e.to_string())?
                    .is_some()
            {
                println!("user {username} exists already");
                return Ok(());
            }
            let hash = new_hash(&username).await?;
            let mut user = User::new(username, name, hash);
            user.active = !flags.iter().any(|f| f == "--inactive");
            match users.create(&user).await {
                Ok(()) => println!("created user {} ({})", user.username, user.id),
                Err(StoreError::AlreadyExists) => {
                    return Err(format!("user {} exists already", user.username));
                }
                Err(e) => return Err(e.to_string()),
            }
        }
        "show" => {
            let raw = rest.first().ok_or(USAGE)?;
            // A user id as the logs write it (36 characters, hyphenated) is
            // never a username (32 at most).
            let id = (raw.len() == 36).then(|| UserId::parse(raw)).flatten();
            let user = match id {
                Some(id) => users
                    .get_by_id(id)
                    .await
                    .map_err(|e| e.to_string())?
                    .ok_or_else(|| format!("no user with id {id}"))?,
                None => existing(&users, &username(0)?).await?,
            };
            let now = auth::clock::system_now();
            let locked_for = users
                .failures(&user.username)
                .await
                .map_err(|e| e.to_string())?
                .and_then(|f| f.locked_for(now));
            let roles: Vec<String> = user.roles.iter().map(Role::to_string).collect();
            println!("id          {}", user.id);
            println!("username    {}", user.username);
            println!("name        {}", user.name);
            println!("active      {}", user.active);
            println!("roles       {}", roles.join(" "));
            let address = |email: &Option<auth::email::Email>| {
                email.as_ref().map_or("none".to_owned(), |e| e.to_string())
            };
            println!("email       {} (verified)", address(&user.email));
            println!("pending     {}", address(&user.email_pending));
            println!(
                "password    {}",
                if user.has_password() {
                    "yes"
                } else {
                    "none (made through an identity provider)"
                }
            );
            for id in &user.identities {
                println!("identity    {} {}", id.issuer, id.subject);
            }
            println!(
                "2nd factor  {}",
                if user.second_factor { "yes" } else { "no" }
            );
            println!("passkeys    {}", user.passkeys.len());
            println!("created_at  {}", user.created_at);
            match locked_for {
                Some(seconds) => println!("locked      for {seconds} s more (unlock ends it)"),
                None => println!("locked      no"),
            }
        }
        "set-password" => {
            let user = existing(&users, &username(0)?).await?;
            let hash = new_hash(&user.username).await?;
            match users
                .set_password(&user, &hash, auth::clock::system_now())
                .await
            {
                Ok(()) => {}
                Err(StoreError::Conflict) => {
                    return Err(format!(
                        "user {} was deleted, registered anew or changed their passkeys meanwhile; nothing changed",
                        user.username
                    ));
                }
                // Its answer may have been lost with the write done: read back.
                Err(e @ StoreError::Unavailable(_)) => match users.get(&user.username).await {
                    Ok(Some(now))
                        if now.id == user.id
                            && now.password_hash == hash
                            && now.session_epoch > user.session_epoch => {}
                    Ok(_) => return Err(format!("{e}; nothing was changed")),
                    Err(read) => {
                        return Err(format!(
                            "{e}, and reading it back failed too ({read}): the password may or may not be set; run set-password again"
                        ));
                    }
                },
                Err(e) => return Err(e.to_string()),
            }
            println!(
                "the password of {} is set: every session and device proof ended, failed logins forgotten",
                user.username
            );
        }
        "activate" | "deactivate" => {
            let user = existing(&users, &username(0)?).await?;
            let username = &user.username;
            let active = command == "activate";
            if !users
                .set_active(&user, active)
                .await
                .map_err(|e| e.to_string())?
            {
                return Err(format!("no user {username}"));
            }
            println!(
                "user {username} is {}",
                if active { "active" } else { "inactive" }
            );
        }
        "remove-second-factor" => {
            let user = existing(&users, &username(0)?).await?;
            // The code factor and the passkeys: whatever the person lost.
            if !user.has_second_factor() {
                return Err(format!("user {} has no second factor", user.username));
            }
            let done = users
                .remove_factor_by_operator(&user, auth::clock::system_now())
                .await
                .map_err(|e| e.to_string())?;
            if !done {
                return Err(format!(
                    "user {} was deleted or registered anew meanwhile; nothing changed",
                    user.username
                ));
            }
            println!(
                "the second factor of {} is removed: every session and device proof ended, the owner told; the password alone signs in",
                user.username
            );
        }
        "unlock" => {
            let username = username(0)?;
            users
                .clear_failures(&username)
                .await
                .map_err(|e| e.to_string())?;
            println!("failed logins of {username} are forgotten: it can log in again");
        }
        "delete" => {
            // The path the API's deletions take: the user item and the
            // username's attempt record, in one transaction.
            let user = existing(&users, &username(0)?).await?;
            match users.delete_user(&user, DeletedBy::Operator).await {
                Ok(()) => {}
                Err(StoreError::Conflict) => {
                    return Err(format!(
                        "user {} was deleted or registered anew meanwhile; nothing deleted",
                        user.username
                    ));
                }
                Err(e) => return Err(e.to_string()),
            }
            println!("user {} is deleted", user.username);
        }
        "grant" | "revoke" => {
            let user = existing(&users, &username(0)?).await?;
            let raw = rest.get(1).ok_or(USAGE)?;
            let permissions =
                PermissionConfig::from_source(&Environment).map_err(|e| e.to_string())?;
            let (role, done) = if command == "grant" {
                let role = permissions.known_role(raw)?;
                let done = match users
                    .grant_role(&user, &role)
                    .await
                    .map_err(|e| e.to_string())?
                {
                    RoleGrant::Granted => true,
                    RoleGrant::TooManyRoles => {
                        return Err(format!(
                            "{} holds the most roles one user may hold",
                            user.username
                        ));
                    }
                    RoleGrant::Gone => false,
                };
                (role, done)
            } else {
                let role = Role::parse(raw).map_err(|e| e.to_string())?;
                let done = users
                    .revoke_role(&user, &role)
                    .await
                    .map_err(|e| e.to_string())?;
                (role, done)
            };
            if !done {
                return Err(format!("no user {}", user.username));
            }
            if command == "grant" {
                println!(
                    "user {} holds the role {role}: in access tokens issued from now on",
                    user.username
                );
            } else {
                println!(
                    "user {} no longer holds the role {role}: at once on this API; outside verifiers accept tokens that carry it until they expire",
                    user.username
                );
            }
        }
        _ => return Err(USAGE.into()),
    }
    Ok(())
}

/// Sealed mode's issuer keys: list, rotate now, revoke.
async fn keys(
    command: &str,
    rest: &[String],
    store: Store,
    kms: aws_sdk_kms::Client,
    lambda: aws_sdk_lambda::Client,
) -> Result<(), String> {
    let now = auth::clock::system_now();
    if command == "list-keys" {
        let mut records = store.keys().await.map_err(|e| e.to_string())?;
        records.sort_by_key(|r| (r.sign_from, r.created_at));
        let signing = signing_key(&records, now).map(|r| r.kid.clone());
        println!("kid  created_at  sign_from  sign_until  verify_until  state");
        for r in &records {
            let state = match r.revoked_at {
                Some(at) => format!("revoked at {at}"),
                None if signing.as_deref() == Some(r.kid.as_str()) => "signing".into(),
                None if r.sign_from > now => "published, waiting".into(),
                None if r.verifies_at(now) => "retired, verifying".into(),
                None => "dead".into(),
            };
            println!(
                "{}  {}  {}  {}  {}  {state}",
                r.kid, r.created_at, r.sign_from, r.sign_until, r.verify_until
            );
        }
        return Ok(());
    }
    let event = match command {
        "rotate-keys" => RotationEvent::default(),
        "revoke-key" => RotationEvent {
            revoke: vec![rest.first().ok_or(USAGE)?.clone()],
            ..RotationEvent::default()
        },
        "revoke-keys-made-before" => RotationEvent {
            revoke_made_before: Some(
                rest.first()
                    .ok_or(USAGE)?
                    .parse()
                    .map_err(|_| format!("not a unix time\n{USAGE}"))?,
            ),
            ..RotationEvent::default()
        },
        _ => return Err(USAGE.into()),
    };
    let refresh = KeySettings::from_source(&Environment)
        .map_err(|e| e.to_string())?
        .refresh;
    let done = match std::env::var("ROTATE_KEYS_FUNCTION") {
        // Deployed: only the rotation function may seal the keys a run
        // makes, so the event goes to it, and it runs with the stack's own
        // schedule settings.
        Ok(function) if !function.trim().is_empty() => {
            invoke_rotation(lambda, function.trim(), &event).await?
        }
        _ => {
            let tokens = TokenConfig::from_source(&Environment).map_err(|e| e.to_string())?;
            let config =
                RotationConfig::from_source(&Environment, &tokens).map_err(|e| e.to_string())?;
            // A run seals new keys: refuse before a revocation could leave
            // no key to sign.
            auth::issuer_keys::can_seal(&kms, &config.sealing_key)
                .await
                .map_err(|e| {
                    format!(
                        "cannot seal with {} ({e}). On a deployed stack only the rotation function may: \
                         set ROTATE_KEYS_FUNCTION to its name (the stack's RotateKeysFunctionName output) \
                         and run this again (docs/operations.md#key-rotation); nothing was changed",
                        config.sealing_key
                    )
                })?;
            let rotation = Rotation { store, kms, config };
            rotation
                .handle(&event, now)
                .await
                .map_err(|e| e.to_string())?
        }
    };
    for kid in &done.revoked {
        println!("revoked {kid}");
    }
    let skipped: Vec<&String> = event
        .revoke
        .iter()
        .filter(|k| !done.revoked.contains(k))
        .collect();
    println!(
        "created {:?}, extended {:?}, deleted {:?}",
        done.created, done.extended, done.deleted
    );
    if !skipped.is_empty() {
        return Err(format!(
            "no live key {skipped:?} (unknown, or revoked already): not revoked"
        ));
    }
    if !done.revoked.is_empty() {
        println!(
            "our functions refuse the revoked keys within {} s (JWT_KEYS_REFRESH_SECONDS); outside verifiers once their JWKS cache expires (up to an hour for API Gateway's JWT authorizer)",
            refresh.as_secs()
        );
    }
    Ok(())
}

/// `event` sent to the rotation function `function` (its name or ARN); its
/// answer. A failed run is an error with the function's own message.
async fn invoke_rotation(
    lambda: aws_sdk_lambda::Client,
    function: &str,
    event: &RotationEvent,
) -> Result<Rotated, String> {
    let payload = serde_json::to_vec(event).map_err(|e| e.to_string())?;
    let answer = lambda
        .invoke()
        .function_name(function)
        .payload(aws_sdk_lambda::primitives::Blob::new(payload))
        .send()
        .await
        .map_err(|e| {
            format!(
                "cannot invoke {function}: {} (it may have run all the same: see list-keys)",
                auth::aws::describe(&e)
            )
        })?;
    let body = answer.payload().map(|p| p.as_ref()).unwrap_or_default();
    if let Some(error) = answer.function_error() {
        return Err(format!(
            "the rotation failed ({error}): {}",
            String::from_utf8_lossy(body)
        ));
    }
    serde_json::from_slice(body).map_err(|e| format!("the rotation's answer: {e}"))
}

/// The user of `username`, or an error naming it.
async fn existing(users: &Store, username: &Username) -> Result<User, String> {
    users
        .get(username)
        .await
        .map_err(|e| e.to_string())?
        .ok_or_else(|| format!("no user {username}"))
}

/// Writes a new RS256 key pair: the private key readable by its owner only.
fn generate_key(paths: &[String]) -> Result<(), String> {
    let [private_path, public_path] = paths else {
        return Err(USAGE.into());
    };
    let (private, public) = generate_pem_pair().map_err(|e| e.to_string())?;
    write_private(private_path, &private)?;
    std::fs::write(public_path, &public).map_err(|e| format!("{public_path}: {e}"))?;
    let kid = public_key_from_pem(&public, public_path)
        .map_err(|e| e.to_string())?
        .kid;
    println!("wrote {private_path} and {public_path} (kid {kid})");
    Ok(())
}

fn write_private(path: &str, pem: &str) -> Result<(), String> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map_err(|e| format!("{path}: {e}"))?;
    file.write_all(pem.as_bytes())
        .map_err(|e| format!("{path}: {e}"))
}

/// A hash of the password on standard input, once the policy allows it.
async fn new_hash(username: &Username) -> Result<String, String> {
    let password = read_password()?;
    check_new_password(&password, username).map_err(|e| e.to_string())?;
    let cost = BcryptCost::from_source(&Environment).map_err(|e| e.to_string())?;
    PasswordHasher::new(cost)
        .hash(password)
        .await
        .map_err(|e| e.to_string())
}

fn read_password() -> Result<String, String> {
    let terminal = std::io::stdin().is_terminal();
    // Typed at a terminal: not shown (stty acts on the terminal it is given).
    let echo = |on: bool| {
        let _ = std::process::Command::new("stty")
            .arg(if on { "echo" } else { "-echo" })
            .stdin(std::process::Stdio::inherit())
            .status();
    };
    if terminal {
        eprint!("password: ");
        echo(false);
    }
    let mut line = String::new();
    let read = std::io::stdin().lock().read_line(&mut line);
    if terminal {
        echo(true);
        eprintln!();
    }
    read.map_err(|e| format!("cannot read the password: {e}"))?;
    let password = line.trim_end_matches(['\r', '\n']).to_owned();
    if password.is_empty() {
        return Err("the password must not be empty".into());
    }
    Ok(password)
}
