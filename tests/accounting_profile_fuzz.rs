//! Randomly mutated profile and hardware TOML (issue 21): every mutant is accepted or refused with a
//! message naming the file and the field (or the line and column where the TOML does not parse),
//! and never panics, in parsing or in the accounting and projections an accepted profile feeds.
//! A small seeded mutator (splitmix64): byte flips, deleted, duplicated and truncated lines,
//! swapped values, values of the wrong type, unknown keys. 10,000 mutants, a few seconds.

use std::panic::{catch_unwind, AssertUnwindSafe};

use sparsewatt::accounting::{AccountOptions, Summary};
use sparsewatt::profile::{
    find, load_hardware, load_model, names, parse_hardware, parse_model, Kind,
};
use sparsewatt::project::{project_inference, project_training, InferenceSettings, Settings};

const MUTANTS: usize = 10_000;
const ORIGIN: &str = "fuzz/mutant.toml";

/// splitmix64 (Steele, Lea and Flood 2014): small, seeded, good enough to pick mutations.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
    fn pick<'a, T>(&mut self, xs: &'a [T]) -> &'a T {
        &xs[self.below(xs.len())]
    }
}

const CHARS: [char; 16] = [
    '=', '"', '[', ']', '#', '0', '9', '-', '.', 'x', '\n', ' ', '{', '\'', 'é', '\\',
];
const VALUES: [&str; 15] = [
    "\"wide\"",
    "true",
    "-1",
    "0",
    "1e400",
    "3.5",
    "[1, 2]",
    "{ a = 1 }",
    "18446744073709551616",
    "nan",
    "inf",
    "-0.0",
    "\"\"",
    "99999999999",
    "1970-01-01",
];

/// The index of the `=` of a `key = value` line (not a comment or a table header).
fn assignment(line: &str) -> Option<usize> {
    let t = line.trim_start();
    if t.starts_with('#') || t.starts_with('[') {
        return None;
    }
    line.find('=')
}

fn mutate(text: &str, rng: &mut Rng) -> String {
    let mut lines: Vec<String> = text.lines().map(String::from).collect();
    for _ in 0..1 + rng.below(3) {
        if lines.is_empty() {
            break;
        }
        let i = rng.below(lines.len());
        match rng.below(7) {
            0 => {
                let mut chars: Vec<char> = lines[i].chars().collect();
                let j = rng.below(chars.len() + 1);
                let c = *rng.pick(&CHARS);
                if j < chars.len() {
                    chars[j] = c;
                } else {
                    chars.push(c);
                }
                lines[i] = chars.into_iter().collect();
            }
            1 => {
                lines.remove(i);
            }
            2 => {
                let copy = lines[i].clone();
                lines.insert(i, copy);
            }
            3 => {
                let j = rng.below(lines.len());
                if let (Some(a), Some(b)) = (assignment(&lines[i]), assignment(&lines[j])) {
                    let (va, vb) = (lines[i][a..].to_string(), lines[j][b..].to_string());
                    lines[i].replace_range(a.., &vb);
                    lines[j].replace_range(b.., &va);
                }
            }
            4 => {
                if let Some(a) = assignment(&lines[i]) {
                    let v = format!("= {}", rng.pick(&VALUES));
                    lines[i].replace_range(a.., &v);
                }
            }
            5 => lines.insert(i, "bogus_key = 1".into()),
            _ => {
                let keep = lines[i].chars().count();
                lines[i] = lines[i].chars().take(rng.below(keep + 1)).collect();
                lines.truncate(i + 1);
            }
        }
    }
    lines.join("\n")
}

/// A refusal names the file, and a field (in backquotes) or where the TOML broke.
fn check_refusal(msg: &str, text: &str) {
    assert!(
        msg.contains(ORIGIN),
        "the message does not name the file: {msg}\n--- mutant\n{text}"
    );
    let names_field = msg.contains('`');
    let names_place = msg.contains("line ") && msg.contains("column ");
    assert!(
        names_field || names_place,
        "the message names neither a field nor a line and column: {msg}\n--- mutant\n{text}"
    );
}

fn texts(kind: Kind) -> Vec<String> {
    names(kind)
        .iter()
        .map(|n| find(kind, n).expect("a listed profile is found").text)
        .collect()
}

#[test]
fn mutated_profiles_are_accepted_or_refused_by_field_and_never_panic() {
    let models = texts(Kind::Model);
    let chips = texts(Kind::Hardware);
    let h100 = load_hardware("h100-sxm").unwrap();
    let tiny = load_model("glam-tiny").unwrap();
    let mut rng = Rng(0x5eed_2026_1204);
    let (mut accepted, mut refused) = (0usize, 0usize);
    for n in 0..MUTANTS {
        let model = n % 2 == 0;
        let base = rng.pick(if model { &models } else { &chips });
        let text = mutate(base, &mut rng);
        let outcome = catch_unwind(AssertUnwindSafe(|| {
            if model {
                let p = parse_model(&text, ORIGIN).map_err(|e| e.to_string())?;
                // Bounded time: accounting walks the layers.
                if p.layers <= 4096 {
                    let _ = Summary::of(&p, &AccountOptions::default());
                    let _ = project_inference(&p, &h100, &InferenceSettings::new(8, 4, 128));
                }
            } else {
                let hw = parse_hardware(&text, ORIGIN).map_err(|e| e.to_string())?;
                let _ = project_training(1e18, &hw, &Settings::new(1));
                let _ = project_inference(&tiny, &hw, &InferenceSettings::new(1, 2, 16));
            }
            Ok::<(), String>(())
        }));
        match outcome {
            Err(_) => panic!("mutant {n} panicked:\n{text}"),
            Ok(Ok(())) => accepted += 1,
            Ok(Err(msg)) => {
                check_refusal(&msg, &text);
                refused += 1;
            }
        }
    }
    eprintln!("{accepted} mutants accepted, {refused} refused");
    // The mutator reaches both sides: many mutants still parse, many do not.
    assert!(accepted > MUTANTS / 20, "{accepted} accepted of {MUTANTS}");
    assert!(refused > MUTANTS / 4, "{refused} refused of {MUTANTS}");
}
