//! `sparsewatt hardware`: the hardware profiles with their key figures.

use sparsewatt::profile::load_all_hardware;
use sparsewatt::project::table;

#[derive(clap::Args)]
pub struct Args {
    /// Print every profile in full as JSON (SI units: FLOP/s, bytes, bytes/s, W).
    #[arg(long)]
    json: bool,
}

pub fn run(args: Args) -> anyhow::Result<()> {
    let all = load_all_hardware()?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&all)?);
        return Ok(());
    }
    print!("{}", table::hardware_table(&all));
    println!(
        "\npeak: dense, per chip, default precision; link: interconnect per chip, each way; \
         power: what projections use unless --power-w is given. Sources: hardware/<name>.toml."
    );
    Ok(())
}
