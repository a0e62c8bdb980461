//! Dense Cholesky for the probes' Newton steps.

/// In-place Cholesky of a symmetric positive-definite `n × n` matrix whose lower triangle is
/// filled (row-major); returns `false` if it is not positive definite.
pub(crate) fn cholesky_in_place(a: &mut [f64], n: usize) -> bool {
    for i in 0..n {
        for j in 0..=i {
            let (ri, rj) = (i * n, j * n);
            let dot: f64 = (0..j).map(|k| a[ri + k] * a[rj + k]).sum();
            let v = a[ri + j] - dot;
            if i == j {
                if v <= 0.0 || !v.is_finite() {
                    return false;
                }
                a[ri + i] = v.sqrt();
            } else {
                a[ri + j] = v / a[rj + j];
            }
        }
    }
    true
}

/// Solves `L Lᵀ x = b` in place, `L` from [`cholesky_in_place`].
pub(crate) fn cholesky_solve(l: &[f64], n: usize, b: &mut [f64]) {
    for i in 0..n {
        let dot: f64 = (0..i).map(|k| l[i * n + k] * b[k]).sum();
        b[i] = (b[i] - dot) / l[i * n + i];
    }
    for i in (0..n).rev() {
        let dot: f64 = (i + 1..n).map(|k| l[k * n + i] * b[k]).sum();
        b[i] = (b[i] - dot) / l[i * n + i];
    }
}
