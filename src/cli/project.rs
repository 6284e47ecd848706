//! `sparsewatt project`: training or inference cost projected onto hardware profiles.

use std::path::PathBuf;

use anyhow::Context;
use candle_core::Device;
use serde_json::{json, Value};
use sparsewatt::profile::{load_all_hardware, load_hardware, load_model, HardwareProfile};
use sparsewatt::profile::{ModelProfile, Precision};
use sparsewatt::project::probe::{
    cache_dir, cached, model_dtype, probe_bandwidth, this_machine_key, BANDWIDTH_ELEMENTS,
};
use sparsewatt::project::seed::{GLAM_SOURCE, GPT3_SOURCE, SEED_HEADER};
use sparsewatt::project::{
    calibrate_run, compare_inference, compare_training, dense_counterpart, fit_run,
    project_inference, project_training, project_training_tokens, seed_comparison, summarize_run,
    table, Calibration, InferenceSettings, ProjectError, Settings, Utilization,
    DEFAULT_GRID_KG_PER_KWH,
};
use sparsewatt::runlog::{detect_machine, read_run};
use sparsewatt::units::{percent, ratio_ascii, sig3};

use super::BadInput;

#[derive(clap::Args)]
pub struct Args {
    /// Model profile (a name from `sparsewatt profiles` or a .toml path); training FLOPs come from
    /// its accounting with --tokens, and --inference serves it.
    #[arg(long)]
    model: Option<String>,
    /// Tokens trained (with --model), e.g. 280e9.
    #[arg(long, value_name = "N", conflicts_with = "flops")]
    tokens: Option<f64>,
    /// Training FLOPs of the whole run, e.g. 3.14e23 (instead of --model and --tokens).
    #[arg(long, value_name = "F")]
    flops: Option<f64>,
    /// Hardware profile by name or path; repeat for several, or `all` [default: all].
    #[arg(long, value_name = "NAME")]
    hardware: Vec<String>,
    /// Chips the work is spread over.
    #[arg(long, value_name = "N", default_value_t = 1)]
    chips: usize,
    /// Model FLOPs utilisation, achieved / peak in (0, 1] [default: the profile's].
    #[arg(long, value_name = "F", conflicts_with = "achieved_tflops")]
    mfu: Option<f64>,
    /// Achieved TFLOP/s per chip (instead of --mfu).
    #[arg(long, value_name = "T")]
    achieved_tflops: Option<f64>,
    /// Power per chip in W [default: the profile's measured system power, else its TDP].
    #[arg(long, value_name = "W")]
    power_w: Option<f64>,
    /// Power usage effectiveness of the data centre [default: the profile's].
    #[arg(long, value_name = "F")]
    pue: Option<f64>,
    /// Grid carbon intensity, kgCO2e per kWh [default: 0.429, Patterson et al. 2021's US figure].
    #[arg(long, value_name = "F")]
    grid_kg_per_kwh: Option<f64>,
    /// Number format: bf16, fp16, fp32 or fp8 [default: the profile's].
    #[arg(long)]
    precision: Option<String>,
    /// Put this model beside --model [default: --model's dense_baseline, if it names one].
    #[arg(long, value_name = "OTHER")]
    compare: Option<String>,
    /// Project serving --model instead of training it: a roofline of prefill and decode.
    #[arg(long)]
    inference: bool,
    /// Sequences served together (with --inference).
    #[arg(long, value_name = "B", default_value_t = 1)]
    batch: usize,
    /// Prompt length for prefill and cached tokens for decode (with --inference) [default: the
    /// model's seq_len].
    #[arg(long, value_name = "C")]
    context: Option<usize>,
    /// Compare a measured run folder with the projection for its machine (the run's hardware
    /// profile, else cpu-generic). With --model and without --tokens: predict --model's training
    /// tokens/s and J/token on the run's machine from a roofline fitted to the run.
    #[arg(long, value_name = "RUN_DIR")]
    calibrate: Option<PathBuf>,
    /// Override --model's number of experts (e.g. glam-tiny at 64).
    #[arg(long, value_name = "N")]
    experts: Option<usize>,
    /// With --calibrate: carry the run's utilisation and power ratios onto the projections.
    #[arg(long, requires = "calibrate")]
    carry: bool,
    /// Print JSON: one object for one hardware profile, an array for several.
    #[arg(long)]
    json: bool,
    /// The seed's full-size comparison: GLaM 64B/64E against its dense base and GPT-3 175B, each
    /// as its published run was set up, beside the published MWh and GFLOPs per token (also
    /// printed after a training projection of glam-64b-64e).
    #[arg(long, conflicts_with_all = ["model", "flops", "inference", "calibrate"])]
    seed: bool,
}

