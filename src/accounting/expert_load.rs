//! Tokens per expert summed over steps or decode passes: the one definition of how router counts
//! add up (the model, the run loop, the report and the dashboard use it).
//!
//! A step's counts are `[moe_layer][expert]` (`StepRecord::expert_tokens`). Steps of one model
//! have the same shape; a sum still grows to the widest step seen, so a layer or an expert that a
//! step lacks counts as zero there rather than being dropped.

/// Add one step's tokens per expert (per MoE layer) into a running total, growing it as needed.
pub fn add_expert_tokens(total: &mut Vec<Vec<u64>>, step: &[Vec<u64>]) {
    if total.len() < step.len() {
        total.resize(step.len(), Vec::new());
    }
    for (sum, counts) in total.iter_mut().zip(step) {
        if sum.len() < counts.len() {
            sum.resize(counts.len(), 0);
        }
        for (acc, c) in sum.iter_mut().zip(counts) {
            *acc += c;
        }
    }
}

/// The sum of many steps' tokens per expert; empty for none (or for a dense model's steps).
pub fn sum_expert_tokens<'a>(steps: impl IntoIterator<Item = &'a [Vec<u64>]>) -> Vec<Vec<u64>> {
    let mut total = Vec::new();
    for s in steps {
        add_expert_tokens(&mut total, s);
    }
    total
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sums_are_per_layer_and_expert() {
        let a = vec![vec![1, 2], vec![3, 4]];
        let b = vec![vec![10, 20], vec![30, 40]];
        assert_eq!(
            sum_expert_tokens([a.as_slice(), b.as_slice()]),
            vec![vec![11, 22], vec![33, 44]]
        );
    }

    #[test]
    fn a_wider_step_grows_the_sum_and_a_narrower_one_adds_zeros() {
        let mut t = vec![vec![1]];
        add_expert_tokens(&mut t, &[vec![1, 1], vec![5]]);
        add_expert_tokens(&mut t, &[]);
        assert_eq!(t, vec![vec![2, 1], vec![5]]);
        let total: u64 = t.iter().flatten().sum();
        assert_eq!(total, 1 + 2 + 5, "nothing lost or double counted");
    }

    #[test]
    fn no_steps_sum_to_nothing() {
        assert!(sum_expert_tokens(std::iter::empty()).is_empty());
    }
}
