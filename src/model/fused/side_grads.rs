//! Weight gradients that fused ops compute in their own backward pass, outside candle's graph.
//!
//! Through the graph, every weight matrix costs a zeroed gradient buffer, a zeroed matmul output
//! and an addition of the two on every step (candle accumulates each gradient into zeros), and
//! the zeroing runs on one thread. A fused op instead writes the weight's gradient once, here;
//! [`crate::model::Forward::backward`] moves it into the `GradStore` with the others.

use std::sync::{Arc, Mutex};

use candle_core::backprop::GradStore;
use candle_core::{Result, Tensor};

use crate::model::optim::GradSquares;

/// Whether a fused op on input `x` delivers its weights' gradients. Its backward pass runs only
/// when `x` is on the autograd graph, so with a constant input and learnable weights the composed
/// ops must run instead.
pub fn reaches_weights<'a>(x: &Tensor, weights: impl IntoIterator<Item = &'a Tensor>) -> bool {
    x.track_op() || weights.into_iter().all(|w| !w.track_op())
}

/// The gradients of some weights, filled by the backward pass of the op that used them.
pub struct WeightGrads {
    weights: Vec<Tensor>,
    grads: Mutex<Vec<Option<Grad>>>,
}

/// One weight's gradient and, where the op took it, its sum of squares.
#[derive(Clone)]
struct Grad {
    values: Tensor,
    sumsq: Option<f64>,
}

impl WeightGrads {
    pub fn new(weights: Vec<Tensor>) -> Arc<WeightGrads> {
        let grads = Mutex::new(vec![None; weights.len()]);
        Arc::new(WeightGrads { weights, grads })
    }

    /// Records the gradient of weight `i`.
    pub fn set(&self, i: usize, grad: Tensor) {
        self.record(i, grad, None);
    }

    /// Records the gradient of weight `i` with its sum of squares, as
    /// [`crate::model::optim::sum_of_squares`] gives it, taken while the values were in cache.
    pub fn set_with_squares(&self, i: usize, grad: Tensor, sumsq: f64) {
        self.record(i, grad, Some(sumsq));
    }

    fn record(&self, i: usize, values: Tensor, sumsq: Option<f64>) {
        self.grads.lock().expect("weight gradients poisoned")[i] = Some(Grad { values, sumsq });
    }

    /// Moves the gradients into `store` under their weights, adding to any gradient the weight
    /// already has there, and their sums of squares into `squares` (a sum becomes unknown when
    /// its gradient is added to another). Weights whose op had no backward pass (or, for experts,
    /// no token) get none.
    pub fn move_into(&self, store: &mut GradStore, squares: &mut GradSquares) -> Result<()> {
        let mut grads = self.grads.lock().expect("weight gradients poisoned");
        for (w, g) in self.weights.iter().zip(grads.iter_mut()) {
            let Some(Grad { values, sumsq }) = g.take() else {
                continue;
            };
            // A sum taken of the op's part is not that of the total.
            let (total, sumsq) = match store.get(w) {
                Some(before) => ((before + values)?, None),
                None => (values, sumsq),
            };
            store.insert(w, total);
            squares.set(w, sumsq);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{DType, Device, Var};

    #[test]
    fn a_constant_input_does_not_reach_learnable_weights() {
        let dev = Device::Cpu;
        let w = Var::zeros((2, 2), DType::F32, &dev).unwrap();
        let constant = Tensor::ones((3, 2), DType::F32, &dev).unwrap();
        let tracked = constant.matmul(w.as_tensor()).unwrap();
        assert!(!reaches_weights(&constant, [w.as_tensor()]));
        assert!(reaches_weights(&tracked, [w.as_tensor()]));
        assert!(reaches_weights(&constant, [&constant]));
    }

    #[test]
    fn moved_gradients_add_to_those_already_in_the_store() {
        let dev = Device::Cpu;
        let w = Var::ones(3, DType::F32, &dev).unwrap();
        let mut store = (w.as_tensor() * 2.0)
            .unwrap()
            .sum_all()
            .unwrap()
            .backward()
            .unwrap();
        let side = WeightGrads::new(vec![w.as_tensor().clone()]);
        side.set_with_squares(0, Tensor::new(&[1f32, 2.0, 3.0], &dev).unwrap(), 14.0);
        let mut squares = GradSquares::default();
        side.move_into(&mut store, &mut squares).unwrap();
        let g = store.get(&w).unwrap().to_vec1::<f32>().unwrap();
        assert_eq!(g, vec![3.0, 4.0, 5.0]);
        // The sum taken of the op's part is not that of the total.
        assert_eq!(squares.get(&w), None);
        // Moved, not copied: a second move adds nothing.
        side.move_into(&mut store, &mut squares).unwrap();
        assert_eq!(store.get(&w).unwrap().to_vec1::<f32>().unwrap(), g);
    }

    #[test]
    fn a_gradient_moved_alone_keeps_its_sum_of_squares() {
        let dev = Device::Cpu;
        let (a, b) = (
            Var::ones(2, DType::F32, &dev).unwrap(),
            Var::ones(2, DType::F32, &dev).unwrap(),
        );
        let mut store = (a.as_tensor() * 0.0)
            .unwrap()
            .sum_all()
            .unwrap()
            .backward()
            .unwrap();
        store.remove(a.as_tensor());
        let side = WeightGrads::new(vec![a.as_tensor().clone(), b.as_tensor().clone()]);
        side.set_with_squares(0, Tensor::new(&[3f32, 4.0], &dev).unwrap(), 25.0);
        side.set(1, Tensor::new(&[1f32, 1.0], &dev).unwrap());
        let mut squares = GradSquares::default();
        side.move_into(&mut store, &mut squares).unwrap();
        assert_eq!(squares.get(a.as_tensor()), Some(25.0));
        assert_eq!(squares.get(b.as_tensor()), None);
        assert_eq!(squares.len(), 1);
    }
}
