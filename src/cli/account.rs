//! `sparsewatt account`: parameters, FLOPs and bytes per token of a model profile.

use anyhow::Context;
use serde_json::json;
use sparsewatt::accounting::{table, AccountOptions, Summary};
use sparsewatt::profile::load_model;

use super::BadInput;

#[derive(clap::Args)]
pub struct Args {
    /// Model profile: a name (see `sparsewatt profiles`) or a path to a .toml file.
    #[arg(long)]
    model: String,
    /// Print the account as JSON (keys documented in docs/accounting.md).
    #[arg(long)]
    json: bool,
    /// Put a second model beside the first, with ratios first / second.
    #[arg(long, value_name = "OTHER")]
    compare: Option<String>,
    /// Context length for forward, prefill and decode figures [default: the profile's seq_len].
    #[arg(long, value_name = "N")]
    ctx: Option<usize>,
    /// Sequences per step, for bytes per token (weights are shared by a step's tokens).
    #[arg(long, value_name = "N", default_value_t = 1)]
    batch: usize,
    /// Bytes per stored parameter (2 = bf16, 4 = fp32).
    #[arg(long, default_value_t = 2.0)]
    bytes_per_param: f64,
    /// Bytes per activation and KV-cache element.
    #[arg(long, default_value_t = 2.0)]
    bytes_per_act: f64,
}

fn options(args: &Args) -> Result<AccountOptions, BadInput> {
    if args.ctx == Some(0) {
        return Err(BadInput("--ctx must be at least 1, got 0".into()));
    }
    if args.batch == 0 {
        return Err(BadInput("--batch must be at least 1, got 0".into()));
    }
    for (flag, v) in [
        ("--bytes-per-param", args.bytes_per_param),
        ("--bytes-per-act", args.bytes_per_act),
    ] {
        if !v.is_finite() || v <= 0.0 {
            return Err(BadInput(format!("{flag} must be a number > 0, got {v}")));
        }
    }
    Ok(AccountOptions {
        ctx_len: args.ctx,
        batch: args.batch,
        bytes_per_param: args.bytes_per_param,
        bytes_per_act: args.bytes_per_act,
    })
}

fn account(name: &str, o: &AccountOptions) -> anyhow::Result<Summary> {
    let p = load_model(name).with_context(|| format!("loading model profile `{name}`"))?;
    Ok(Summary::of(&p, o))
}

pub fn run(args: Args) -> anyhow::Result<()> {
    let o = options(&args)?;
    let a = account(&args.model, &o)?;
    let b = match &args.compare {
        Some(other) => Some(account(other, &o)?),
        None => None,
    };
    match (args.json, b) {
        (true, None) => println!("{}", serde_json::to_string_pretty(&a)?),
        (true, Some(b)) => {
            let r = |x: f64, y: f64| if y == 0.0 { None } else { Some(x / y) };
            let (fa, fb) = (&a.flops_per_token, &b.flops_per_token);
            let out = json!({
                "a": a,
                "b": b,
                "ratio": {
                    "params_total": r(a.params_total, b.params_total),
                    "params_active": r(a.params_active, b.params_active),
                    "forward": r(fa.forward, fb.forward),
                    "train": r(fa.train, fb.train),
                    "prefill": r(fa.prefill, fb.prefill),
                    "decode": r(fa.decode, fb.decode),
                },
            });
            println!("{}", serde_json::to_string_pretty(&out)?);
        }
        (false, None) => print!("{}", table::render(&a)),
        (false, Some(b)) => print!("{}", table::render_compare(&a, &b)),
    }
    Ok(())
}
