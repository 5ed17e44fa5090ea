//! Builds the page (`web/`, Vite) into OUT_DIR and writes `assets.rs`, the
//! table of its files that main.rs embeds: so `cargo build`, `cargo lambda
//! watch` and `sam build` all serve the page as it is in the source, with no
//! separate step to forget. `npm ci` runs first when `web/node_modules` is
//! missing (a fresh clone).

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;

fn main() {
    let manifest = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").unwrap());
    let web = manifest
        .join("../../web")
        .canonicalize()
        .expect("web/ beside functions/");
    let out = PathBuf::from(std::env::var("OUT_DIR").unwrap()).join("site");
    for input in [
        "src",
        "index.html",
        "package.json",
        "package-lock.json",
        "vite.config.ts",
        "tsconfig.json",
    ] {
        println!("cargo::rerun-if-changed={}", web.join(input).display());
    }

    // npm writes node_modules/.package-lock.json at every install: older than
    // package-lock.json means what is installed is not what the lock says.
    if modified(&web.join("node_modules/.package-lock.json"))
        < modified(&web.join("package-lock.json"))
    {
        // No package's install script runs (none needs one).
        run(Command::new("npm")
            .args(["ci", "--ignore-scripts", "--no-audit", "--no-fund"])
            .current_dir(&web));
    }
    run(Command::new(web.join("node_modules/.bin/vite"))
        .args(["build", "--emptyOutDir", "--logLevel", "warn", "--outDir"])
        .arg(&out)
        .current_dir(&web));

    let mut files = Vec::new();
    collect(&out, &out, &mut files);
    files.sort();
    // Each file with its precompressed copies (x.js.br, x.js.gz), if any.
    let copy = |path: &str| {
        files
            .iter()
            .find(|(p, _)| p == path)
            .map_or("None".to_owned(), |(_, file)| {
                format!("Some(include_bytes!({file:?}))")
            })
    };
    let mut table = String::from("static ASSETS: &[Asset] = &[\n");
    for (path, file) in &files {
        if path.ends_with(".br") || path.ends_with(".gz") {
            continue;
        }
        let (br, gzip) = (copy(&format!("{path}.br")), copy(&format!("{path}.gz")));
        writeln!(
            table,
            "    Asset {{ path: {path:?}, body: include_bytes!({file:?}), br: {br}, gzip: {gzip} }},"
        )
        .unwrap();
    }
    table.push_str("];\n");
    std::fs::write(out.parent().unwrap().join("assets.rs"), table).unwrap();
}

fn modified(path: &Path) -> Option<std::time::SystemTime> {
    std::fs::metadata(path).and_then(|m| m.modified()).ok()
}

/// npm and Vite get what they need from the environment and nothing else:
/// not the AWS credentials a `sam build` may run with.
fn run(command: &mut Command) {
    command.env_clear();
    for (name, value) in std::env::vars_os() {
        let name_str = name.to_string_lossy();
        let keep = [
            "PATH",
            "HOME",
            "TMPDIR",
            "CI",
            "SSL_CERT_FILE",
            "SSL_CERT_DIR",
        ]
        .contains(&name_str.as_ref())
            || name_str.starts_with("npm_config_")
            || name_str.starts_with("NPM_CONFIG_")
            || name_str.starts_with("NODE_")
            || name_str.to_ascii_lowercase().ends_with("_proxy");
        if keep {
            command.env(name, value);
        }
    }
    // Playwright (a dev dependency of web/) never downloads a browser here.
    let status = command
        .env("PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD", "1")
        .status()
        .unwrap_or_else(|e| {
            panic!("cannot run {command:?} (is Node.js 20.19+ with npm installed?): {e}")
        });
    assert!(status.success(), "{command:?} failed: {status}");
}

/// Every file under `dir`, as (its path under the site root, its absolute path).
fn collect(root: &Path, dir: &Path, files: &mut Vec<(String, String)>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            collect(root, &path, files);
        } else {
            let relative = path
                .strip_prefix(root)
                .unwrap()
                .to_str()
                .expect("UTF-8 file names");
            files.push((format!("/{relative}"), path.to_str().unwrap().to_owned()));
        }
    }
}
