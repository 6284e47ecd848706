//! A corpus: bytes, the domain of each byte (as spans), the names of the domains, and the
//! deterministic train/validation split.

use std::path::Path;
use std::sync::OnceLock;

use super::generate::{generate, EMBEDDED_BYTES_PER_DOMAIN, EMBEDDED_SEED};
use super::DataError;

/// A run of bytes of one domain: `start..end` in the corpus bytes. `origin` is where `start` lay
/// in the corpus this one was split from (equal to `start` in a corpus that was not split), so
/// train and validation text can be traced back and shown not to overlap.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Span {
    pub domain: u16,
    pub start: usize,
    pub end: usize,
    pub origin: usize,
}

impl Span {
    pub fn len(&self) -> usize {
        self.end - self.start
    }

    pub fn is_empty(&self) -> bool {
        self.end == self.start
    }
}

/// Byte-level text with named domains. Tokens are bytes ([`super::VOCAB_SIZE`] = 256). Spans are
/// in order, do not overlap and cover every byte; each holds at least one byte.
#[derive(Clone, Debug)]
pub struct Corpus {
    name: String,
    bytes: Vec<u8>,
    spans: Vec<Span>,
    domain_names: Vec<String>,
}

static EMBEDDED: OnceLock<Corpus> = OnceLock::new();

