//! Batches of next-token windows: a seeded random sampler for training, a fixed sequential set of
//! windows for evaluation, and prompts from held-out text.

use super::corpus::{Corpus, Span};
use super::rng::SplitMix64;
use super::DataError;

/// `batch` rows of `seq_len` tokens, row-major. `targets[i]` is the token after `inputs[i]` in
/// the corpus (inputs shifted by one). `domains[i]` is the domain index of `inputs[i]`
/// (into [`Corpus::domain_names`]); a window never crosses a domain, so a row has one domain.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Batch {
    pub inputs: Vec<u32>,
    pub targets: Vec<u32>,
    pub domains: Vec<u16>,
    pub batch: usize,
    pub seq_len: usize,
}

impl Batch {
    /// Input tokens in the batch (`batch * seq_len`): the denominator of per-token training figures.
    pub fn tokens(&self) -> usize {
        self.batch * self.seq_len
    }

    /// Builds a batch from window starts `(span, offset in span)`; each window must fit its span.
    fn from_windows(corpus: &Corpus, windows: &[(usize, usize)], seq_len: usize) -> Batch {
        let n = windows.len() * seq_len;
        let (mut inputs, mut targets, mut domains) = (
            Vec::with_capacity(n),
            Vec::with_capacity(n),
            Vec::with_capacity(n),
        );
        for &(span_index, offset) in windows {
            let span = corpus.spans()[span_index];
            let start = span.start + offset;
            let window = &corpus.bytes()[start..start + seq_len + 1];
            inputs.extend(window[..seq_len].iter().map(|&b| u32::from(b)));
            targets.extend(window[1..].iter().map(|&b| u32::from(b)));
            domains.extend(std::iter::repeat_n(span.domain, seq_len));
        }
        Batch {
            inputs,
            targets,
            domains,
            batch: windows.len(),
            seq_len,
        }
    }
}

fn check_shape(batch: usize, seq_len: usize) -> Result<(), DataError> {
    if batch == 0 || seq_len == 0 {
        return Err(DataError::EmptyShape { batch, seq_len });
    }
    Ok(())
}

/// Random training windows from a corpus (normally the training part of a split), reproducible
/// from its seed: the same corpus, seed and calls give the same batches. Every window start is
/// equally likely, so domains appear in proportion to their size.
#[derive(Clone, Debug)]
pub struct BatchSampler {
    corpus: Corpus,
    rng: SplitMix64,
}

impl BatchSampler {
    pub fn new(corpus: Corpus, seed: u64) -> Self {
        Self {
            corpus,
            rng: SplitMix64::new(seed),
        }
    }

    pub fn corpus(&self) -> &Corpus {
        &self.corpus
    }

    /// The next `batch` random windows of `seq_len` tokens. Fails when a shape is zero or a
    /// domain is shorter than `seq_len + 1` bytes (see [`Corpus::check_windows`]).
    pub fn next_batch(&mut self, batch: usize, seq_len: usize) -> Result<Batch, DataError> {
        check_shape(batch, seq_len)?;
        self.corpus.check_windows(seq_len)?;
        // Window starts per span: len - seq_len (each needs seq_len + 1 bytes).
        let starts: Vec<usize> = self
            .corpus
            .spans()
            .iter()
            .map(|s| s.len() - seq_len)
            .collect();
        let total: usize = starts.iter().sum();
        let windows: Vec<(usize, usize)> = (0..batch)
            .map(|_| {
                let mut draw = self.rng.below(total);
                let mut span_index = 0;
                while draw >= starts[span_index] {
                    draw -= starts[span_index];
                    span_index += 1;
                }
                (span_index, draw)
            })
            .collect();
        Ok(Batch::from_windows(&self.corpus, &windows, seq_len))
    }
}

