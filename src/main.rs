//! The `sparsewatt` binary: parse the command line, dispatch, turn errors into exit codes.

mod cli;

// candle allocates a buffer per op; a caching allocator avoids re-faulting freed memory
// (docs/performance.md measures the difference).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    cli::main()
}
