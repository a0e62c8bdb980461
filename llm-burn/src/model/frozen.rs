//! Products with frozen quantized weights under autodiff: one graph node per product whose
//! forward runs the engine's own kernels on the blocks (integer products where they are on)
//! and whose backward is the transposed product through the same blocks. The node keeps the
//! shared blocks and nothing else: no dequantized panel and no copy of the input is held for
//! the backward pass, and no gradient is made for the weight (LoRA trains beside it).
//!
//! Only the CPU backend's autodiff ([`TrainBackend`]) takes this path; any other backend
//! multiplies through burn's own operations on dequantized panels, as in inference.

use std::any::Any;
use std::sync::Arc;

use burn::backend::Autodiff;
use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::NoCheckpointing;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind, unary};
use burn::tensor::backend::Backend;
use burn::tensor::{Tensor, TensorPrimitive};

use crate::CpuBackend;
use crate::quant::qmatrix::QMatrix;

/// The backend training runs on: autodiff over the CPU backend.
pub type TrainBackend = Autodiff<CpuBackend>;

/// How a quantized weight is laid out, which fixes the product and its transpose.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Layout {
    /// `[out, in]`, as a GGUF file holds it: the product is `x · Qᵀ`.
    OutIn,
    /// `[in, out]` (quantized at load): the product is `x · Q`.
    InOut,
}

impl Layout {
    /// The forward product on the plain backend.
    fn forward<B: Backend>(self, q: &QMatrix, x: Tensor<B, 2>) -> Tensor<B, 2> {
        match self {
            Layout::OutIn => q.product_t(x),
            Layout::InOut => q.product(x),
        }
    }

    /// The gradient with respect to the input: the transposed product, in float (the
    /// gradient is not rounded to 8 bits as the activations of an integer product are).
    fn backward<B: Backend>(self, q: &QMatrix, grad: Tensor<B, 2>) -> Tensor<B, 2> {
        match self {
            Layout::OutIn => q.product(grad),
            Layout::InOut => q.product_t_dequantized(grad),
        }
    }
}

/// The product of `x` with the frozen weight `q`: a single autodiff node on
/// [`TrainBackend`], burn's operations on dequantized panels elsewhere.
pub(crate) fn product<B: Backend>(x: Tensor<B, 2>, q: &Arc<QMatrix>, layout: Layout) -> Tensor<B, 2> {
    if std::any::TypeId::of::<B>() != std::any::TypeId::of::<TrainBackend>() {
        return layout.forward(q, x); // inference: no box on the hot path
    }
    match cast::<_, Tensor<TrainBackend, 2>>(x) {
        Ok(x) => cast(tracked(x, q, layout)).unwrap_or_else(|_| unreachable!("the same type back")),
        Err(x) => layout.forward(q, x),
    }
}

/// `value` as a `U` when it is one, else itself.
fn cast<T: 'static, U: 'static>(value: T) -> Result<U, T> {
    let boxed: Box<dyn Any> = Box::new(value);
    match boxed.downcast::<U>() {
        Ok(u) => Ok(*u),
        Err(boxed) => Err(*boxed.downcast::<T>().unwrap_or_else(|_| unreachable!("the type it was made of"))),
    }
}

/// The product's backward step: the state is the shared blocks and the layout.
#[derive(Debug)]
struct FrozenProduct;

impl Backward<CpuBackend, 1> for FrozenProduct {
    type State = (Arc<QMatrix>, Layout);

    fn backward(self, ops: Ops<Self::State, 1>, grads: &mut Gradients, _checkpointer: &mut Checkpointer) {
        let (q, layout) = ops.state;
        unary::<CpuBackend, _>(ops.parents, ops.node, grads, |grad| {
            let grad = Tensor::<CpuBackend, 2>::from_primitive(TensorPrimitive::Float(grad));
            layout.backward(&q, grad).into_primitive().tensor()
        });
    }
}

