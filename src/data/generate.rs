//! The generator of the embedded default corpus: four domains of regular, learnable text, each
//! from its own stream of a seeded PRNG, so the same seed always gives the same bytes.
//!
//! The domains differ in alphabet and structure (words and punctuation; digits and operators;
//! identifiers, braces and indentation; field names, dates and amounts) so the experts of a MoE
//! layer have something to specialise on.

use std::fmt::Write;

use super::rng::SplitMix64;

/// Seed of the embedded corpus. Changing it (or any word list below) changes the corpus hash
/// pinned by the tests in `corpus.rs`.
pub const EMBEDDED_SEED: u64 = 0x005E_ED0F_61A4;

/// Bytes generated per domain for the embedded corpus (each domain stops at the first complete
/// unit, paragraph, line, function or block, past this size).
pub const EMBEDDED_BYTES_PER_DOMAIN: usize = 400_000;

/// Domain names, in corpus order.
pub const DOMAIN_NAMES: [&str; 4] = ["prose", "arithmetic", "code", "records"];

/// Generates every domain with at least `bytes_per_domain` bytes each, in [`DOMAIN_NAMES`] order.
pub fn generate(seed: u64, bytes_per_domain: usize) -> Vec<(&'static str, String)> {
    let generators: [fn(&mut SplitMix64, &mut String); 4] =
        [prose_paragraph, arithmetic_line, code_item, records_block];
    DOMAIN_NAMES
        .iter()
        .zip(generators)
        .enumerate()
        .map(|(index, (&name, unit))| {
            // Each domain gets its own stream, so growing one domain leaves the others unchanged.
            let mut rng =
                SplitMix64::new(seed ^ (index as u64 + 1).wrapping_mul(0xA076_1D64_78BD_642F));
            let mut text = String::with_capacity(bytes_per_domain + 1024);
            while text.len() < bytes_per_domain {
                unit(&mut rng, &mut text);
            }
            (name, text)
        })
        .collect()
}

const NAMES: [&str; 20] = [
    "Ada", "Bruno", "Clara", "Dmitri", "Elena", "Farid", "Grace", "Hugo", "Ines", "Jonas", "Kira",
    "Leo", "Maya", "Nils", "Olga", "Pablo", "Rosa", "Sami", "Tara", "Viktor",
];
const ADJECTIVES: [&str; 20] = [
    "old", "quiet", "bright", "small", "heavy", "curious", "patient", "gentle", "tired", "clever",
    "ancient", "empty", "narrow", "warm", "early", "silver", "green", "careful", "famous", "open",
];
const NOUNS: [&str; 24] = [
    "farmer", "teacher", "river", "engine", "garden", "letter", "window", "lantern", "village",
    "baker", "sailor", "machine", "bridge", "storm", "library", "student", "painter", "clock",
    "owl", "island", "apple", "engineer", "artist", "orchard",
];
const TRANSITIVE: [&str; 15] = [
    "found",
    "carried",
    "painted",
    "repaired",
    "watched",
    "opened",
    "followed",
    "described",
    "visited",
    "built",
    "cleaned",
    "measured",
    "remembered",
    "crossed",
    "borrowed",
];
const INTRANSITIVE: [&str; 10] = [
    "waited", "slept", "arrived", "vanished", "laughed", "rested", "returned", "wandered",
    "listened", "shivered",
];
const PREPOSITIONS: [&str; 7] = [
    "near", "behind", "beside", "under", "across", "beyond", "inside",
];
const PLACES: [&str; 10] = [
    "market", "harbor", "hill", "station", "kitchen", "valley", "square", "tower", "meadow",
    "workshop",
];
const TIMES: [&str; 7] = [
    "morning",
    "evening",
    "winter",
    "spring",
    "night",
    "afternoon",
    "autumn",
];
const ADVERBS: [&str; 8] = [
    "slowly",
    "quietly",
    "again",
    "early",
    "carefully",
    "suddenly",
    "happily",
    "twice",
];
const LINKS: [&str; 4] = ["because", "while", "after", "before"];

/// "a" or "an" before `word` (the adjectives and nouns above have no silent or vowel-sounding
/// consonants, so the first letter decides).
fn article(word: &str) -> &'static str {
    match word.as_bytes().first() {
        Some(b'a' | b'e' | b'i' | b'o' | b'u') => "an",
        _ => "a",
    }
}

