//! Argument parsing and dispatch; one file per command. No logic lives here.

mod account;
mod bench;
mod generate;
mod hardware;
mod profiles;
mod project;
mod replay;
mod report;
mod run;
mod train;

use std::process::ExitCode;

use clap::{Parser, Subcommand};
use sparsewatt::profile::ProfileError;

/// What a token costs, in FLOPs and joules: a sparse mixture-of-experts model against a dense one,
/// measured here and projected onto other hardware.
#[derive(Parser)]
#[command(name = "sparsewatt", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Measure a sparse model and its dense baseline side by side (dashboard on a terminal).
    Run(run::Args),
    /// Train a model on the embedded corpus or a file, headless.
    Train(train::Args),
    /// Generate text from a checkpoint (or an untrained model).
    Generate(generate::Args),
    /// Benchmark training, prefill and decode throughput of a profile.
    Bench(bench::Args),
    /// Count parameters, FLOPs and bytes per token of a model profile.
    Account(account::Args),
    /// Project training or inference cost onto hardware profiles.
    Project(project::Args),
    /// List the hardware profiles with their key figures.
    Hardware(hardware::Args),
    /// List the model profiles with their key figures.
    Profiles(profiles::Args),
    /// Write an efficiency report of a run folder (or compare two).
    Report(report::Args),
    /// Show a finished or cut-off run in the dashboard.
    Replay(replay::Args),
}

/// Exit code for bad input (a profile, a flag value, a file): the same code clap uses for usage errors.
pub const EXIT_BAD_INPUT: u8 = 2;

/// Marks an error as the user's input being wrong, so the binary exits with [`EXIT_BAD_INPUT`].
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct BadInput(pub String);

/// Bad input whose reason is another error: `context` says which input, the source says why
/// (printed as the "caused by" chain).
#[derive(Debug, thiserror::Error)]
#[error("{context}")]
pub struct BadInputFrom {
    pub context: String,
    #[source]
    pub source: Box<dyn std::error::Error + Send + Sync>,
}

/// `e` as bad input, its chain kept under `context`.
pub fn bad_input(
    context: impl Into<String>,
    e: impl Into<Box<dyn std::error::Error + Send + Sync>>,
) -> anyhow::Error {
    BadInputFrom {
        context: context.into(),
        source: e.into(),
    }
    .into()
}

/// The exit code of a failed command, decided here only: 2 when anything in the chain is the
/// user's input being wrong (a profile, a flag's value, a file, a run folder), else 1.
fn exit_code(e: &anyhow::Error) -> u8 {
    use sparsewatt::runlog::RunFolderError;
    use sparsewatt::workload::SessionError;
    let bad_input = e.chain().any(|c| {
        c.is::<ProfileError>()
            || c.is::<BadInput>()
            || c.is::<BadInputFrom>()
            || c.downcast_ref::<SessionError>()
                .is_some_and(SessionError::is_bad_input)
            || c.downcast_ref::<RunFolderError>()
                .is_some_and(RunFolderError::is_bad_input)
    });
    if bad_input {
        EXIT_BAD_INPUT
    } else {
        1
    }
}

/// A count of at least 1 (`--batch` and the like).
fn at_least_one(s: &str) -> Result<usize, String> {
    match s.parse::<usize>() {
        Ok(0) => Err("must be at least 1, got 0".into()),
        Ok(n) => Ok(n),
        Err(e) => Err(format!("expected a whole number: {e}")),
    }
}

fn finite(s: &str) -> Result<f64, String> {
    s.parse::<f64>()
        .ok()
        .filter(|v| v.is_finite())
        .ok_or_else(|| format!("expected a number, got {s:?}"))
}

/// Seconds, 0 or more.
fn nonnegative_seconds(s: &str) -> Result<f64, String> {
    finite(s).and_then(|v| {
        (v >= 0.0)
            .then_some(v)
            .ok_or_else(|| format!("must be seconds, 0 or more, got {v}"))
    })
}

/// A validation loss above 0 (nats per token).
fn loss(s: &str) -> Result<f64, String> {
    finite(s).and_then(|v| {
        (v > 0.0)
            .then_some(v)
            .ok_or_else(|| format!("must be a validation loss above 0 (nats per token), got {v}"))
    })
}

/// Sensor readings per second, in (0, 1000].
fn sample_hz(s: &str) -> Result<f64, String> {
    finite(s).and_then(|v| {
        (v > 0.0 && v <= 1000.0)
            .then_some(v)
            .ok_or_else(|| format!("must be in (0, 1000], got {v}"))
    })
}

/// The figures of the energy estimate: a CPU hardware profile's watts (its `[cpu]` table), scaled
/// to this machine's core count.
pub fn estimate_params(hardware: &str) -> anyhow::Result<sparsewatt::meter::EstimateParams> {
    let hw = sparsewatt::profile::load_hardware(hardware)?;
    let Some(cpu) = &hw.cpu else {
        return Err(BadInput(format!(
            "{}: hardware profile {} has no [cpu] table (cores, busy_w_per_core, idle_w) for the estimate",
            hw.origin, hw.name
        ))
        .into());
    };
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    Ok(sparsewatt::meter::EstimateParams {
        profile: hw.name.clone(),
        cores,
        busy_w_per_core: cpu.busy_w_per_core,
        idle_w: cpu.idle_w / cpu.cores.max(1) as f64 * cores as f64,
    })
}

pub fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Run(a) => run::run(a),
        Command::Train(a) => train::run(a),
        Command::Generate(a) => generate::run(a),
        Command::Bench(a) => bench::run(a),
        Command::Account(a) => account::run(a),
        Command::Project(a) => project::run(a),
        Command::Hardware(a) => hardware::run(a),
        Command::Profiles(a) => profiles::run(a),
        Command::Report(a) => report::run(a),
        Command::Replay(a) => replay::run(a),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            for cause in e.chain().skip(1) {
                eprintln!("  caused by: {cause}");
            }
            ExitCode::from(exit_code(&e))
        }
    }
}
