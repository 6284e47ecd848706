//! Byte tokens, the embedded default corpus, user corpora, batching and the train/validation split.
//!
//! ```no_run
//! use sparsewatt::data::{BatchSampler, Corpus};
//! # fn main() -> Result<(), sparsewatt::data::DataError> {
//! let corpus = Corpus::load(None)?; // the embedded corpus; Some(path) for `--data FILE`
//! let (train, val) = corpus.split(0.05)?;
//! train.check_windows(128)?;
//! val.check_windows(128)?;
//! let mut sampler = BatchSampler::new(train, 42);
//! let batch = sampler.next_batch(16, 128)?; // random windows, inputs and targets shifted by one
//! let eval = val.eval_batches(16, 128, 8)?; // the same windows at every evaluation
//! let prompt = val.prompt(64)?; // 64 tokens of held-out text
//! # Ok(()) }
//! ```

mod batch;
mod corpus;
mod generate;
pub(crate) mod rng;
mod tokenizer;

use std::path::PathBuf;

pub use batch::{Batch, BatchSampler};
pub use corpus::{Corpus, Span};
pub use generate::{generate, DOMAIN_NAMES, EMBEDDED_BYTES_PER_DOMAIN, EMBEDDED_SEED};
pub use tokenizer::{decode, encode, encode_bytes, VOCAB_SIZE};

/// What can go wrong with a corpus. A corpus is named by its file path (or "embedded"), and a
/// split part carries the part in its name (`notes.txt [validation]`), so every message says
/// which file and which part is at fault.
#[derive(Debug, thiserror::Error)]
pub enum DataError {
    #[error("cannot read corpus file {path}: {source}")]
    Unreadable {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("corpus file {path} is empty")]
    EmptyFile { path: PathBuf },
    #[error("corpus {corpus} has no domains")]
    NoDomains { corpus: String },
    #[error("corpus {corpus}: domain {domain:?} has no text")]
    EmptyDomain { corpus: String, domain: String },
    #[error("corpus {corpus}: {domains} domains, more than the {max} a u16 domain index holds")]
    TooManyDomains {
        corpus: String,
        domains: usize,
        max: usize,
    },
    #[error("validation fraction {value} must be strictly between 0 and 1")]
    BadFraction { value: f64 },
    #[error(
        "corpus {corpus}: domain {domain:?} has {len} bytes, too few to split with validation fraction {val_fraction} \
         (both parts must keep at least one byte)"
    )]
    TooShortToSplit {
        corpus: String,
        domain: String,
        len: usize,
        val_fraction: f64,
    },
    #[error(
        "corpus {corpus}: domain {domain:?} has {len} bytes, fewer than the {needed} that one window of seq_len \
         {seq_len} needs (inputs plus the next-token target); give a longer file or a shorter --seq-len"
    )]
    TooShort {
        corpus: String,
        domain: String,
        len: usize,
        seq_len: usize,
        needed: usize,
    },
    #[error(
        "corpus {corpus}: {windows} evaluation windows of seq_len {seq_len}, fewer than one batch of {batch}; \
         give a longer file, a smaller batch or a shorter --seq-len"
    )]
    TooFewWindows {
        corpus: String,
        windows: usize,
        batch: usize,
        seq_len: usize,
    },
    #[error("corpus {corpus}: a prompt of {len} tokens is longer than the {available} bytes of its first domain")]
    PromptTooLong {
        corpus: String,
        len: usize,
        available: usize,
    },
    #[error(
        "batch shape {batch} x {seq_len}: batch size and sequence length must both be at least 1"
    )]
    EmptyShape { batch: usize, seq_len: usize },
}