fn prose_sentence(rng: &mut SplitMix64, out: &mut String) {
    let name_index = rng.below(NAMES.len());
    let name = NAMES[name_index];
    // Someone other than `name`.
    let other = NAMES[(name_index + 1 + rng.below(NAMES.len() - 1)) % NAMES.len()];
    let adj = rng.pick(&ADJECTIVES);
    let noun = rng.pick(&NOUNS);
    let noun2 = rng.pick(&NOUNS);
    let vt = rng.pick(&TRANSITIVE);
    let vi = rng.pick(&INTRANSITIVE);
    let prep = rng.pick(&PREPOSITIONS);
    let place = rng.pick(&PLACES);
    let time = rng.pick(&TIMES);
    let adv = rng.pick(&ADVERBS);
    let _ = match rng.below(7) {
        0 => write!(
            out,
            "The {adj} {noun} {vt} {} {noun2} {prep} the {place}.",
            article(noun2)
        ),
        1 => write!(out, "{name} {vt} the {noun} and {vi} {adv}."),
        2 => write!(out, "In the {time}, the {noun} {vi} {prep} the {place}."),
        3 => write!(out, "When {name} {vt} the {noun}, the {noun2} {vi}."),
        4 => write!(
            out,
            "{name} and {other} {vt} {} {adj} {noun} {} the {noun2} {vi} {adv}.",
            article(adj),
            rng.pick(&LINKS)
        ),
        5 => write!(
            out,
            "\"Where is the {noun}?\" asked {name}. \"It is {prep} the {place},\" said {other}."
        ),
        _ => write!(out, "Every {time}, {name} {vt} the {adj} {noun}."),
    };
}

/// A paragraph of three to six sentences, then a blank line.
fn prose_paragraph(rng: &mut SplitMix64, out: &mut String) {
    let sentences = rng.range(3, 6);
    for i in 0..sentences {
        if i > 0 {
            out.push(' ');
        }
        prose_sentence(rng, out);
    }
    out.push_str("\n\n");
}

/// One exact equation per line: `a+b=c`, `a-b=c` (never negative), `a*b=c`, `a/b=c` (exact).
fn arithmetic_line(rng: &mut SplitMix64, out: &mut String) {
    let _ = match rng.below(10) {
        0..=3 => {
            let (a, b) = (rng.range(0, 999), rng.range(0, 999));
            writeln!(out, "{a}+{b}={}", a + b)
        }
        4..=6 => {
            let (x, y) = (rng.range(0, 999), rng.range(0, 999));
            let (a, b) = (x.max(y), x.min(y));
            writeln!(out, "{a}-{b}={}", a - b)
        }
        7 | 8 => {
            let (a, b) = (rng.range(0, 99), rng.range(0, 99));
            writeln!(out, "{a}*{b}={}", a * b)
        }
        _ => {
            let (b, quotient) = (rng.range(1, 12), rng.range(0, 99));
            writeln!(out, "{}/{b}={quotient}", b * quotient)
        }
    };
}

const CODE_VERBS: [&str; 12] = [
    "sum", "count", "scale", "find", "clamp", "mix", "sort", "check", "merge", "filter", "total",
    "average",
];
const CODE_NOUNS: [&str; 10] = [
    "items", "values", "scores", "points", "weights", "prices", "steps", "cells", "frames",
    "blocks",
];
const STRUCTS: [&str; 8] = [
    "Point", "Sensor", "Reading", "Budget", "Tile", "Sample", "Order", "Window",
];
const FIELDS: [&str; 10] = [
    "x", "y", "width", "height", "price", "weight", "speed", "limit", "level", "offset",
];
const ACCUMULATORS: [&str; 4] = ["acc", "total", "sum", "best"];
const LABELS: [&str; 8] = [
    "low", "high", "empty", "full", "ready", "idle", "busy", "done",
];

