//! Embeds every shipped profile (profiles/*.toml, hardware/*.toml) into the binary, so that
//! `--model glam-tiny` and `--hardware tpu-v4` work from any directory.
use std::{env, fs, path::Path};

fn embed(dir: &str, out: &mut String, konst: &str) {
    println!("cargo:rerun-if-changed={dir}");
    let mut entries: Vec<_> = fs::read_dir(dir)
        .map(|rd| rd.filter_map(|e| e.ok()).map(|e| e.path()).collect())
        .unwrap_or_default();
    entries.retain(|p| p.extension().is_some_and(|x| x == "toml"));
    entries.sort();
    out.push_str(&format!("pub const {konst}: &[(&str, &str)] = &[\n"));
    for p in entries {
        println!("cargo:rerun-if-changed={}", p.display());
        let name = p.file_stem().unwrap().to_string_lossy().to_string();
        // The path from the crate's root as it is compiled, not as this script last ran: a target
        // folder shared by two checkouts then reads each one's own files.
        let rel = format!("/{}", p.display());
        out.push_str(&format!(
            "    ({name:?}, include_str!(concat!(env!(\"CARGO_MANIFEST_DIR\"), {rel:?}))),\n"
        ));
    }
    out.push_str("];\n");
}

fn main() {
    let mut out = String::new();
    embed("profiles", &mut out, "MODEL_PROFILES");
    embed("hardware", &mut out, "HARDWARE_PROFILES");
    let dest = Path::new(&env::var("OUT_DIR").unwrap()).join("embedded_profiles.rs");
    fs::write(dest, out).unwrap();
}
