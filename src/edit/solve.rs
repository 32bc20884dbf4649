//! The least-squares updates, in f64 on the CPU (WGSL has no f64; spec hazard H5).
//!
//! NSE / MEMIT-seq (spec §6.3): `Δ_S · G = R · K_Sᵀ` with `G = λ C_SS + P_SS + K_S K_Sᵀ`,
//! symmetric positive definite, solved by Cholesky with a residual check.
//! AlphaEdit (spec §5.3): `(Π (P + K Kᵀ) + L2 · I) Δᵀ = Π K Rᵀ`, solved by LU.
//! Both return the update factored as `R · Yᵀ` ([`Factored`]); the NSE solve also estimates
//! the condition number of `G` (a diagnostic for long runs, [`Solved::condition`]).

use faer::linalg::solvers::Solve;
use faer::{Mat, Side};

use super::past::PastKeys;
use crate::{Error, Result};

/// Relative residual `‖G X − B‖ / ‖B‖` above which a solve is rejected.
pub const MAX_RELATIVE_RESIDUAL: f64 = 1e-8;

/// The inputs of one layer's solve.
///
/// # Shapes
/// `c (d_ff, d_ff)` f32 row-major, `p` of `d_ff`; `keys (n, d_ff)` (request-major);
/// `resid (n, d)`.
pub struct LayerSystem<'a> {
    pub c: &'a [f32],
    pub p: &'a PastKeys,
    pub d_ff: usize,
    pub keys: &'a [f32],
    pub resid: &'a [f64],
    pub d: usize,
    pub n: usize,
}

/// A column-sparse update in factored form, `ΔW[:, cols] = Rᵀ · Y` (rank ≤ n): exactly how the
/// reference computes it (`resid @ solve(G, K_S).T`), and small enough to keep for every edit.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Factored {
    /// Updated columns (neurons), in selection order.
    pub cols: Vec<u32>,
    /// Residuals `(n, d)`.
    pub r: Vec<f64>,
    /// `(G⁻¹ K_S)ᵀ`, `(n, |S|)`.
    pub y: Vec<f64>,
    pub n: usize,
    pub d: usize,
}

impl Factored {
    /// The f32 update `(d, |S|)` that is added to the weights. Deterministic, so replaying a
    /// stored update reproduces the weights bit for bit.
    pub fn expand(&self) -> Vec<f32> {
        let s = self.cols.len();
        let mut out = vec![0.0f32; self.d * s];
        for i in 0..self.d {
            for j in 0..s {
                let v: f64 = (0..self.n)
                    .map(|r| self.r[r * self.d + i] * self.y[r * s + j])
                    .sum();
                out[i * s + j] = v as f32;
            }
        }
        out
    }

    /// ‖ΔW‖_F of the f32 update.
    pub fn frobenius(&self) -> f64 {
        self.expand()
            .iter()
            .map(|&x| (x as f64) * (x as f64))
            .sum::<f64>()
            .sqrt()
    }
}

/// A layer's update and what the solve saw.
#[derive(Clone, Debug)]
pub struct Solved {
    pub update: Factored,
    /// `λ_max(G) / λ_min(G)` of the NSE system, estimated by [`POWER_ITERATIONS`] steps of power
    /// and inverse iteration (so a lower bound, close for well-separated extremes); `None` for
    /// AlphaEdit, whose system is not symmetric.
    pub condition: Option<f64>,
}

/// Power-iteration steps of the condition estimate.
pub const POWER_ITERATIONS: usize = 40;

/// NSE / MEMIT-seq: `Δ_S = R · (G⁻¹ K_S)ᵀ` over the selected neurons `sel`.
///
/// # Errors
/// [`Error::Numeric`] when `G` is not positive definite or the residual check fails.
pub fn solve_nse(sys: &LayerSystem, sel: &[usize], lambda: f64) -> Result<Solved> {
    let _simd = crate::cpu::simd::ClearUpperOnDrop;
    let s = sel.len();
    let (d_ff, n) = (sys.d_ff, sys.n);
    let ks = Mat::<f64>::from_fn(s, n, |a, r| sys.keys[r * d_ff + sel[a]] as f64); // K_S (|S|, n)
    // P_SS (none before the first batch's keys: a 1B model's |S|² would be 100 MB of zeros).
    let p_ss = (!sys.p.is_zero()).then(|| sys.p.block(sel));
    let g = Mat::<f64>::from_fn(s, s, |a, b| {
        let (ia, ib) = (sel[a], sel[b]);
        let kk: f64 = (0..n).map(|r| ks[(a, r)] * ks[(b, r)]).sum();
        let p = p_ss.as_ref().map_or(0.0, |p| p[a * s + b] as f64);
        lambda * sys.c[ia * d_ff + ib] as f64 + p + kk
    });
    let llt = g.llt(Side::Lower).map_err(|e| {
        Error::Numeric(format!(
            "G = λC + P + KKᵀ over {s} neurons is not positive definite ({e:?}); the covariance \
             statistic is probably corrupt or too small — recompute it with a larger token budget"
        ))
    })?;
    let x = llt.solve(&ks); // G⁻¹ K_S (|S|, n)
    check_residual(&g, &x, &ks)?;
    let largest = power_iteration(s, |v| &g * v);
    let smallest = 1.0 / power_iteration(s, |v| llt.solve(v));
    Ok(Solved {
        update: Factored {
            cols: sel.iter().map(|&j| j as u32).collect(),
            r: sys.resid.to_vec(),
            y: transpose(&x),
            n,
            d: sys.d,
        },
        condition: Some(largest / smallest).filter(|c| c.is_finite()),
    })
}