/// One Rust-like item (a function or a struct with its constructor), then a blank line.
fn code_item(rng: &mut SplitMix64, out: &mut String) {
    let name = format!("{}_{}", rng.pick(&CODE_VERBS), rng.pick(&CODE_NOUNS));
    let acc = rng.pick(&ACCUMULATORS);
    let c = rng.range(2, 9);
    if rng.percent(30) {
        let _ = writeln!(
            out,
            "// {} the {}.",
            capitalised(rng.pick(&CODE_VERBS)),
            rng.pick(&CODE_NOUNS)
        );
    }
    let _ = match rng.below(6) {
        0 => write!(
            out,
            "fn {name}(xs: &[i32]) -> i32 {{\n    let mut {acc} = {};\n    for x in xs {{\n        {acc} += x * {c};\n    }}\n    {acc}\n}}\n",
            rng.range(0, 9)
        ),
        1 => write!(
            out,
            "fn {name}(a: i32, b: i32) -> i32 {{\n    if a > b {{\n        a - b\n    }} else {{\n        b + {c}\n    }}\n}}\n"
        ),
        2 => write!(
            out,
            "fn {name}(n: u32) -> u32 {{\n    let mut i = 0;\n    let mut {acc} = 1;\n    while i < n {{\n        {acc} = {acc} * {c} % {};\n        i += 1;\n    }}\n    {acc}\n}}\n",
            rng.range(11, 97)
        ),
        3 => {
            let ty = rng.pick(&STRUCTS);
            let f1 = rng.pick(&FIELDS[..5]);
            let f2 = rng.pick(&FIELDS[5..]);
            write!(
                out,
                "struct {ty} {{\n    {f1}: f32,\n    {f2}: f32,\n}}\n\nimpl {ty} {{\n    fn new({f1}: f32, {f2}: f32) -> Self {{\n        Self {{ {f1}, {f2} }}\n    }}\n}}\n"
            )
        }
        4 => write!(
            out,
            "fn {name}(grid: &[Vec<i32>]) -> usize {{\n    let mut count = 0;\n    for row in grid {{\n        for cell in row {{\n            if *cell > {c} {{\n                count += 1;\n            }}\n        }}\n    }}\n    count\n}}\n"
        ),
        _ => write!(
            out,
            "fn {name}(code: u8) -> &'static str {{\n    match code {{\n        0 => \"{}\",\n        1 => \"{}\",\n        _ => \"{}\",\n    }}\n}}\n",
            rng.pick(&LABELS),
            rng.pick(&LABELS),
            rng.pick(&LABELS)
        ),
    };
    out.push('\n');
}

fn capitalised(word: &str) -> String {
    let mut chars = word.chars();
    match chars.next() {
        Some(first) => first.to_uppercase().chain(chars).collect(),
        None => String::new(),
    }
}

const SURNAMES: [&str; 16] = [
    "Moreno",
    "Okafor",
    "Lindqvist",
    "Tanaka",
    "Novak",
    "Haddad",
    "Silva",
    "Kowalski",
    "Brennan",
    "Petrov",
    "Larsen",
    "Costa",
    "Yilmaz",
    "Fischer",
    "Duarte",
    "Mensah",
];
const CITIES: [&str; 12] = [
    "Lisbon", "Oslo", "Nairobi", "Kyoto", "Prague", "Beirut", "Recife", "Krakow", "Dublin",
    "Sofia", "Bergen", "Accra",
];
const ACTIONS: [&str; 6] = [
    "login", "logout", "upload", "download", "search", "checkout",
];
const LEVELS: [&str; 3] = ["INFO", "WARN", "ERROR"];

fn date(rng: &mut SplitMix64) -> (u32, u32, u32) {
    let year = rng.range(1990, 2024);
    let month = rng.range(1, 12);
    let leap = (year.is_multiple_of(4) && !year.is_multiple_of(100)) || year.is_multiple_of(400);
    let days = match month {
        2 if leap => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    };
    (year, month, rng.range(1, days))
}

/// A block of CSV rows under a header, of JSON lines, or of log lines, then a blank line. The
/// record id increases through the domain (taken from the text already written, so the block
/// generator needs no state of its own).
fn records_block(rng: &mut SplitMix64, out: &mut String) {
    let rows = rng.range(6, 14);
    let first_id = 1000 + out.len() as u32 / 40;
    let kind = rng.below(3);
    if kind == 0 {
        out.push_str("id,name,city,date,amount\n");
    }
    for id in first_id..first_id + rows {
        let name = format!("{} {}", rng.pick(&NAMES), rng.pick(&SURNAMES));
        let city = rng.pick(&CITIES);
        let (y, m, d) = date(rng);
        let (units, cents) = (rng.range(0, 999), rng.range(0, 99));
        let _ = match kind {
            0 => writeln!(out, "{id},{name},{city},{y}-{m:02}-{d:02},{units}.{cents:02}"),
            1 => writeln!(
                out,
                "{{\"id\": {id}, \"name\": \"{name}\", \"city\": \"{city}\", \"date\": \"{y}-{m:02}-{d:02}\", \"amount\": {units}.{cents:02}}}"
            ),
            _ => writeln!(
                out,
                "{y}-{m:02}-{d:02} {:02}:{:02}:{:02} {} user={} action={} ms={}",
                rng.range(0, 23),
                rng.range(0, 59),
                rng.range(0, 59),
                rng.pick(&LEVELS[..]),
                name.split(' ').next().unwrap_or_default().to_lowercase(),
                rng.pick(&ACTIONS),
                rng.range(5, 900)
            ),
        };
    }
    out.push('\n');
}

