//! `cargo bench --bench meter`: what the meter costs a measured step. glam-tiny training steps run
//! with the meter off (no sampler, no windows) and on (the estimate sensor sampled at 10 Hz plus a
//! window around every step), alternating off/on in one run so both see the same machine; the
//! medians and their ratio go into docs/performance.md.

use std::time::{Duration, Instant};

use candle_core::Device;
use sparsewatt::data::Corpus;
use sparsewatt::meter::{open_sensor, EstimateParams, Meter, SensorChoice, Workplace};
use sparsewatt::model::{tune_cpu_runtime, Model, TrainConfig, Trainer};
use sparsewatt::profile::load_model;
use sparsewatt::stats::median;

// The binary's allocator, so the benchmark measures what `sparsewatt` runs.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() {
    tune_cpu_runtime();
    let p = load_model("glam-tiny").expect("glam-tiny profile");
    let mut cfg = TrainConfig::for_profile(&p, 1000);
    cfg.batch = 8;
    let model = Model::new(&p, &Device::Cpu, 1).expect("model");
    let mut trainer = Trainer::new(model, Corpus::embedded(), cfg).expect("trainer");
    let (sensor, _) = open_sensor(
        SensorChoice::Estimate,
        &EstimateParams::cpu_generic_fallback(),
        &Workplace::Cpu,
        &[],
    )
    .expect("sensor");
    let meter = Meter::start(sensor, 10.0, Instant::now());
    for _ in 0..2 {
        trainer.train_step().expect("warm-up step");
    }
    let (mut off, mut on) = (Vec::new(), Vec::new());
    let mut window_cost = Duration::ZERO;
    for _ in 0..8 {
        let t = Instant::now();
        trainer.train_step().expect("step");
        off.push(t.elapsed().as_secs_f64());

        let t = Instant::now();
        let w0 = Instant::now();
        let w = meter.begin();
        window_cost += w0.elapsed();
        trainer.train_step().expect("step");
        let w1 = Instant::now();
        meter.end(w).expect("window");
        let _ = meter.take_samples();
        window_cost += w1.elapsed();
        on.push(t.elapsed().as_secs_f64());
    }
    let (m_off, m_on) = (median(&off).unwrap(), median(&on).unwrap());
    println!("glam-tiny train step, batch 8 x 128, median of 8 (alternating):");
    println!(
        "  meter off {:.4} s, meter on {:.4} s, ratio on/off {:.4}",
        m_off,
        m_on,
        m_on / m_off
    );
    println!(
        "  window begin+end+take_samples: {:.1} us per step ({:.4}% of a step)",
        window_cost.as_secs_f64() * 1e6 / 8.0,
        window_cost.as_secs_f64() / 8.0 / m_on * 100.0
    );
    println!(
        "  sensor reads (sampler + windows): {:.4}% of wall time",
        meter.overhead_fraction() * 100.0
    );
    meter.stop();
}