impl Corpus {
    /// The default corpus, generated on first use (about 1.6 MB, four domains: see docs/data.md)
    /// and cached for the life of the process. Named "embedded".
    pub fn embedded() -> &'static Corpus {
        EMBEDDED.get_or_init(|| {
            let domains = generate(EMBEDDED_SEED, EMBEDDED_BYTES_PER_DOMAIN);
            Self::from_nonempty_domains(
                "embedded".to_owned(),
                domains
                    .into_iter()
                    .map(|(name, text)| (name.to_owned(), text.into_bytes()))
                    .collect(),
            )
        })
    }

    /// The corpus behind a `--data FILE` flag: the file when given, the embedded corpus otherwise.
    pub fn load(path: Option<&Path>) -> Result<Corpus, DataError> {
        match path {
            Some(path) => Self::from_file(path),
            None => Ok(Self::embedded().clone()),
        }
    }

    /// Any file, read as bytes (UTF-8 or not), as one domain named after the file. The corpus is
    /// named by the path as given, so later errors (too short for a window) name the file.
    pub fn from_file(path: &Path) -> Result<Corpus, DataError> {
        let bytes = std::fs::read(path).map_err(|source| DataError::Unreadable {
            path: path.to_path_buf(),
            source,
        })?;
        if bytes.is_empty() {
            return Err(DataError::EmptyFile {
                path: path.to_path_buf(),
            });
        }
        let domain = path
            .file_name()
            .unwrap_or(path.as_os_str())
            .to_string_lossy()
            .into_owned();
        Ok(Self::from_nonempty_domains(
            path.display().to_string(),
            vec![(domain, bytes)],
        ))
    }

    /// A corpus from named domain texts, in order (one span each). Fails on no domains, an empty
    /// domain, or more domains than a `u16` index holds.
    pub fn from_domains(
        name: impl Into<String>,
        domains: Vec<(String, Vec<u8>)>,
    ) -> Result<Corpus, DataError> {
        let name = name.into();
        if domains.is_empty() {
            return Err(DataError::NoDomains { corpus: name });
        }
        if domains.len() > usize::from(u16::MAX) + 1 {
            return Err(DataError::TooManyDomains {
                corpus: name,
                domains: domains.len(),
                max: 1 << 16,
            });
        }
        if let Some((domain, _)) = domains.iter().find(|(_, text)| text.is_empty()) {
            return Err(DataError::EmptyDomain {
                corpus: name,
                domain: domain.clone(),
            });
        }
        Ok(Self::from_nonempty_domains(name, domains))
    }

    fn from_nonempty_domains(name: String, domains: Vec<(String, Vec<u8>)>) -> Corpus {
        let mut bytes = Vec::with_capacity(domains.iter().map(|(_, text)| text.len()).sum());
        let mut spans = Vec::with_capacity(domains.len());
        let mut domain_names = Vec::with_capacity(domains.len());
        for (index, (domain, text)) in domains.into_iter().enumerate() {
            let start = bytes.len();
            bytes.extend_from_slice(&text);
            spans.push(Span {
                domain: index as u16,
                start,
                end: bytes.len(),
                origin: start,
            });
            domain_names.push(domain);
        }
        Corpus {
            name,
            bytes,
            spans,
            domain_names,
        }
    }

    /// "embedded", the file path, or either with ` [train]` / ` [validation]` after a split.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The text; byte `i` is token `i`.
    pub fn bytes(&self) -> &[u8] {
        &self.bytes
    }

    /// The text as `u32` tokens.
    pub fn tokens(&self) -> Vec<u32> {
        super::encode_bytes(&self.bytes)
    }

    /// Length in bytes (= tokens).
    pub fn len(&self) -> usize {
        self.bytes.len()
    }

    pub fn is_empty(&self) -> bool {
        self.bytes.is_empty()
    }

    pub fn spans(&self) -> &[Span] {
        &self.spans
    }

    /// Domain names; a domain index (`Span::domain`, `Batch::domains`) indexes this slice.
    pub fn domain_names(&self) -> &[String] {
        &self.domain_names
    }

    /// Bytes of `domain` in this corpus (0 for an index out of range).
    pub fn domain_len(&self, domain: u16) -> usize {
        self.spans
            .iter()
            .filter(|s| s.domain == domain)
            .map(Span::len)
            .sum()
    }

    /// Domain of byte `position`, `None` past the end.
    pub fn domain_of(&self, position: usize) -> Option<u16> {
        let index = self.spans.partition_point(|s| s.end <= position);
        self.spans
            .get(index)
            .filter(|s| s.start <= position)
            .map(|s| s.domain)
    }

    /// A stable 64-bit fingerprint of the bytes (FNV-1a), for run headers and reproducibility checks.
    pub fn fingerprint(&self) -> u64 {
        self.bytes.iter().fold(0xcbf2_9ce4_8422_2325, |hash, &b| {
            (hash ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
        })
    }

    /// Splits every span by position: its last `val_fraction` (at least one byte) is validation,
    /// the rest training, so both parts cover every domain and share no text. The cut moves
    /// forward to just after the next newline when there is one, so validation starts on a line.
    /// The parts are named `<name> [train]` and `<name> [validation]`.
    pub fn split(&self, val_fraction: f64) -> Result<(Corpus, Corpus), DataError> {
        if !(val_fraction > 0.0 && val_fraction < 1.0) {
            return Err(DataError::BadFraction {
                value: val_fraction,
            });
        }
        let mut train = self.empty_part("train");
        let mut val = self.empty_part("validation");
        for span in &self.spans {
            let len = span.len();
            let val_len = ((len as f64 * val_fraction).round() as usize).max(1);
            if val_len >= len {
                return Err(DataError::TooShortToSplit {
                    corpus: self.name.clone(),
                    domain: self.domain_names[usize::from(span.domain)].clone(),
                    len,
                    val_fraction,
                });
            }
            let mut cut = span.start + len - val_len;
            // Start validation on a line (past a run of blank lines), keeping at least one byte.
            if let Some(newline) = self.bytes[cut..span.end - 1]
                .iter()
                .position(|&b| b == b'\n')
            {
                cut += newline + 1;
                while cut < span.end - 1 && self.bytes[cut] == b'\n' {
                    cut += 1;
                }
            }
            train.push_span(span, span.start, cut, &self.bytes);
            val.push_span(span, cut, span.end, &self.bytes);
        }
        Ok((train, val))
    }

    fn empty_part(&self, part: &str) -> Corpus {
        Corpus {
            name: format!("{} [{part}]", self.name),
            bytes: Vec::new(),
            spans: Vec::new(),
            domain_names: self.domain_names.clone(),
        }
    }

    fn push_span(&mut self, from: &Span, start: usize, end: usize, source: &[u8]) {
        let own_start = self.bytes.len();
        self.bytes.extend_from_slice(&source[start..end]);
        let origin = from.origin + (start - from.start);
        self.spans.push(Span {
            domain: from.domain,
            start: own_start,
            end: self.bytes.len(),
            origin,
        });
    }

    /// Checks that every span holds at least one window of `seq_len` inputs plus its next-token
    /// target (`seq_len + 1` bytes), so batching and evaluation see every domain.
    pub fn check_windows(&self, seq_len: usize) -> Result<(), DataError> {
        if seq_len == 0 {
            return Err(DataError::EmptyShape { batch: 1, seq_len });
        }
        let needed = seq_len + 1;
        match self.spans.iter().find(|s| s.len() < needed) {
            Some(span) => Err(DataError::TooShort {
                corpus: self.name.clone(),
                domain: self.domain_names[usize::from(span.domain)].clone(),
                len: span.len(),
                seq_len,
                needed,
            }),
            None => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::DOMAIN_NAMES;

    #[test]
    fn the_embedded_corpus_is_pinned_by_length_and_fingerprint() {
        let corpus = Corpus::embedded();
        // Update these two together, on purpose, when the generator changes.
        assert_eq!(corpus.len(), 1_601_081);
        assert_eq!(corpus.fingerprint(), 0x6693_eab3_2157_d23e);
    }

    #[test]
    fn the_embedded_corpus_has_every_domain_at_its_size() {
        let corpus = Corpus::embedded();
        assert_eq!(corpus.domain_names(), DOMAIN_NAMES);
        for domain in 0..DOMAIN_NAMES.len() as u16 {
            let len = corpus.domain_len(domain);
            assert!(
                (EMBEDDED_BYTES_PER_DOMAIN..EMBEDDED_BYTES_PER_DOMAIN + 2048).contains(&len),
                "domain {domain}: {len}"
            );
        }
        assert!(
            std::str::from_utf8(corpus.bytes()).is_ok(),
            "the embedded corpus is UTF-8 text"
        );
    }

    #[test]
    fn domain_of_follows_the_spans() {
        let corpus = Corpus::from_domains(
            "t",
            vec![("a".into(), b"xx".to_vec()), ("b".into(), b"yyy".to_vec())],
        )
        .unwrap();
        let domains: Vec<_> = (0..6).map(|i| corpus.domain_of(i)).collect();
        assert_eq!(domains, [Some(0), Some(0), Some(1), Some(1), Some(1), None]);
        assert_eq!(
            (
                corpus.domain_len(0),
                corpus.domain_len(1),
                corpus.domain_len(2)
            ),
            (2, 3, 0)
        );
    }

    #[test]
    fn split_keeps_every_domain_in_both_parts_without_shared_text() {
        let corpus = Corpus::embedded();
        let (train, val) = corpus.split(0.05).unwrap();
        assert_eq!(train.len() + val.len(), corpus.len());
        for domain in 0..corpus.domain_names().len() as u16 {
            let (t, v) = (train.domain_len(domain), val.domain_len(domain));
            assert!(t > 0 && v > 0, "domain {domain} in both parts");
            let share = v as f64 / (t + v) as f64;
            assert!(
                (0.045..0.055).contains(&share),
                "domain {domain}: validation share {share}"
            );
        }
        for (t, v) in train.spans().iter().zip(val.spans()) {
            // Validation text is the source bytes right after the training text of the same domain.
            assert_eq!(t.origin + t.len(), v.origin);
            assert_eq!(
                &corpus.bytes()[v.origin..v.origin + v.len()],
                &val.bytes()[v.start..v.end]
            );
            assert_ne!(
                val.bytes()[v.start],
                b'\n',
                "validation starts with text, not a blank line"
            );
            assert_eq!(
                corpus.bytes()[v.origin - 1],
                b'\n',
                "validation starts on a new line"
            );
        }
        assert!(train.name().ends_with("[train]") && val.name().ends_with("[validation]"));
    }

    #[test]
    fn split_rejects_fractions_outside_zero_one_and_domains_too_short() {
        let corpus = Corpus::from_domains("t", vec![("a".into(), b"x".to_vec())]).unwrap();
        for bad in [0.0, 1.0, -0.1, f64::NAN] {
            assert!(
                matches!(corpus.split(bad), Err(DataError::BadFraction { .. })),
                "{bad}"
            );
        }
        assert!(matches!(
            corpus.split(0.5),
            Err(DataError::TooShortToSplit { .. })
        ));
    }

    #[test]
    fn an_unreadable_file_gives_an_error_naming_it() {
        let path = Path::new("/nonexistent/sparsewatt/corpus.txt");
        let err = Corpus::from_file(path).unwrap_err();
        assert!(matches!(err, DataError::Unreadable { .. }));
        assert!(
            err.to_string()
                .contains("/nonexistent/sparsewatt/corpus.txt"),
            "{err}"
        );
    }

    #[test]
    fn an_empty_or_short_file_gives_an_error_naming_it() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path();
        let empty = dir.join("empty.txt");
        std::fs::write(&empty, b"").unwrap();
        let err = Corpus::from_file(&empty).unwrap_err();
        assert!(
            matches!(err, DataError::EmptyFile { .. }) && err.to_string().contains("empty.txt"),
            "{err}"
        );

        let short = dir.join("short.txt");
        std::fs::write(&short, "one line of text\n".repeat(40)).unwrap();
        let corpus = Corpus::from_file(&short).unwrap();
        assert_eq!(corpus.domain_names(), ["short.txt"]);
        let (train, val) = corpus.split(0.05).unwrap();
        train.check_windows(128).unwrap();
        let err = val.check_windows(128).unwrap_err();
        assert!(
            matches!(err, DataError::TooShort { needed: 129, .. }),
            "{err}"
        );
        assert!(
            err.to_string().contains(&*short.display().to_string()),
            "{err}"
        );
    }

    #[test]
    fn any_file_loads_as_bytes_including_invalid_utf8() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("bin.dat");
        let bytes: Vec<u8> = (0..=255u8).cycle().take(1000).collect();
        std::fs::write(&path, &bytes).unwrap();
        let corpus = Corpus::load(Some(&path)).unwrap();
        assert_eq!(corpus.bytes(), bytes.as_slice());
        assert_eq!(
            corpus.spans(),
            [Span {
                domain: 0,
                start: 0,
                end: 1000,
                origin: 0
            }]
        );
        assert_eq!(corpus.name(), path.display().to_string());
    }

    #[test]
    fn from_domains_rejects_no_domains_and_empty_domains() {
        let err = Corpus::from_domains("c", Vec::new()).unwrap_err();
        assert!(matches!(err, DataError::NoDomains { .. }), "{err}");
        let err = Corpus::from_domains(
            "c",
            vec![("a".into(), b"x".to_vec()), ("b".into(), Vec::new())],
        )
        .unwrap_err();
        assert!(
            matches!(err, DataError::EmptyDomain { ref domain, .. } if domain == "b"),
            "{err}"
        );
    }
}
