//! Embeds the common-password list without the entries the length rules
//! refuse anyway (under 8 characters or over 72 bytes): the check is the same,
//! the functions that carry the list are smaller. The repo keeps the full list.

use std::io::Write;

fn main() {
    let source = "data/common-passwords.txt";
    println!("cargo:rerun-if-changed={source}");
    let list = std::fs::read_to_string(source).expect("data/common-passwords.txt");
    let kept: Vec<&str> = list
        .lines()
        .map(str::trim)
        .filter(|p| p.chars().count() >= 8 && p.len() <= 72)
        .collect();
    let out = std::path::Path::new(&std::env::var("OUT_DIR").unwrap()).join("common-passwords.txt");
    let mut file = std::fs::File::create(out).unwrap();
    for password in kept {
        writeln!(file, "{password}").unwrap();
    }
}
