//! The little dense linear algebra the reference predictors and the generator need.

/// Cholesky factor `L` (row-major, lower triangular) of a symmetric positive-definite
/// `n × n` matrix; `None` if the matrix is not positive definite.
pub(crate) fn cholesky(a: &[f64], n: usize) -> Option<Vec<f64>> {
    let mut l = vec![0.0; n * n];
    for i in 0..n {
        for j in 0..=i {
            let dot: f64 = (0..j).map(|k| l[i * n + k] * l[j * n + k]).sum();
            let v = a[i * n + j] - dot;
            if i == j {
                if v <= 0.0 || !v.is_finite() {
                    return None;
                }
                l[i * n + i] = v.sqrt();
            } else {
                l[i * n + j] = v / l[j * n + j];
            }
        }
    }
    Some(l)
}

/// Solves `L Lᵀ x = b` in place for every column of `b` (`n × m`, row-major).
pub(crate) fn cholesky_solve(l: &[f64], n: usize, b: &mut [f64], m: usize) {
    for c in 0..m {
        // Forward: L y = b.
        for i in 0..n {
            let dot: f64 = (0..i).map(|k| l[i * n + k] * b[k * m + c]).sum();
            b[i * m + c] = (b[i * m + c] - dot) / l[i * n + i];
        }
        // Backward: Lᵀ x = y.
        for i in (0..n).rev() {
            let dot: f64 = (i + 1..n).map(|k| l[k * n + i] * b[k * m + c]).sum();
            b[i * m + c] = (b[i * m + c] - dot) / l[i * n + i];
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn solves_a_small_system() {
        // A = [[4, 2], [2, 3]], x = [1, -2] → b = [0, -4].
        let a = [4.0, 2.0, 2.0, 3.0];
        let l = cholesky(&a, 2).expect("positive definite");
        let mut b = [0.0, -4.0];
        cholesky_solve(&l, 2, &mut b, 1);
        assert!((b[0] - 1.0).abs() < 1e-12 && (b[1] + 2.0).abs() < 1e-12, "{b:?}");
        assert!(cholesky(&[1.0, 2.0, 2.0, 1.0], 2).is_none());
    }
}