/// The seed's comparison as a table with its two answers and the published figures' sources.
fn print_seed(json: bool) -> anyhow::Result<()> {
    let c = seed_comparison().map_err(user_err)?;
    if json {
        println!("{}", serde_json::to_string_pretty(&c)?);
        return Ok(());
    }
    println!(
        "The seed's full-size comparison (GLaM 64B/64E against its dense base and GPT-3 175B):"
    );
    print!("{}", table::grid(&SEED_HEADER, &c.cells()));
    for l in c.summary_lines() {
        println!("{l}");
    }
    for r in &c.rows {
        println!("{}: {}", r.model, r.setup);
    }
    println!("Published: {GLAM_SOURCE} (GLaM); {GPT3_SOURCE} (GPT-3).");
    for n in &c.notes {
        println!("note: {n}");
    }
    Ok(())
}

/// Settings errors are the user's input; profile errors keep their type (both exit 2).
fn user_err(e: ProjectError) -> anyhow::Error {
    match e {
        ProjectError::Setting { setting, message } => {
            BadInput(format!("--{}: {message}", setting.replace('_', "-"))).into()
        }
        ProjectError::Profile(p) => p.into(),
        ProjectError::Run(r) => anyhow::Error::new(BadInput(r.to_string())),
    }
}

fn hardware_list(names: &[String]) -> anyhow::Result<Vec<HardwareProfile>> {
    if names.is_empty() || names.iter().any(|n| n == "all") {
        return Ok(load_all_hardware()?);
    }
    names
        .iter()
        .map(|n| load_hardware(n).with_context(|| format!("loading hardware profile `{n}`")))
        .collect()
}

fn training_settings(args: &Args) -> anyhow::Result<Settings> {
    let mut s = Settings::new(args.chips);
    s.utilization = match (args.mfu, args.achieved_tflops) {
        (Some(u), _) => Some(Utilization::Mfu(u)),
        (None, Some(t)) => Some(Utilization::AchievedFlops(t * 1e12)),
        (None, None) => None,
    };
    s.power_w_per_chip = args.power_w;
    s.pue = args.pue;
    s.grid_kg_per_kwh = args.grid_kg_per_kwh.unwrap_or(DEFAULT_GRID_KG_PER_KWH);
    s.precision = precision(args)?;
    Ok(s)
}

fn precision(args: &Args) -> anyhow::Result<Option<Precision>> {
    args.precision
        .as_deref()
        .map(|p| {
            Precision::parse(p).ok_or_else(|| {
                BadInput(format!(
                    "--precision: `{p}` is not one of bf16, fp16, fp32, fp8"
                ))
                .into()
            })
        })
        .transpose()
}

fn load(name: &str) -> anyhow::Result<ModelProfile> {
    load_model(name).with_context(|| format!("loading model profile `{name}`"))
}

/// --model with --experts applied.
fn load_main(args: &Args, name: &str) -> anyhow::Result<ModelProfile> {
    Ok(load(name)?.with_overrides(args.experts, None)?)
}

/// `--calibrate RUN --model OTHER`: OTHER's training on the run's machine, from the run's roofline.
fn local(args: &Args, dir: &std::path::Path, name: &str) -> anyhow::Result<()> {
    let run = read_run(dir).map_err(|e| user_err(e.into()))?;
    let summary = summarize_run(&run.header, &run.records);
    // A run from before the bandwidth was probed, read on the machine it ran on: probe it now.
    let here = detect_machine(&run.header.machine.device, None);
    let same = here.cpu_model == run.header.machine.cpu_model
        && here.logical_cpus == run.header.machine.logical_cpus;
    let has = run
        .header
        .machine
        .peak
        .as_ref()
        .and_then(|p| p.measurement.as_ref()?.memory_bytes_per_s)
        .is_some();
    // This machine's cached probe first: a probe now is at the mercy of the machine's load.
    let probed = (same && !has && run.header.machine.device == "cpu").then(|| {
        cache_dir()
            .and_then(|d| cached(&d, &this_machine_key("cpu", model_dtype(&Device::Cpu))))
            .and_then(|m| m.memory_bytes_per_s)
            .unwrap_or_else(|| probe_bandwidth(BANDWIDTH_ELEMENTS, 1, 5))
    });
    let fit = fit_run(&run, &summary, probed).map_err(user_err)?;
    let p = fit.predict(&load_main(args, name)?);
    if args.json {
        println!("{}", serde_json::to_string_pretty(&p)?);
        return Ok(());
    }
    print!("{}", table::local_table(&p));
    Ok(())
}