/// The largest eigenvalue of the symmetric positive definite operator `apply` on `R^s`,
/// estimated by power iteration from the all-ones vector (deterministic).
fn power_iteration(s: usize, apply: impl Fn(&Mat<f64>) -> Mat<f64>) -> f64 {
    let mut v = Mat::<f64>::from_fn(s, 1, |_, _| 1.0 / (s as f64).sqrt());
    let mut estimate = 0.0;
    for _ in 0..POWER_ITERATIONS {
        let w = apply(&v);
        let len = w.norm_l2();
        if !len.is_finite() || len == 0.0 {
            return len;
        }
        estimate = len;
        v = w * faer::Scale(1.0 / len);
    }
    estimate
}

/// AlphaEdit over all neurons: `Δ = R · (A⁻¹ Π K)ᵀ` with `A = Π (P + K Kᵀ) + L2 · I`, given the
/// null-space projector `proj (d_ff, d_ff)`.
pub fn solve_alphaedit(sys: &LayerSystem, proj: &[f64], l2: f64) -> Result<Solved> {
    let _simd = crate::cpu::simd::ClearUpperOnDrop;
    let (f, n) = (sys.d_ff, sys.n);
    let k = Mat::<f64>::from_fn(f, n, |j, r| sys.keys[r * f + j] as f64); // (d_ff, n)
    let pi = Mat::<f64>::from_fn(f, f, |a, b| proj[a * f + b]);
    let p = sys.p.dense();
    let m = Mat::<f64>::from_fn(f, f, |a, b| p[a * f + b] as f64) + &k * k.transpose();
    let mut a = &pi * &m;
    for i in 0..f {
        a[(i, i)] += l2;
    }
    let b = &pi * &k; // (d_ff, n)
    let x = a.partial_piv_lu().solve(&b);
    check_residual(&a, &x, &b)?;
    Ok(Solved {
        update: Factored {
            cols: (0..f as u32).collect(),
            r: sys.resid.to_vec(),
            y: transpose(&x),
            n,
            d: sys.d,
        },
        condition: None,
    })
}

/// The null-space projector `Π = U₀ U₀ᵀ` over the eigenvectors of `C` whose eigenvalues are below
/// `threshold` (AlphaEdit). `c (d_ff, d_ff)` → `(d_ff, d_ff)` f64.
pub fn nullspace_projector(c: &[f32], d_ff: usize, threshold: f64) -> Result<Vec<f64>> {
    let _simd = crate::cpu::simd::ClearUpperOnDrop;
    let cm = Mat::<f64>::from_fn(d_ff, d_ff, |a, b| c[a * d_ff + b] as f64);
    let evd = cm
        .self_adjoint_eigen(Side::Lower)
        .map_err(|e| Error::Numeric(format!("eigendecomposition of C failed: {e:?}")))?;
    let u = evd.U();
    let s = evd.S();
    let small: Vec<usize> = (0..d_ff).filter(|&i| s[i] < threshold).collect();
    let u0 = Mat::<f64>::from_fn(d_ff, small.len(), |a, i| u[(a, small[i])]);
    let pm = &u0 * u0.transpose();
    let mut proj = vec![0.0; d_ff * d_ff];
    for a in 0..d_ff {
        for b in 0..d_ff {
            proj[a * d_ff + b] = pm[(a, b)];
        }
    }
    Ok(proj)
}

fn check_residual(g: &Mat<f64>, x: &Mat<f64>, b: &Mat<f64>) -> Result<()> {
    let r = g * x - b;
    let rel = r.norm_l2() / b.norm_l2().max(f64::MIN_POSITIVE);
    if !rel.is_finite() || rel > MAX_RELATIVE_RESIDUAL {
        return Err(Error::Numeric(format!(
            "the update solve is inaccurate (relative residual {rel:.2e} > {MAX_RELATIVE_RESIDUAL:e}); \
             the system is singular or ill-conditioned — check the covariance statistic and λ"
        )));
    }
    Ok(())
}

fn transpose(x: &Mat<f64>) -> Vec<f64> {
    let (r, c) = (x.nrows(), x.ncols());
    let mut out = vec![0.0; r * c];
    for i in 0..r {
        for j in 0..c {
            out[j * r + i] = x[(i, j)];
        }
    }
    out
}
