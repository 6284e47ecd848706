use candle_core::{Device, Tensor};
use sparsewatt::model::{cross_entropy, Model};
use sparsewatt::profile::load_model;
use std::time::Instant;
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;
fn main() {
    sparsewatt::model::tune_cpu_runtime();
    let name = std::env::args().nth(1).unwrap_or("glam-tiny".into());
    let e: Option<usize> = std::env::args().nth(2).map(|s| s.parse().unwrap());
    let p = load_model(&name).unwrap().with_overrides(e, None).unwrap();
    let m = Model::new(&p, &Device::Cpu, 1).unwrap();
    let toks: Vec<u32> = (0..16 * 128u32).map(|i| (i * 7919) % 256).collect();
    let x = m.ids(&toks, 16).unwrap();
    let tg = Tensor::from_slice(&toks, 16 * 128, &Device::Cpu).unwrap();
    let (mut f, mut b) = (vec![], vec![]);
    for _ in 0..5 {
        let t = Instant::now();
        let fw = m.forward(&x).unwrap();
        let l = cross_entropy(&fw.logits, &tg).unwrap();
        let l = match &fw.aux_loss {
            Some(a) => (l + a).unwrap(),
            None => l,
        };
        let t1 = t.elapsed().as_secs_f64();
        let g = l.backward().unwrap();
        let t2 = t.elapsed().as_secs_f64();
        drop(g);
        f.push(t1);
        b.push(t2 - t1);
    }
    f.sort_by(|a, b| a.partial_cmp(b).unwrap());
    b.sort_by(|a, b| a.partial_cmp(b).unwrap());
    println!("{name} E{:?}: fwd {:.3} bwd {:.3}", e, f[2], b[2]);
}
