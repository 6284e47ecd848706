//! The smallest shapes that still exercise every phase of `sparsewatt run`, for the tests that
//! drive the binary; each adds its own sensor, steps and timings.
pub const SMALL_SHAPES: &[&str] = &[
    "run",
    "--headless",
    "--batch",
    "2",
    "--infer-batch",
    "1",
    "--prompt-len",
    "16",
    "--decode-tokens",
    "4",
];
