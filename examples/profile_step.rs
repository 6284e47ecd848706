use candle_core::{Device, Tensor};
use sparsewatt::model::{cross_entropy, Model};
use sparsewatt::profile::load_model;
use std::time::Instant;
fn main() {
    let name = std::env::args().nth(1).unwrap_or("glam-tiny".into());
    let p = load_model(&name).unwrap();
    let m = Model::new(&p, &Device::Cpu, 1).unwrap();
    let toks: Vec<u32> = (0..16 * 128u32).map(|i| (i * 7919) % 256).collect();
    let x = m.ids(&toks, 16).unwrap();
    let tg = Tensor::from_slice(&toks, 16 * 128, &Device::Cpu).unwrap();
    for _ in 0..4 {
        let t = Instant::now();
        let f = m.forward(&x).unwrap();
        let l = cross_entropy(&f.logits, &tg).unwrap();
        let l = match &f.aux_loss {
            Some(a) => (l + a).unwrap(),
            None => l,
        };
        let t1 = t.elapsed().as_secs_f64();
        let g = l.backward().unwrap();
        let t2 = t.elapsed().as_secs_f64();
        drop(g);
        println!("fwd {:.3} bwd {:.3}", t1, t2 - t1);
    }
}
