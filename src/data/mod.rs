//! Byte tokens, the embedded default corpus, user corpora, batching and the train/validation split.
