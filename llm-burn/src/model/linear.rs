//! The weights a model multiplies by: a float tensor, or quantized blocks ([`QMatrix`])
//! dequantized a panel at a time inside each product.

use std::sync::Arc;

use burn::tensor::backend::Backend;
use burn::tensor::{FloatDType, Tensor, TensorData};


use crate::model::frozen::{self, Layout};
use crate::quant::qmatrix::QMatrix;

/// A linear layer's weight.
#[derive(Debug, Clone)]
pub(crate) enum Weight<B: Backend> {
    /// `[in, out]`, in the model's float type.
    Dense(Tensor<B, 2>),
    /// `[in, out]`, in blocks along `out`.
    Quant(Arc<QMatrix>),
    /// `[out, in]` as the GGUF file holds it, in blocks along `in`.
    Gguf(Arc<QMatrix>),
}

impl<B: Backend> Weight<B> {
    /// Output features.
    pub(crate) fn out_dim(&self) -> usize {
        match self {
            Weight::Dense(w) => w.dims()[1],
            Weight::Quant(q) => q.cols(),
            Weight::Gguf(q) => q.rows(),
        }
    }

    /// `x · W` (`x`: `[m, in]` float32; returns `[m, out]` float32), a float weight cast to
    /// and from `float` (its type) around the product.
    pub(crate) fn apply(&self, x: Tensor<B, 2>, float: FloatDType) -> Tensor<B, 2> {
        match self {
            Weight::Dense(w) if float == FloatDType::F32 => x.matmul(w.clone()),
            Weight::Dense(w) => x.cast(float).matmul(w.clone()).cast(FloatDType::F32),
            Weight::Quant(q) => frozen::product(x, q, Layout::InOut),
            Weight::Gguf(q) => frozen::product(x, q, Layout::OutIn),
        }
    }

    /// The weight as a float32 `[in, out]` tensor.
    pub(crate) fn dense_f32(&self, device: &B::Device) -> Tensor<B, 2> {
        match self {
            Weight::Dense(w) => w.clone().cast(FloatDType::F32),
            Weight::Quant(q) => Tensor::<B, 2>::from_data(TensorData::new(q.dequantize(), [q.rows(), q.cols()]), device),
            Weight::Gguf(q) => Tensor::<B, 2>::from_data(TensorData::new(q.dequantize(), [q.rows(), q.cols()]), device).transpose(),
        }
    }

    /// The weight on another backend: a float tensor through `f`, blocks shared.
    pub(crate) fn map<C: Backend>(&self, f: impl Fn(Tensor<B, 2>) -> Tensor<C, 2>) -> Weight<C> {
        match self {
            Weight::Dense(w) => Weight::Dense(f(w.clone())),
            Weight::Quant(q) => Weight::Quant(q.clone()),
            Weight::Gguf(q) => Weight::Gguf(q.clone()),
        }
    }
}

/// The vocabulary table: the embedding, and the output projection.
#[derive(Debug, Clone)]
pub(crate) enum Table<B: Backend> {
    /// `[vocab, hidden]` in the model's float type.
    Dense(Tensor<B, 2>),
    /// `[hidden, vocab]` (transposed: the product's layout), in blocks along `vocab`.
    Quant(Arc<QMatrix>),
    /// `[vocab, hidden]` as the GGUF file holds it, in blocks along `hidden`.
    Gguf(Arc<QMatrix>),
}

impl<B: Backend> Table<B> {
    /// The rows of `ids` as float32 `[ids.len(), hidden]`.
    pub(crate) fn rows(&self, ids: &[i32], device: &B::Device) -> Tensor<B, 2> {
        match self {
            Table::Dense(t) => {
                let idx = Tensor::<B, 1, burn::tensor::Int>::from_data(TensorData::new(ids.to_vec(), [ids.len()]), device);
                t.clone().select(0, idx).cast(FloatDType::F32)
            }
            Table::Quant(q) => {
                let v: Vec<f32> = ids.iter().flat_map(|&i| q.column(i as usize)).collect();
                Tensor::from_data(TensorData::new(v, [ids.len(), q.rows()]), device)
            }
            Table::Gguf(q) => {
                let v: Vec<f32> = ids.iter().flat_map(|&i| q.row(i as usize)).collect();
                Tensor::from_data(TensorData::new(v, [ids.len(), q.cols()]), device)
            }
        }
    }

    /// `x · Tᵀ` (`x`: `[m, hidden]`; returns `[m, vocab]` float32): the logits.
    pub(crate) fn project(&self, x: Tensor<B, 2>, float: FloatDType) -> Tensor<B, 2> {
        match self {
            Table::Dense(t) => Weight::Dense(t.clone().transpose()).apply(x, float),
            Table::Quant(q) => frozen::product(x, q, Layout::InOut),
            Table::Gguf(q) => frozen::product(x, q, Layout::OutIn),
        }
    }

