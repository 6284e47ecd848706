//! The `sparsewatt` binary: parse the command line, dispatch, turn errors into exit codes.

mod cli;

// candle allocates a buffer per op; a caching allocator avoids re-faulting freed memory
// (docs/performance.md measures the difference).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    // Still single-threaded here: safe to set the environment candle reads.
    sparsewatt::model::tune_cpu_runtime();
    // Output piped into a reader that stops early (`sparsewatt project --json | head`) ends the
    // process quietly, as for other command-line tools, instead of a panic in `println!`: Rust
    // ignores SIGPIPE by default, which turns the closed pipe into a write error.
    #[cfg(unix)]
    // SAFETY: setting a signal's disposition to the default, before any other thread exists.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
    cli::main()
}
