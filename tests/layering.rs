//! The library's layers only point down: every `crate::` path in a top-level module names a module
//! listed before it in docs/architecture.md. The list is read from the doc, so the doc and the
//! code cannot drift apart.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::{Path, PathBuf};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The module names of docs/architecture.md's numbered layer list, bottom first.
fn documented_layers(doc: &str) -> Vec<String> {
    let section = doc
        .split("## Layers")
        .nth(1)
        .expect("docs/architecture.md has a '## Layers' section");
    let section = section.split("\n## ").next().unwrap_or(section);
    section
        .lines()
        .filter_map(|line| {
            let (number, rest) = line.split_once(". `")?;
            number.trim().parse::<u32>().ok()?;
            Some(rest.split('`').next()?.to_string())
        })
        .collect()
}

/// The top-level modules `src/lib.rs` declares.
fn declared_modules(lib: &str) -> BTreeSet<String> {
    lib.lines()
        .filter_map(|l| l.trim().strip_prefix("pub mod "))
        .map(|rest| rest.trim_end_matches(';').trim().to_string())
        .collect()
}

fn rust_files(path: &Path, out: &mut Vec<PathBuf>) {
    if path.is_dir() {
        let mut entries: Vec<_> = fs::read_dir(path)
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        entries.sort();
        for e in entries {
            rust_files(&e, out);
        }
    } else if path.is_file() && path.extension().is_some_and(|e| e == "rs") {
        out.push(path.to_path_buf());
    }
}

/// Code without its comments, so that a doc link or a sentence does not count as an import.
fn strip_comments(src: &str) -> String {
    src.lines()
        .map(|l| match l.find("//") {
            Some(i) if !l[..i].contains('"') => &l[..i],
            _ => l,
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// Every top-level module a piece of code names through `crate::`, in both forms:
/// `crate::meter::Meter` and `use crate::{meter::Meter, runlog::Phase}`.
fn crate_paths(code: &str) -> BTreeSet<String> {
    let mut found = BTreeSet::new();
    let mut rest = code;
    while let Some(i) = rest.find("crate::") {
        let preceded_by_ident = rest[..i]
            .chars()
            .last()
            .is_some_and(|c| c.is_alphanumeric() || c == '_');
        rest = &rest[i + "crate::".len()..];
        if preceded_by_ident {
            continue; // `pub(crate)` is not followed by `::`, but `mycrate::` would be
        }
        if let Some(group) = rest.strip_prefix('{') {
            // Top-level names of the group: split on commas at brace depth 0.
            let mut depth = 0;
            let mut item = String::new();
            for c in group.chars() {
                match c {
                    '{' => depth += 1,
                    '}' if depth == 0 => break,
                    '}' => depth -= 1,
                    ',' if depth == 0 => {
                        found.insert(first_segment(&item));
                        item.clear();
                        continue;
                    }
                    _ => {}
                }
                item.push(c);
            }
            found.insert(first_segment(&item));
        } else {
            found.insert(first_segment(rest));
        }
    }
    found.retain(|m| !m.is_empty());
    found
}

fn first_segment(path: &str) -> String {
    path.trim()
        .chars()
        .take_while(|c| c.is_alphanumeric() || *c == '_')
        .collect()
}

/// module -> the top-level modules its files name, with the first file that names each.
fn imports(layers: &[String]) -> BTreeMap<String, BTreeMap<String, PathBuf>> {
    let src = root().join("src");
    let mut out = BTreeMap::new();
    for m in layers {
        let mut files = Vec::new();
        rust_files(&src.join(m), &mut files);
        rust_files(&src.join(format!("{m}.rs")), &mut files);
        assert!(
            !files.is_empty(),
            "docs/architecture.md lists `{m}`, but src/ has no such module"
        );
        let mut names: BTreeMap<String, PathBuf> = BTreeMap::new();
        for f in files {
            let code = strip_comments(&fs::read_to_string(&f).unwrap());
            for used in crate_paths(&code) {
                names.entry(used).or_insert_with(|| f.clone());
            }
        }
        names.remove(m);
        out.insert(m.clone(), names);
    }
    out
}

#[test]
fn every_module_is_placed_in_the_documented_layers() {
    let doc = fs::read_to_string(root().join("docs/architecture.md")).unwrap();
    let layers = documented_layers(&doc);
    let documented: BTreeSet<String> = layers.iter().cloned().collect();
    assert_eq!(
        documented.len(),
        layers.len(),
        "a module is listed twice: {layers:?}"
    );
    let declared = declared_modules(&fs::read_to_string(root().join("src/lib.rs")).unwrap());
    assert_eq!(
        declared, documented,
        "src/lib.rs's modules and docs/architecture.md's layers differ"
    );
}

#[test]
fn no_module_imports_one_above_it() {
    let doc = fs::read_to_string(root().join("docs/architecture.md")).unwrap();
    let layers = documented_layers(&doc);
    let rank: BTreeMap<&str, usize> = layers
        .iter()
        .enumerate()
        .map(|(i, m)| (m.as_str(), i))
        .collect();
    let mut violations = Vec::new();
    for (module, used) in imports(&layers) {
        for (target, file) in used {
            match rank.get(target.as_str()) {
                Some(&r) if r < rank[module.as_str()] => {}
                Some(_) => violations.push(format!(
                    "{} (layer `{module}`) imports `{target}`, which is not below it",
                    file.strip_prefix(root()).unwrap().display()
                )),
                // `crate::` followed by something that is not a module of ours (a macro, `self`).
                None => {}
            }
        }
    }
    assert!(
        violations.is_empty(),
        "imports that point up:\n{}",
        violations.join("\n")
    );
}

#[test]
fn the_path_reader_sees_grouped_inline_and_nested_paths() {
    let code = "use crate::{meter::Meter, runlog::{Phase, Role}};\n\
                fn f() { let x = crate::report::build(); }\n\
                pub(crate) fn g() {}\n";
    let found = crate_paths(code);
    let expected: BTreeSet<String> = ["meter", "runlog", "report"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    assert_eq!(found, expected);
    let code = strip_comments("/// See [`crate::tui`].\nuse crate::stats; // crate::model\n");
    assert_eq!(crate_paths(&code), BTreeSet::from(["stats".to_string()]));
}

#[test]
fn the_layer_list_is_read_in_order() {
    let doc = "# A\n## Layers, bottom\n\n1. `vocab`: words.\n2. `stats`: sums,\n   more.\n10. `tui`: ui.\n\n## Data flow\n3. `not`: counted.\n";
    assert_eq!(documented_layers(doc), vec!["vocab", "stats", "tui"]);
}