    /// The table on another backend: a float tensor through `f`, blocks shared.
    pub(crate) fn map<C: Backend>(&self, f: impl Fn(Tensor<B, 2>) -> Tensor<C, 2>) -> Table<C> {
        match self {
            Table::Dense(t) => Table::Dense(f(t.clone())),
            Table::Quant(q) => Table::Quant(q.clone()),
            Table::Gguf(q) => Table::Gguf(q.clone()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::CpuBackend as B;

    /// A product over several panels (and a ragged last one) equals the dense product of
    /// the dequantized weights, for one activation row and for many.
    #[test]
    fn the_panels_cover_every_output() {
        let (inp, out) = (64, 40_000); // [in, out]: panels of 16,384 columns
        let w: Vec<f32> = (0..inp * out).map(|i| ((i * 7919) % 1000) as f32 / 1000.0 - 0.5).collect();
        let q = Arc::new(QMatrix::quantize_q8_0(&w, inp, out).unwrap());
        assert!(q.panel_cols() < out);
        let dev = Default::default();
        let dense = Tensor::<B, 2>::from_data(TensorData::new(q.dequantize(), [inp, out]), &dev);
        for m in [1, 3, 40] {
            let x: Vec<f32> = (0..m * inp).map(|i| ((i * 31) % 17) as f32 / 17.0 - 0.5).collect();
            let xt = Tensor::<B, 2>::from_data(TensorData::new(x, [m, inp]), &dev);
            let got = Weight::<B>::Quant(q.clone()).apply(xt.clone(), FloatDType::F32).into_data().to_vec::<f32>().unwrap();
            let want = xt.matmul(dense.clone()).into_data().to_vec::<f32>().unwrap();
            assert_eq!(got.len(), m * out);
            let diff = got.iter().zip(&want).map(|(a, b)| (a - b).abs()).fold(0.0f32, f32::max);
            assert!(diff < 1e-4, "m = {m}: {diff}");
        }
    }

    /// A weight kept as the file holds it (`[out, in]`, blocks along `in`) gives the dense
    /// product of its dequantized transpose over several panels (and a ragged last one), both
    /// ways of computing it (few activation rows and many), and
    /// a table kept so looks up the same rows it projects with.
    #[test]
    fn a_file_layout_weight_is_its_dequantized_transpose() {
        let (out, inp) = (1_000, 2_048); // panels of 512 outputs
        let w: Vec<f32> = (0..out * inp).map(|i| ((i * 7919) % 1000) as f32 / 1000.0 - 0.5).collect();
        let q = Arc::new(QMatrix::quantize_q8_0(&w, out, inp).unwrap());
        let dev = Default::default();
        let dense = Tensor::<B, 2>::from_data(TensorData::new(q.dequantize(), [out, inp]), &dev); // [out, in]
        for m in [1, 5, crate::quant::qmatrix::FEW_ROWS + 3] {
            let x: Vec<f32> = (0..m * inp).map(|i| ((i * 31) % 17) as f32 / 17.0 - 0.5).collect();
            let xt = Tensor::<B, 2>::from_data(TensorData::new(x, [m, inp]), &dev);
            let got = q.product_t_dequantized(xt.clone()).into_data().to_vec::<f32>().unwrap();
            let want = xt.clone().matmul(dense.clone().transpose()).into_data().to_vec::<f32>().unwrap();
            assert_eq!(got.len(), m * out);
            let diff = got.iter().zip(&want).map(|(a, b)| (a - b).abs()).fold(0.0f32, f32::max);
            assert!(diff < 1e-3, "m = {m}: {diff}");
            // The layer's product: integer products where this CPU has them (their own test
            // bounds them against this one), else the same float product.
            let applied = Weight::<B>::Gguf(q.clone()).apply(xt.clone(), FloatDType::F32).into_data().to_vec::<f32>().unwrap();
            let x = xt.into_data().to_vec::<f32>().unwrap();
            let expected = if crate::quant::qmatrix::integer_products() { crate::quant::intdot::product_t(q.view(), &x, m).unwrap_or(got) } else { got };
            assert_eq!(applied, expected, "m = {m}");
        }
        let table = Table::<B>::Gguf(q.clone());
        let rows = table.rows(&[3, 999], &dev).into_data().to_vec::<f32>().unwrap();
        let all = q.dequantize();
        assert_eq!(&rows[..inp], &all[3 * inp..4 * inp]);
        assert_eq!(&rows[inp..], &all[999 * inp..]);
        let dense_t = Weight::<B>::Gguf(q).dense_f32(&dev).into_data().to_vec::<f32>().unwrap(); // [in, out]
        assert_eq!(dense_t[5 * out + 7], all[7 * inp + 5]);
    }
}
