//! Plain-text tables of a [`Summary`]: one model per component, or two side by side with ratios.

use std::collections::BTreeMap;
use std::fmt::Write;

use super::summary::Summary;
use super::Component;
use crate::units::{count, count_unit, ratio_ascii};
use crate::vocab::Phase;

fn get(map: &BTreeMap<Component, f64>, c: Component) -> f64 {
    map.get(&c).copied().unwrap_or(0.0)
}

fn ratio(a: f64, b: f64) -> String {
    if b == 0.0 {
        if a == 0.0 {
            "-".into()
        } else {
            "n/a".into()
        }
    } else {
        ratio_ascii(a / b)
    }
}

/// The account of one model: a row per component, then totals and bytes per token.
pub fn render(s: &Summary) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "{}", header(s));
    let _ = writeln!(
        out,
        "{:<12} {:>10} {:>10} {:>12} {:>14}",
        "component", "params", "active", "fwd FLOP/tok", "train FLOP/tok"
    );
    let row = |out: &mut String, name: &str, pt: f64, pa: f64, f: f64, t: f64| {
        let _ = writeln!(
            out,
            "{name:<12} {:>10} {:>10} {:>12} {:>14}",
            count(pt),
            count(pa),
            count(f),
            count(t)
        );
    };
    for c in Component::ALL {
        let p = s.params_of(c);
        let f = get(&s.flops_by_component.forward, c);
        let t = get(&s.flops_by_component.train, c);
        if p.total == 0.0 && f == 0.0 {
            continue;
        }
        row(&mut out, c.label(), p.total, p.active, f, t);
    }
    let ft = &s.flops_per_token;
    row(
        &mut out,
        "total",
        s.params_total,
        s.params_active,
        ft.forward,
        ft.train,
    );
    if let Some(line) = published_line(s) {
        let _ = writeln!(out, "{line}");
    }
    let _ = writeln!(
        out,
        "\nFLOPs per token: forward {} (causal-halved attention {}), train {}, prefill {}, decode {} at position {} (mean {} over {} generated)",
        count(ft.forward),
        count(ft.forward_causal),
        count(ft.train),
        count(ft.prefill),
        count(ft.decode),
        s.ctx_len - 1,
        count(ft.decode_avg),
        s.ctx_len
    );
    let _ = writeln!(
        out,
        "\nbytes per token at batch {} ({} B/param, {} B/activation):",
        s.batch, s.bytes_per_param, s.bytes_per_act
    );
    let _ = writeln!(
        out,
        "{:<8} {:>10} {:>11} {:>10} {:>10} {:>10}",
        "phase", "weights", "activations", "kv read", "kv write", "total"
    );
    let b = &s.bytes_per_token;
    for (phase, c) in [
        (Phase::Train, b.train),
        (Phase::Prefill, b.prefill),
        (Phase::Decode, b.decode),
    ] {
        let _ = writeln!(
            out,
            "{:<8} {:>10} {:>11} {:>10} {:>10} {:>10}",
            phase.label(),
            count_unit(c.weights_read, "B"),
            count_unit(c.activations, "B"),
            count_unit(c.kv_read, "B"),
            count_unit(c.kv_written, "B"),
            count_unit(c.total(), "B")
        );
    }
    out
}

/// The published totals beside the count: "published: total 46.7 B (counted 46.7 B, +0.0%), ...".
fn published_line(s: &Summary) -> Option<String> {
    let one = |what: &str, published: Option<f64>, counted: f64| {
        published.map(|p| {
            format!(
                "{what} {} (counted {}, {:+.1}%)",
                count(p),
                count(counted),
                100.0 * (counted - p) / p
            )
        })
    };
    let parts: Vec<String> = [
        one("total", s.published_params_total, s.params_total),
        one("active", s.published_params_active, s.params_active),
    ]
    .into_iter()
    .flatten()
    .collect();
    (!parts.is_empty()).then(|| format!("published params: {}", parts.join(", ")))
}

fn header(s: &Summary) -> String {
    // The experts' kind only where the model has experts.
    let ffn = if s.params_of(Component::Experts).total > 0.0 {
        format!("{} / experts {}", s.ffn.label(), s.expert_ffn.label())
    } else {
        s.ffn.label().to_string()
    };
    let mut h = format!(
        "{}: seq_len {}, ctx {}, FFN {ffn}, FLOPs per token (a multiply-add = 2 FLOPs)",
        s.model, s.seq_len, s.ctx_len
    );
    if let Some(src) = &s.source {
        let _ = write!(h, "\nsource: {src}");
    }
    h
}

/// Two models side by side, per component and in total, with the ratio a / b.
pub fn render_compare(a: &Summary, b: &Summary) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{} vs {} (ratio = {} / {}); FLOPs per token, forward at ctx {} / {}",
        a.model, b.model, a.model, b.model, a.ctx_len, b.ctx_len
    );
    let _ = writeln!(
        out,
        "{:<22} {:>10} {:>10} {:>8}",
        "", a.model, b.model, "ratio"
    );
    let row = |out: &mut String, name: &str, x: f64, y: f64| {
        let _ = writeln!(
            out,
            "{name:<22} {:>10} {:>10} {:>8}",
            count(x),
            count(y),
            ratio(x, y)
        );
    };
    row(&mut out, "params total", a.params_total, b.params_total);
    row(&mut out, "params active", a.params_active, b.params_active);
    let (fa, fb) = (&a.flops_per_token, &b.flops_per_token);
    row(&mut out, "FLOPs/token forward", fa.forward, fb.forward);
    row(&mut out, "FLOPs/token train", fa.train, fb.train);
    row(&mut out, "FLOPs/token prefill", fa.prefill, fb.prefill);
    row(&mut out, "FLOPs/token decode", fa.decode, fb.decode);
    let (ba, bb) = (&a.bytes_per_token.decode, &b.bytes_per_token.decode);
    row(&mut out, "decode bytes/token (B)", ba.total(), bb.total());
    let _ = writeln!(out, "\nforward FLOPs per token by component:");
    for c in Component::ALL {
        let (x, y) = (
            get(&a.flops_by_component.forward, c),
            get(&b.flops_by_component.forward, c),
        );
        if x == 0.0 && y == 0.0 {
            continue;
        }
        row(&mut out, c.label(), x, y);
    }
    let _ = writeln!(out, "\nparameters (total) by component:");
    for c in Component::ALL {
        let (x, y) = (a.params_of(c).total, b.params_of(c).total);
        if x == 0.0 && y == 0.0 {
            continue;
        }
        row(&mut out, c.label(), x, y);
    }
    out
}