/// The product as one node of the autodiff graph.
fn tracked(x: Tensor<TrainBackend, 2>, q: &Arc<QMatrix>, layout: Layout) -> Tensor<TrainBackend, 2> {
    let x = x.into_primitive().tensor();
    let forward = |p| layout.forward(q, Tensor::<CpuBackend, 2>::from_primitive(TensorPrimitive::Float(p))).into_primitive().tensor();
    let out = match FrozenProduct.prepare::<NoCheckpointing>([x.node.clone()]).compute_bound().stateful() {
        OpsKind::Tracked(prep) => prep.finish((q.clone(), layout), forward(x.primitive)),
        OpsKind::UnTracked(prep) => prep.finish(forward(x.primitive)),
    };
    Tensor::from_primitive(TensorPrimitive::Float(out))
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::tensor::TensorData;

    /// A random quantized `[rows, cols]` weight and its dequantized values.
    fn weight(rows: usize, cols: usize, seed: u32) -> (Arc<QMatrix>, Vec<f32>) {
        let v: Vec<f32> = (0..rows * cols).map(|i| (((i as u32).wrapping_mul(2_654_435_761) ^ seed) % 1000) as f32 / 500.0 - 1.0).collect();
        let q = QMatrix::quantize_q8_0(&v, rows, cols).unwrap();
        let deq = q.dequantize();
        (Arc::new(q), deq)
    }

    /// `sum(c ⊙ (x · W))` and its gradient in `x`, through the frozen node.
    fn loss_and_grad(x: &[f32], m: usize, k: usize, q: &Arc<QMatrix>, layout: Layout, c: &[f32]) -> (f32, Vec<f32>) {
        let dev = Default::default();
        let xt = Tensor::<TrainBackend, 2>::from_data(TensorData::new(x.to_vec(), [m, k]), &dev).require_grad();
        let y = product(xt.clone(), q, layout);
        let n = y.dims()[1];
        let loss = (y * Tensor::<TrainBackend, 2>::from_data(TensorData::new(c.to_vec(), [m, n]), &dev)).sum();
        let value = loss.clone().into_scalar();
        let grads = loss.backward();
        (value, xt.grad(&grads).unwrap().into_data().to_vec::<f32>().unwrap())
    }

    #[test]
    fn the_gradient_is_the_transposed_product_and_matches_finite_differences() {
        let (m, out, inp) = (3, 40, 64);
        for layout in [Layout::OutIn, Layout::InOut] {
            // OutIn holds [out, in]; InOut holds [in, out] (blocks along out).
            let (q, deq) = match layout {
                Layout::OutIn => weight(out, inp, 7),
                Layout::InOut => weight(inp, 64, 9),
            };
            let n = if layout == Layout::OutIn { out } else { 64 };
            let x: Vec<f32> = (0..m * inp).map(|i| ((i * 37 % 101) as f32 / 50.0) - 1.0).collect();
            let c: Vec<f32> = (0..m * n).map(|i| ((i * 53 % 97) as f32 / 48.0) - 1.0).collect();
            let (_, grad) = crate::quant::qmatrix::with_float_products(|| loss_and_grad(&x, m, inp, &q, layout, &c));
            // Exactly: dL/dx[i][j] = sum_o c[i][o] · W[j → o].
            let w = |j: usize, o: usize| match layout {
                Layout::OutIn => deq[o * inp + j],
                Layout::InOut => deq[j * n + o],
            };
            for i in 0..m {
                for j in 0..inp {
                    let want: f32 = (0..n).map(|o| c[i * n + o] * w(j, o)).sum();
                    assert!((grad[i * inp + j] - want).abs() < 1e-3 * (1.0 + want.abs()), "{layout:?} [{i}][{j}]: {} against {want}", grad[i * inp + j]);
                }
            }
            // And by finite differences of the loss (float products: the loss is linear in x).
            for j in [0, 17, 63] {
                let h = 1e-2;
                let mut xp = x.clone();
                xp[inp + j] += h;
                let (lp, _) = crate::quant::qmatrix::with_float_products(|| loss_and_grad(&xp, m, inp, &q, layout, &c));
                xp[inp + j] -= 2.0 * h;
                let (lm, _) = crate::quant::qmatrix::with_float_products(|| loss_and_grad(&xp, m, inp, &q, layout, &c));
                let fd = (lp - lm) / (2.0 * h);
                assert!((fd - grad[inp + j]).abs() < 2e-2 * (1.0 + fd.abs()), "{layout:?} x[1][{j}]: finite difference {fd}, gradient {}", grad[inp + j]);
            }
        }
    }

    #[test]
    fn a_plain_backend_multiplies_as_in_inference() {
        let (q, _) = weight(40, 64, 3);
        let x = Tensor::<CpuBackend, 2>::from_data(TensorData::new(vec![0.5f32; 2 * 64], [2, 64]), &Default::default());
        let a = product(x.clone(), &q, Layout::OutIn).into_data().to_vec::<f32>().unwrap();
        assert_eq!(a, q.product_t(x).into_data().to_vec::<f32>().unwrap());
    }
}
