//! `cargo bench --bench model`: training, prefill and decode throughput of the tiny profiles, the
//! sparse model at 8 and 64 experts and its dense baseline, measured side by side in one run
//! (medians after warm-up; see docs/performance.md). Ratios are the figures to quote on a shared
//! machine.

use candle_core::Device;
use sparsewatt::profile::load_model;
use sparsewatt::workload::{bench, BenchConfig, BenchResult};

// The binary's allocator, so the benchmark measures what `sparsewatt` runs.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() {
    sparsewatt::model::tune_cpu_runtime();
    let base = load_model("glam-tiny").expect("glam-tiny profile");
    let variants = [
        (
            "dense-tiny",
            load_model("dense-tiny").expect("dense-tiny profile"),
        ),
        ("glam-tiny E8", base.clone()),
        (
            "glam-tiny E64",
            base.with_overrides(Some(64), None).expect("E64"),
        ),
    ];
    // Two rounds, variants interleaved, so a change in the machine's load hits all of them.
    let mut results: Vec<Vec<BenchResult>> = vec![Vec::new(); variants.len()];
    for _round in 0..2 {
        for (i, (_, p)) in variants.iter().enumerate() {
            let cfg = BenchConfig::for_profile(p);
            results[i].push(bench(p, &cfg, &Device::Cpu).expect("bench"));
        }
    }
    let best =
        |rs: &[BenchResult], f: fn(&BenchResult) -> f64| rs.iter().map(f).fold(f64::NAN, f64::max);
    println!(
        "{:<14} {:>12} {:>12} {:>12}  (tokens/s, best of 2 rounds of medians)",
        "model", "train", "prefill", "decode"
    );
    let mut rows = Vec::new();
    for ((name, _), rs) in variants.iter().zip(&results) {
        let row = (
            best(rs, |r| r.train_tokens_per_s),
            best(rs, |r| r.prefill_tokens_per_s),
            best(rs, |r| r.decode_tokens_per_s),
        );
        println!("{name:<14} {:>12.0} {:>12.0} {:>12.0}", row.0, row.1, row.2);
        rows.push(row);
    }
    println!(
        "E64/E8: train {:.2}, prefill {:.2}, decode {:.2}",
        rows[2].0 / rows[1].0,
        rows[2].1 / rows[1].1,
        rows[2].2 / rows[1].2
    );
}