impl Corpus {
    /// A fixed set of evaluation batches, the same at every call, so validation loss is comparable
    /// across steps. The windows tile each span without overlap (starts at 0, seq_len, 2 seq_len,
    /// ...) and are ordered by their relative position in their span, so the first batches already
    /// draw from every domain in proportion to its size. Returns at most `max_batches` full batches
    /// (`usize::MAX` for all); a last partial batch is left out so every batch has the same shape.
    /// Fails when there is not one full batch of windows.
    pub fn eval_batches(
        &self,
        batch: usize,
        seq_len: usize,
        max_batches: usize,
    ) -> Result<Vec<Batch>, DataError> {
        check_shape(batch, seq_len)?;
        self.check_windows(seq_len)?;
        let windows_in = |span: &Span| (span.len() - 1) / seq_len;
        let mut windows: Vec<(f64, usize, usize)> = Vec::new();
        for (span_index, span) in self.spans().iter().enumerate() {
            let count = windows_in(span);
            for k in 0..count {
                windows.push(((k as f64 + 0.5) / count as f64, span_index, k * seq_len));
            }
        }
        windows.sort_by(|a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)));
        if windows.len() < batch {
            return Err(DataError::TooFewWindows {
                corpus: self.name().to_owned(),
                windows: windows.len(),
                batch,
                seq_len,
            });
        }
        let starts: Vec<(usize, usize)> = windows
            .iter()
            .map(|&(_, span, offset)| (span, offset))
            .collect();
        Ok(starts
            .chunks_exact(batch)
            .take(max_batches)
            .map(|rows| Batch::from_windows(self, rows, seq_len))
            .collect())
    }

    /// The first `len` tokens of the first domain: for the validation part of a split, held-out
    /// text starting on a line, the same at every call (for generation and benchmarks).
    pub fn prompt(&self, len: usize) -> Result<Vec<u32>, DataError> {
        self.prompt_in(0, len)
    }

    /// The first `len` tokens of `domain`'s first span.
    pub fn prompt_in(&self, domain: u16, len: usize) -> Result<Vec<u32>, DataError> {
        let span = self.spans().iter().find(|s| s.domain == domain);
        let available = span.map_or(0, Span::len);
        match span {
            Some(span) if len <= available => Ok(super::encode_bytes(
                &self.bytes()[span.start..span.start + len],
            )),
            _ => Err(DataError::PromptTooLong {
                corpus: self.name().to_owned(),
                len,
                available,
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn split() -> (Corpus, Corpus) {
        Corpus::embedded().split(0.05).unwrap()
    }

    #[test]
    fn targets_are_the_inputs_shifted_by_one() {
        let (train, _) = split();
        let mut sampler = BatchSampler::new(train, 3);
        let batch = sampler.next_batch(4, 32).unwrap();
        assert_eq!(
            (batch.inputs.len(), batch.targets.len(), batch.domains.len()),
            (128, 128, 128)
        );
        for row in 0..4 {
            let (inputs, targets) = (
                &batch.inputs[row * 32..][..32],
                &batch.targets[row * 32..][..32],
            );
            assert_eq!(&inputs[1..], &targets[..31], "row {row}");
        }
        // The last target of a row is the corpus byte after its last input: find the row's text.
        let text = sampler.corpus().bytes();
        let row: Vec<u8> = batch.inputs[..32].iter().map(|&t| t as u8).collect();
        let at = text.windows(32).position(|w| w == row.as_slice()).unwrap();
        assert_eq!(u32::from(text[at + 32]), batch.targets[31]);
    }

    #[test]
    fn same_seed_same_batches_other_seed_other_batches() {
        let (train, _) = split();
        let draw = |seed| {
            let mut sampler = BatchSampler::new(train.clone(), seed);
            (0..3)
                .map(|_| sampler.next_batch(8, 64).unwrap())
                .collect::<Vec<_>>()
        };
        assert_eq!(draw(11), draw(11));
        assert_ne!(draw(11), draw(12));
    }

    #[test]
    fn domains_label_each_token_with_the_domain_of_its_text() {
        let (train, _) = split();
        let mut sampler = BatchSampler::new(train, 5);
        let mut seen = [false; 4];
        for _ in 0..20 {
            let batch = sampler.next_batch(16, 64).unwrap();
            for (row, domains) in batch.domains.chunks(64).enumerate() {
                assert!(
                    domains.iter().all(|&d| d == domains[0]),
                    "a row stays in one domain"
                );
                seen[usize::from(domains[0])] = true;
                let inputs = &batch.inputs[row * 64..][..64];
                if domains[0] == 1 {
                    // Arithmetic text is digits, operators, '=' and newlines only.
                    assert!(inputs
                        .iter()
                        .all(|&t| b"0123456789+-*/=\n".contains(&(t as u8))));
                }
            }
        }
        assert_eq!(seen, [true; 4], "every domain is sampled");
    }

    #[test]
    fn eval_batches_are_fixed_cover_every_domain_and_stay_in_validation_text() {
        let corpus = Corpus::embedded();
        let (train, val) = corpus.split(0.05).unwrap();
        let first = val.eval_batches(16, 128, 4).unwrap();
        assert_eq!(first, val.eval_batches(16, 128, 4).unwrap());
        assert_eq!(first.len(), 4);
        let mut seen = [false; 4];
        for batch in &first {
            batch
                .domains
                .iter()
                .for_each(|&d| seen[usize::from(d)] = true);
        }
        assert_eq!(
            seen, [true; 4],
            "the first batches already cover every domain"
        );

        let all = val.eval_batches(16, 128, usize::MAX).unwrap();
        let windows: usize = val.spans().iter().map(|s| (s.len() - 1) / 128).sum();
        assert_eq!(all.len(), windows / 16);
        assert_eq!(all.len(), 38, "the figure in docs/data.md");
        // Map every evaluation row back to the source corpus and check it lies outside training text.
        for batch in &all {
            for row in batch.inputs.chunks(128) {
                let row: Vec<u8> = row.iter().map(|&t| t as u8).collect();
                let at = val
                    .bytes()
                    .windows(128)
                    .position(|w| w == row.as_slice())
                    .unwrap();
                let span = val
                    .spans()
                    .iter()
                    .find(|s| s.start <= at && at + 128 < s.end)
                    .unwrap();
                let source = span.origin + (at - span.start);
                for t in train.spans() {
                    assert!(
                        source + 129 <= t.origin || source >= t.origin + t.len(),
                        "overlaps training text"
                    );
                }
            }
        }
    }

    #[test]
    fn too_few_windows_or_empty_shapes_are_errors() {
        let corpus =
            Corpus::from_domains("tiny.txt", vec![("tiny.txt".into(), vec![b'a'; 300])]).unwrap();
        let err = corpus.eval_batches(4, 128, 1).unwrap_err();
        assert!(
            matches!(err, DataError::TooFewWindows { windows: 2, .. }),
            "{err}"
        );
        assert!(err.to_string().contains("tiny.txt"));
        assert!(matches!(
            corpus.eval_batches(0, 128, 1),
            Err(DataError::EmptyShape { .. })
        ));
        let mut sampler = BatchSampler::new(corpus, 1);
        assert!(matches!(
            sampler.next_batch(1, 300),
            Err(DataError::TooShort { needed: 301, .. })
        ));
        assert_eq!(sampler.next_batch(2, 299).unwrap().inputs.len(), 598);
    }

    #[test]
    fn prompt_is_held_out_text_of_the_requested_length() {
        let (_, val) = split();
        let prompt = val.prompt(64).unwrap();
        assert_eq!(prompt.len(), 64);
        assert_eq!(prompt, crate::data::encode_bytes(&val.bytes()[..64]));
        let arithmetic = val.prompt_in(1, 16).unwrap();
        assert!(arithmetic
            .iter()
            .all(|&t| b"0123456789+-*/=\n".contains(&(t as u8))));
        assert!(matches!(
            val.prompt(val.len() + 1),
            Err(DataError::PromptTooLong { .. })
        ));
        assert!(matches!(
            val.prompt_in(9, 1),
            Err(DataError::PromptTooLong { available: 0, .. })
        ));
    }
}
