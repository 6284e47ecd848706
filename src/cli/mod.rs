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
            let bad_input = e
                .chain()
                .any(|c| c.is::<ProfileError>() || c.is::<BadInput>());
            ExitCode::from(if bad_input { EXIT_BAD_INPUT } else { 1 })
        }
    }
}