/// The model to put beside --model: --compare, else its dense baseline.
fn other_model(args: &Args, model: &ModelProfile) -> anyhow::Result<Option<ModelProfile>> {
    match &args.compare {
        Some(o) => Ok(Some(load(o)?)),
        None => dense_counterpart(model)
            .with_context(|| format!("loading the dense baseline of `{}`", model.name)),
    }
}

/// One JSON object or an array, as the acceptance scripts read it.
fn print_json(items: Vec<Value>) -> anyhow::Result<()> {
    let v = if items.len() == 1 {
        items.into_iter().next().unwrap_or(Value::Null)
    } else {
        Value::Array(items)
    };
    println!("{}", serde_json::to_string_pretty(&v)?);
    Ok(())
}

fn with(mut base: Value, key: &str, extra: Value) -> Value {
    if let Value::Object(m) = &mut base {
        m.insert(key.to_string(), extra);
    }
    base
}

pub fn run(args: Args) -> anyhow::Result<()> {
    if args.seed {
        return print_seed(args.json);
    }
    let hardware = hardware_list(&args.hardware)?;
    let calibration = match &args.calibrate {
        Some(dir) => Some(calibrate_run(dir, None).map_err(user_err)?),
        None => None,
    };
    if args.inference {
        return inference(&args, &hardware);
    }
    if let (Some(dir), Some(name), None, None) =
        (&args.calibrate, &args.model, args.tokens, args.flops)
    {
        return local(&args, dir, name);
    }
    if args.flops.is_none() && args.model.is_none() {
        if let Some(c) = &calibration {
            return print_calibration(&args, c);
        }
        return Err(BadInput(
            "give --flops F, or --model NAME --tokens N (or --inference with --model)".into(),
        )
        .into());
    }
    if args.calibrate.is_some() && !args.json {
        if let Some(c) = &calibration {
            print_calibration(&args, c)?;
            println!();
        }
    }
    let base = training_settings(&args)?;
    let settings_for = |hw: &HardwareProfile| -> Settings {
        match (&calibration, args.carry) {
            (Some(c), true) => c.carry(hw, &base).unwrap_or_else(|| base.clone()),
            _ => base.clone(),
        }
    };
    if let Some(flops) = args.flops {
        if args.model.is_some() {
            return Err(
                BadInput("give either --flops or --model with --tokens, not both".into()).into(),
            );
        }
        let ps = hardware
            .iter()
            .map(|hw| project_training(flops, hw, &settings_for(hw)).map_err(user_err))
            .collect::<anyhow::Result<Vec<_>>>()?;
        if args.json {
            return print_json(ps.iter().map(|p| json!(p)).collect());
        }
        let label = format!("{} FLOPs", sig3(flops));
        let rows: Vec<_> = ps.iter().map(|p| (label.clone(), p)).collect();
        print!("{}", table::training_table(&rows));
        return Ok(());
    }
    training(&args, &hardware, &settings_for)
}

/// `--model NAME --tokens N [--compare OTHER]`: the training projection on each chip.
fn training(
    args: &Args,
    hardware: &[HardwareProfile],
    settings_for: &dyn Fn(&HardwareProfile) -> Settings,
) -> anyhow::Result<()> {
    let name = args.model.as_deref().unwrap_or_default();
    let model = load_main(args, name)?;
    let tokens = args
        .tokens
        .ok_or_else(|| BadInput("--model without --inference needs --tokens N".into()))?;
    let other = other_model(args, &model)?;
    let mut json_items = Vec::new();
    let mut rows = Vec::new();
    let mut ratios = Vec::new();
    for hw in hardware {
        let s = settings_for(hw);
        match &other {
            Some(o) => {
                let c = compare_training(&model, o, tokens, hw, &s).map_err(user_err)?;
                json_items.push(with(
                    json!(c.sparse),
                    "compare",
                    json!({ "model": o.name, "projection": c.dense,
                            "ratio": { "flops": c.flops_ratio, "hours": c.hours_ratio,
                                       "energy": c.energy_ratio } }),
                ));
                ratios.push(format!(
                    "{}: {} / {} energy {}, FLOPs {}",
                    hw.name,
                    model.name,
                    o.name,
                    ratio_ascii(c.energy_ratio),
                    ratio_ascii(c.flops_ratio)
                ));
                rows.push((model.name.clone(), c.sparse));
                rows.push((o.name.clone(), c.dense));
            }
            None => {
                let p = project_training_tokens(&model, tokens, hw, &s).map_err(user_err)?;
                json_items.push(json!(p));
                rows.push((model.name.clone(), p));
            }
        }
    }
    if args.json {
        return print_json(json_items);
    }
    let refs: Vec<_> = rows.iter().map(|(l, p)| (l.clone(), p)).collect();
    print!("{}", table::training_table(&refs));
    println!(
        "\n{} tokens trained; J/token: facility energy per token trained.",
        sig3(tokens)
    );
    for r in ratios {
        println!("{r}");
    }
    if model.name == sparsewatt::project::seed::GLAM {
        println!();
        print_seed(false)?;
    }
    Ok(())
}

