//! Byte tokenizer: a token is a byte value, so every file is valid input and the vocabulary is 256.

/// Number of distinct tokens: one per byte value.
pub const VOCAB_SIZE: usize = 256;

/// Tokens of `text`: its UTF-8 bytes, each widened to `u32`.
pub fn encode(text: &str) -> Vec<u32> {
    encode_bytes(text.as_bytes())
}

/// Tokens of raw bytes (any file, not necessarily UTF-8).
pub fn encode_bytes(bytes: &[u8]) -> Vec<u32> {
    bytes.iter().map(|&b| u32::from(b)).collect()
}

/// Text of `tokens`. Invalid UTF-8 (a model may emit half a character) becomes U+FFFD, and a token
/// outside 0..256 (never produced by [`encode`]) is also shown as U+FFFD rather than truncated.
pub fn decode(tokens: &[u32]) -> String {
    let mut text = String::with_capacity(tokens.len());
    let mut run: Vec<u8> = Vec::new();
    for &token in tokens {
        match u8::try_from(token) {
            Ok(byte) => run.push(byte),
            Err(_) => {
                text.push_str(&String::from_utf8_lossy(&run));
                run.clear();
                text.push(char::REPLACEMENT_CHARACTER);
            }
        }
    }
    text.push_str(&String::from_utf8_lossy(&run));
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encode_then_decode_returns_the_text() {
        let text = "37+45=82\nfn main() { println!(\"héllo ✓\"); }";
        let tokens = encode(text);
        assert_eq!(tokens.len(), text.len(), "one token per byte");
        assert!(tokens.iter().all(|&t| (t as usize) < VOCAB_SIZE));
        assert_eq!(decode(&tokens), text);
    }

    #[test]
    fn decode_replaces_invalid_utf8_and_out_of_range_tokens() {
        // 0xC3 starts a two-byte sequence that never completes.
        assert_eq!(decode(&[b'a' as u32, 0xC3, b'b' as u32]), "a\u{FFFD}b");
        assert_eq!(decode(&[b'x' as u32, 300, b'y' as u32]), "x\u{FFFD}y");
    }
}