#[cfg(test)]
mod tests {
    use super::*;

    fn domain(name: &str) -> String {
        let domains = generate(EMBEDDED_SEED, 50_000);
        domains
            .into_iter()
            .find(|(n, _)| *n == name)
            .map(|(_, text)| text)
            .unwrap()
    }

    #[test]
    fn same_seed_same_text_and_another_seed_other_text() {
        assert_eq!(generate(9, 20_000), generate(9, 20_000));
        let (a, b) = (generate(9, 20_000), generate(10, 20_000));
        for ((name, x), (_, y)) in a.iter().zip(&b) {
            assert_ne!(x, y, "domain {name}");
        }
    }

    #[test]
    fn every_arithmetic_line_is_a_correct_equation() {
        let text = domain("arithmetic");
        let mut seen_ops = std::collections::BTreeSet::new();
        for line in text.lines() {
            let (lhs, result) = line.split_once('=').unwrap();
            let result: u64 = result.parse().unwrap();
            let op = lhs.chars().find(|c| "+-*/".contains(*c)).unwrap();
            let (a, b) = lhs.split_once(op).unwrap();
            let (a, b): (u64, u64) = (a.parse().unwrap(), b.parse().unwrap());
            let expected = match op {
                '+' => a + b,
                '-' => a.checked_sub(b).unwrap(),
                '*' => a * b,
                _ => {
                    assert_eq!(a % b, 0, "{line}: division is exact");
                    a / b
                }
            };
            assert_eq!(result, expected, "{line}");
            seen_ops.insert(op);
        }
        assert_eq!(seen_ops.len(), 4, "all four operations occur");
    }

    #[test]
    fn code_items_have_balanced_braces() {
        let text = domain("code");
        for item in text.split("\n\n").filter(|item| !item.trim().is_empty()) {
            let opened = item.matches('{').count();
            assert_eq!(opened, item.matches('}').count(), "{item}");
            assert!(opened > 0, "{item}");
        }
    }

    #[test]
    fn record_dates_are_real_calendar_dates() {
        let text = domain("records");
        let mut dates = 0;
        for word in text.split([',', '"', ' ']) {
            let parts: Vec<&str> = word.split('-').collect();
            if parts.len() != 3
                || parts[0].len() != 4
                || !word.bytes().all(|b| b.is_ascii_digit() || b == b'-')
            {
                continue;
            }
            let (y, m, d): (u32, u32, u32) = (
                parts[0].parse().unwrap(),
                parts[1].parse().unwrap(),
                parts[2].parse().unwrap(),
            );
            let leap = (y.is_multiple_of(4) && !y.is_multiple_of(100)) || y.is_multiple_of(400);
            let days = [
                31,
                if leap { 29 } else { 28 },
                31,
                30,
                31,
                30,
                31,
                31,
                30,
                31,
                30,
                31,
            ];
            assert!(
                (1..=12).contains(&m) && (1..=days[m as usize - 1]).contains(&d),
                "{word}"
            );
            dates += 1;
        }
        assert!(dates > 500, "{dates} dates checked");
    }

    #[test]
    fn prose_uses_an_before_vowels_and_a_before_consonants() {
        let text = domain("prose");
        let words: Vec<&str> = text.split_whitespace().collect();
        let mut checked = 0;
        for pair in words.windows(2) {
            let vowel = pair[1].starts_with(['a', 'e', 'i', 'o', 'u']);
            match pair[0] {
                "a" => assert!(!vowel, "a {}", pair[1]),
                "an" => assert!(vowel, "an {}", pair[1]),
                _ => continue,
            }
            checked += 1;
        }
        assert!(checked > 100);
    }

    #[test]
    fn domains_reach_their_size_and_differ_in_alphabet() {
        let domains = generate(EMBEDDED_SEED, 30_000);
        for (name, text) in &domains {
            assert!(
                text.len() >= 30_000 && text.len() < 31_000,
                "{name}: {}",
                text.len()
            );
        }
        let digits = |t: &str| t.bytes().filter(u8::is_ascii_digit).count() as f64 / t.len() as f64;
        let braces = |t: &str| t.bytes().filter(|&b| b == b'{').count();
        assert!(
            digits(&domains[1].1) > 0.6 && digits(&domains[0].1) == 0.0,
            "arithmetic is digits, prose has none"
        );
        assert!(
            braces(&domains[2].1) > 200 && braces(&domains[0].1) == 0,
            "code has braces, prose none"
        );
    }
}
