//! Training, then inference: the order of the measured run's windows.

use std::sync::atomic::{AtomicBool, Ordering};

use super::super::Workload;
use super::blocks::{evaluate, lengthened, pair_block, phase_block, Counts};
use super::{Ctx, RunPlan};
use crate::vocab::Phase;

/// Training, then inference, in windows the sensor resolves.
pub(super) fn run_workload(
    plan: &RunPlan,
    sparse: &mut dyn Workload,
    dense: &mut dyn Workload,
    ctx: &mut Ctx,
    stop: &AtomicBool,
) -> anyhow::Result<()> {
    let mut counts = Counts::default();
    train(plan, sparse, dense, ctx, stop, &mut counts)?;
    infer(plan, sparse, dense, ctx, stop, &mut counts)
}

/// Training, A B A B in blocks, validation every `plan.eval_every` steps, until the steps or
/// the stop rule end it.
fn train(
    plan: &RunPlan,
    sparse: &mut dyn Workload,
    dense: &mut dyn Workload,
    ctx: &mut Ctx,
    stop: &AtomicBool,
    counts: &mut Counts,
) -> anyhow::Result<()> {
    let stopped = || stop.load(Ordering::SeqCst);
    if plan.train_steps > 0 && !stopped() {
        evaluate(ctx, counts, sparse, 0)?;
        evaluate(ctx, counts, dense, 0)?;
    }
    let eval_every = plan.eval_every.max(1);
    let mut train_steps = plan.train_steps;
    let mut done = 0;
    let (mut sized, mut grow) = (false, false);
    // Whether the stop rule ended training (both models at or below `until_loss`).
    let mut reached = false;
    while done < train_steps {
        if stopped() {
            return Ok(());
        }
        let timed = counts.mean_step_s(sparse.name(), Phase::Train).is_some();
        let blocks = done >= plan.warmup_steps && timed;
        if blocks && !sized {
            // The warm-up (or the first pair) timed the phase: lengthen it if it must.
            let measured = train_steps - done;
            let (want, longer) =
                lengthened(ctx, counts, plan, sparse, dense, Phase::Train, measured)?;
            train_steps = done + want;
            (sized, grow) = (true, longer);
        }
        let n = pair_block(
            ctx,
            counts,
            sparse,
            dense,
            Phase::Train,
            train_steps - done,
            plan.warmup_steps,
            blocks,
            grow,
        )?;
        let before = done;
        done += n;
        train_steps = train_steps.max(done);
        if done / eval_every > before / eval_every || done == train_steps {
            let ls = evaluate(ctx, counts, sparse, done)?;
            let ld = evaluate(ctx, counts, dense, done)?;
            if let Some(l) = plan.until_loss.filter(|&l| ls <= l && ld <= l) {
                reached = true;
                ctx.log(
                    "info",
                    format!(
                        "stop rule: both models reached validation loss {l} after {done} steps \
                         (validation {ls:.4} and {ld:.4}); training ends"
                    ),
                )?;
                break;
            }
        }
    }
    if let Some(l) = plan.until_loss {
        if !reached && !stopped() {
            ctx.log(
                "info",
                format!("stop rule: {train_steps} steps (the cap) done before both models reached validation loss {l}"),
            )?;
        }
    }
    Ok(())
}

/// Inference: one warm-up step of each phase and model (its own window, the phase's first
/// timing), then the measured ones in blocks, prefill and decode interleaved.
fn infer(
    plan: &RunPlan,
    sparse: &mut dyn Workload,
    dense: &mut dyn Workload,
    ctx: &mut Ctx,
    stop: &AtomicBool,
    counts: &mut Counts,
) -> anyhow::Result<()> {
    let stopped = || stop.load(Ordering::SeqCst);
    let infer_warmup = 1;
    let (mut prefills, mut decodes) = (0, 0);
    let mut want_prefill = plan.prefill_steps + infer_warmup;
    let mut want_decode = if plan.decode_steps > 0 {
        plan.decode_steps + infer_warmup
    } else {
        0
    };
    let (mut prefill_sized, mut decode_sized) = (false, false);
    let (mut prefill_grow, mut decode_grow) = (false, false);
    while (prefills < want_prefill || decodes < want_decode) && !stopped() {
        let decode_blocks =
            decode_sized && phase_block(ctx, counts, sparse, dense, Phase::Decode) > 1;
        // Decode blocks refill the cache inside their windows; per-step decoding refills here.
        let need_prefill = prefills < want_prefill
            || (!decode_blocks && (!sparse.can_decode() || !dense.can_decode()));
        if need_prefill {
            let blocks = prefills >= infer_warmup;
            if blocks && !prefill_sized {
                let measured = want_prefill.saturating_sub(prefills);
                let (want, longer) =
                    lengthened(ctx, counts, plan, sparse, dense, Phase::Prefill, measured)?;
                want_prefill = prefills + want;
                (prefill_sized, prefill_grow) = (true, longer);
            }
            let n = pair_block(
                ctx,
                counts,
                sparse,
                dense,
                Phase::Prefill,
                want_prefill.saturating_sub(prefills).max(1),
                infer_warmup,
                blocks,
                prefill_grow,
            )?;
            prefills += n;
            want_prefill = want_prefill.max(prefills);
            // Decode continues what this prefill started, until the cache is full.
        }
        while decodes < want_decode && !stopped() {
            let warm = decodes < infer_warmup;
            if !warm && !decode_sized {
                let measured = want_decode - decodes;
                let (want, longer) =
                    lengthened(ctx, counts, plan, sparse, dense, Phase::Decode, measured)?;
                want_decode = decodes + want;
                (decode_sized, decode_grow) = (true, longer);
            }
            let blocks = !warm && phase_block(ctx, counts, sparse, dense, Phase::Decode) > 1;
            if !blocks && (!sparse.can_decode() || !dense.can_decode()) {
                break; // a per-step decode needs a prefill of its own window first
            }
            let n = pair_block(
                ctx,
                counts,
                sparse,
                dense,
                Phase::Decode,
                want_decode - decodes,
                infer_warmup,
                !warm,
                decode_grow,
            )?;
            decodes += n;
            want_decode = want_decode.max(decodes);
            if prefills < want_prefill {
                break; // interleave: prefill and decode alternate while both are wanted
            }
        }
    }
    Ok(())
}
