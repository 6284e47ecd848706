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
    let mut goal = Goal::new(plan.train_steps);
    let mut done = 0;
    // Whether the stop rule ended training (both models at or below `until_loss`).
    let mut reached = false;
    while done < goal.want {
        if stopped() {
            return Ok(());
        }
        let timed = counts.mean_step_s(sparse.name(), Phase::Train).is_some();
        let blocks = done >= plan.warmup_steps && timed;
        if blocks {
            // The warm-up (or the first pair) timed the phase: lengthen it if it must.
            goal.size_once(done, |left| {
                lengthened(ctx, counts, plan, sparse, dense, Phase::Train, left)
            })?;
        }
        let n = pair_block(
            ctx,
            counts,
            sparse,
            dense,
            Phase::Train,
            goal.left(done),
            plan.warmup_steps,
            blocks,
            goal.grow,
        )?;
        let before = done;
        done += n;
        goal.reach(done);
        if done / eval_every > before / eval_every || done == goal.want {
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
                format!("stop rule: {} steps (the cap) done before both models reached validation loss {l}", goal.want),
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
    let mut prefill = Goal::new(plan.prefill_steps + infer_warmup);
    let mut decode = Goal::new(if plan.decode_steps > 0 {
        plan.decode_steps + infer_warmup
    } else {
        0
    });
    while (prefills < prefill.want || decodes < decode.want) && !stopped() {
        let decode_blocks =
            decode.sized && phase_block(ctx, counts, sparse, dense, Phase::Decode) > 1;
        // Decode blocks refill the cache inside their windows; per-step decoding refills here.
        let need_prefill = prefills < prefill.want
            || (!decode_blocks && (!sparse.can_decode() || !dense.can_decode()));
        if need_prefill {
            let blocks = prefills >= infer_warmup;
            if blocks {
                prefill.size_once(prefills, |left| {
                    lengthened(ctx, counts, plan, sparse, dense, Phase::Prefill, left)
                })?;
            }
            let n = pair_block(
                ctx,
                counts,
                sparse,
                dense,
                Phase::Prefill,
                prefill.left(prefills).max(1),
                infer_warmup,
                blocks,
                prefill.grow,
            )?;
            prefills += n;
            prefill.reach(prefills);
            // Decode continues what this prefill started, until the cache is full.
        }
        while decodes < decode.want && !stopped() {
            let warm = decodes < infer_warmup;
            if !warm {
                decode.size_once(decodes, |left| {
                    lengthened(ctx, counts, plan, sparse, dense, Phase::Decode, left)
                })?;
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
                decode.left(decodes),
                infer_warmup,
                !warm,
                decode.grow,
            )?;
            decodes += n;
            decode.reach(decodes);
            if prefills < prefill.want {
                break; // interleave: prefill and decode alternate while both are wanted
            }
        }
    }
    Ok(())
}

/// How many steps per model a phase is to run: the plan's count, lengthened once, when the
/// phase's first timing is known, so that its windows resolve the sensor.
struct Goal {
    want: u64,
    /// Whether [`Goal::size_once`] has run.
    sized: bool,
    /// Whether the lengthened goal lets a block run past it (`pair_block`'s `may_exceed`).
    grow: bool,
}

impl Goal {
    fn new(want: u64) -> Self {
        Goal {
            want,
            sized: false,
            grow: false,
        }
    }

    /// The first time only: asks `lengthen` how many steps the `left` ones should become (and
    /// whether blocks may run past them), `done` steps in.
    fn size_once(
        &mut self,
        done: u64,
        lengthen: impl FnOnce(u64) -> anyhow::Result<(u64, bool)>,
    ) -> anyhow::Result<()> {
        if !self.sized {
            let (want, grow) = lengthen(self.left(done))?;
            *self = Goal {
                want: done + want,
                sized: true,
                grow,
            };
        }
        Ok(())
    }

    fn left(&self, done: u64) -> u64 {
        self.want.saturating_sub(done)
    }

    /// A block may end past the goal: the goal moves with it.
    fn reach(&mut self, done: u64) {
        self.want = self.want.max(done);
    }
}
