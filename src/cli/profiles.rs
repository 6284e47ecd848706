//! `sparsewatt profiles`: the model profiles with their key figures.

use anyhow::Context;
use serde_json::json;
use sparsewatt::accounting::{
    forward_flops_per_token, matched_dense, params, train_flops_per_token,
};
use sparsewatt::profile::{load_model, names, Kind};
use sparsewatt::project::table::grid;
use sparsewatt::units::{count, signed_percent};

#[derive(clap::Args)]
pub struct Args {
    /// Print the key figures as JSON.
    #[arg(long)]
    json: bool,
    /// Print, as a profile file, the compute-matched dense baseline of this sparse model (the
    /// one `run --baseline matched` trains).
    #[arg(long, value_name = "MODEL")]
    matched: Option<String>,
}

pub fn run(args: Args) -> anyhow::Result<()> {
    if let Some(name) = &args.matched {
        return print_matched(name);
    }
    let mut rows = Vec::new();
    let mut items = Vec::new();
    for n in names(Kind::Model) {
        let p = load_model(&n).with_context(|| format!("loading model profile `{n}`"))?;
        let c = params(&p);
        let fwd = forward_flops_per_token(&p, p.seq_len).total();
        let train = train_flops_per_token(&p).total();
        items.push(json!({
            "name": p.name, "params_total": c.total, "params_active": c.active,
            "forward_flops_per_token": fwd, "train_flops_per_token": train,
            "experts": p.experts, "top_k": p.top_k, "layers": p.layers, "d_model": p.d_model,
            "seq_len": p.seq_len, "dense_baseline": p.dense_baseline,
            "ffn": p.ffn.label(), "expert_ffn": p.expert_ffn.label(),
        }));
        rows.push(vec![
            p.name.clone(),
            count(c.total),
            count(c.active),
            count(fwd),
            count(train),
            if p.is_sparse() {
                format!("{} top-{} every {}", p.experts, p.top_k, p.moe_every)
            } else {
                "dense".into()
            },
            p.layers.to_string(),
            p.d_model.to_string(),
            p.seq_len.to_string(),
            p.dense_baseline.clone().unwrap_or_else(|| "-".into()),
        ]);
    }
    if args.json {
        println!("{}", serde_json::to_string_pretty(&items)?);
        return Ok(());
    }
    let headers = [
        "name",
        "params",
        "active",
        "fwd FLOPs/token",
        "train FLOPs/token",
        "experts",
        "layers",
        "d_model",
        "seq_len",
        "dense baseline",
    ];
    print!("{}", grid(&headers, &rows));
    println!("\nFLOPs per token at seq_len, attention counted in full (docs/accounting.md).");
    Ok(())
}

/// The derived profile as TOML, headed by a comment with both models' training FLOPs per token.
fn print_matched(name: &str) -> anyhow::Result<()> {
    let sparse = load_model(name).map_err(|e| super::BadInput(e.to_string()))?;
    let dense = matched_dense(&sparse);
    let (s, d) = (
        train_flops_per_token(&sparse).total(),
        train_flops_per_token(&dense).total(),
    );
    println!(
        "# {}: the compute-matched dense baseline of {} (sparsewatt profiles --matched {name}).\n\
         # Training FLOPs per token: {} against {}'s {} ({}).",
        dense.name,
        sparse.name,
        count(d),
        sparse.name,
        count(s),
        signed_percent(d / s - 1.0, 2)
    );
    print!("{}", dense.to_toml());
    Ok(())
}