fn inference(args: &Args, hardware: &[HardwareProfile]) -> anyhow::Result<()> {
    let name = args
        .model
        .as_deref()
        .ok_or_else(|| BadInput("--inference needs --model NAME".into()))?;
    if args.flops.is_some() || args.tokens.is_some() {
        return Err(BadInput(
            "--inference takes --batch and --context, not --flops or --tokens".into(),
        )
        .into());
    }
    let model = load_main(args, name)?;
    let other = other_model(args, &model)?;
    let mut s = InferenceSettings::new(
        args.chips,
        args.batch,
        args.context.unwrap_or(model.seq_len),
    );
    s.precision = precision(args)?;
    s.compute_utilization = args.mfu;
    s.power_w_per_chip = args.power_w;
    s.pue = args.pue;
    let mut json_items = Vec::new();
    let mut all = Vec::new();
    let mut ratios = Vec::new();
    for hw in hardware {
        match &other {
            Some(o) => {
                let c = compare_inference(&model, o, hw, &s).map_err(user_err)?;
                json_items.push(with(
                    json!(c.sparse),
                    "compare",
                    json!({ "model": o.name, "projection": c.dense,
                            "ratio": { "prefill_joules_per_token": c.prefill_joules_per_token_ratio,
                                       "decode_joules_per_token": c.decode_joules_per_token_ratio,
                                       "decode_tokens_per_s": c.decode_tokens_per_s_ratio,
                                       "decode_flops_per_token": c.decode_flops_per_token_ratio } }),
                ));
                ratios.push(format!(
                    "{}: {} / {} decode J/token {}, tokens/s {}, FLOPs/token {}",
                    hw.name,
                    model.name,
                    o.name,
                    ratio_ascii(c.decode_joules_per_token_ratio),
                    ratio_ascii(c.decode_tokens_per_s_ratio),
                    ratio_ascii(c.decode_flops_per_token_ratio)
                ));
                all.push(c.sparse);
                all.push(c.dense);
            }
            None => {
                let p = project_inference(&model, hw, &s).map_err(user_err)?;
                json_items.push(json!(p));
                all.push(p);
            }
        }
    }
    if args.json {
        return print_json(json_items);
    }
    let refs: Vec<_> = all.iter().collect();
    print!("{}", table::inference_table(&refs));
    println!(
        "\n{} chip(s), batch {}, context {}; prefill per prompt token, decode per generated token; times per step.",
        s.chips, s.batch, s.context
    );
    let mut notes: Vec<&String> = all.iter().flat_map(|p| &p.notes).collect();
    notes.sort();
    notes.dedup();
    for n in notes {
        println!("note: {n}");
    }
    for r in ratios {
        println!("{r}");
    }
    Ok(())
}

fn print_calibration(args: &Args, c: &Calibration) -> anyhow::Result<()> {
    if args.json {
        println!("{}", serde_json::to_string_pretty(c)?);
        return Ok(());
    }
    println!(
        "Calibration against `{}` (projected: peak x default MFU; power without PUE):",
        c.hardware
    );
    print!("{}", table::calibration_table(c));
    println!("MFU = measured FLOP/s over the {}.", c.peak.describe());
    if let Some(p) = c.phases.iter().find(|p| p.run_utilization.is_some()) {
        println!(
            "Against the run's own peak (from {}), as in summary.json: {}.",
            p.run_peak_from.as_deref().unwrap_or("unknown"),
            c.phases
                .iter()
                .filter_map(|p| Some(format!(
                    "{} {} {}",
                    p.model,
                    p.phase.label(),
                    percent(p.run_utilization?, 1)
                )))
                .collect::<Vec<_>>()
                .join(", ")
        );
    }
    Ok(())
}
