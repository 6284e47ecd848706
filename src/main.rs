//! The `sparsewatt` binary: parse the command line, dispatch, turn errors into exit codes.

mod cli;

// candle allocates a buffer per op; a caching allocator avoids re-faulting freed memory
// (docs/performance.md measures the difference).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    // Still single-threaded here: safe to set the environment candle reads.
    sparsewatt::model::tune_cpu_runtime();
    cli::main()
}
