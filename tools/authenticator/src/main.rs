//! `authenticator STATE ORIGIN create|get`: the software authenticator as a
//! command, for the Python checks (the contract's passkeys): WebAuthn's
//! options (`{"publicKey": …}`, as the API gives them) on stdin, the
//! browser's answer on stdout, as `PublicKeyCredential.toJSON()` encodes
//! it, with ORIGIN in its client data. Its passkeys (test keys) are kept in
//! the STATE file between calls; `get` signs with the one the options allow,
//! else the first.

use std::process::ExitCode;

use auth_authenticator::{Authenticator, Behaviour};

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [state, origin, action] = args.as_slice() else {
        eprintln!("usage: authenticator STATE ORIGIN create|get < options.json");
        return ExitCode::from(2);
    };
    let saved = std::fs::read_to_string(state)
        .ok()
        .map(|text| serde_json::from_str(&text).expect("the state file is JSON"))
        .unwrap_or_else(|| serde_json::json!({"credentials": []}));
    let mut authenticator = Authenticator::restored(Behaviour::at(origin), &saved);
    let options: serde_json::Value =
        serde_json::from_reader(std::io::stdin()).expect("options (JSON) on stdin");
    let answer = match action.as_str() {
        "create" => authenticator.create(&options),
        "get" => {
            let allowed: Vec<&str> = options["publicKey"]["allowCredentials"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|c| c["id"].as_str())
                .collect();
            let index = authenticator
                .credentials
                .iter()
                .position(|c| allowed.is_empty() || allowed.contains(&c.id_text().as_str()))
                .expect("a passkey the options allow");
            authenticator.get(&options, index)
        }
        other => {
            eprintln!("{other}: create or get");
            return ExitCode::from(2);
        }
    };
    std::fs::write(state, authenticator.saved().to_string()).expect("the state file written");
    println!("{answer}");
    ExitCode::SUCCESS
}
