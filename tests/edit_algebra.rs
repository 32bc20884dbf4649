//! The editing maths on random data, against independent f64 computations (spec §14,
//! invariants 2–5 and 7). No model needed.

// Native only (files, threads, blocking on the GPU): in wasm32 this test crate is empty, and
// the browser tests are tests/web.rs.
#![cfg(not(target_arch = "wasm32"))]

mod common;

use common::Rng;
use nse::edit::PastKeys;
use nse::edit::keys::{KeyPrompts, average_keys};
use nse::edit::select::select_neurons;
use nse::edit::solve::{Factored, LayerSystem, solve_nse};
use nse::model::Packed;

/// A random layer system: `C` a random SPD second moment, `P` a sum of outer products.
struct System {
    c: Vec<f32>,
    p: PastKeys,
    keys: Vec<f32>,
    resid: Vec<f64>,
    d_ff: usize,
    d: usize,
    n: usize,
}

fn random_system(seed: u64, d_ff: usize, d: usize, n: usize) -> System {
    let mut rng = Rng::new(seed);
    let gram = |rng: &mut Rng, rows: usize| {
        let a = rng.vec(rows * d_ff);
        let mut m = vec![0.0f32; d_ff * d_ff];
        for i in 0..d_ff {
            for j in 0..d_ff {
                m[i * d_ff + j] = (0..rows)
                    .map(|r| a[r * d_ff + i] * a[r * d_ff + j])
                    .sum::<f32>()
                    / rows as f32;
            }
        }
        m
    };
    System {
        c: gram(&mut rng, 3 * d_ff),
        // A few past keys: P stays in the keys form (4 rows of 24 neurons or more).
        p: {
            let mut p = PastKeys::new(d_ff);
            p.add(&rng.vec(4 * d_ff)).unwrap();
            assert!(!p.is_dense());
            p
        },
        keys: rng.vec(n * d_ff),
        resid: rng.vec(n * d).iter().map(|&x| x as f64).collect(),
        d_ff,
        d,
        n,
    }
}

impl System {
    fn view(&self) -> LayerSystem<'_> {
        LayerSystem {
            c: &self.c,
            p: &self.p,
            d_ff: self.d_ff,
            keys: &self.keys,
            resid: &self.resid,
            d: self.d,
            n: self.n,
        }
    }

    /// `G = λ C_SS + P_SS + K_S K_Sᵀ` in f64.
    fn g(&self, sel: &[usize], lambda: f64) -> Vec<Vec<f64>> {
        let k = |r: usize, j: usize| self.keys[r * self.d_ff + j] as f64;
        let p = self.p.dense();
        sel.iter()
            .map(|&a| {
                sel.iter()
                    .map(|&b| {
                        lambda * self.c[a * self.d_ff + b] as f64
                            + p[a * self.d_ff + b] as f64
                            + (0..self.n).map(|r| k(r, a) * k(r, b)).sum::<f64>()
                    })
                    .collect()
            })
            .collect()
    }

    /// `R K_Sᵀ`, `(d, |S|)`.
    fn rk(&self, sel: &[usize]) -> Vec<Vec<f64>> {
        (0..self.d)
            .map(|i| {
                sel.iter()
                    .map(|&j| {
                        (0..self.n)
                            .map(|r| {
                                self.resid[r * self.d + i] * self.keys[r * self.d_ff + j] as f64
                            })
                            .sum()
                    })
                    .collect()
            })
            .collect()
    }
}

/// `Δ_S = Rᵀ Y` in f64 (not rounded to f32), `(d, |S|)`.
fn delta_f64(u: &Factored) -> Vec<Vec<f64>> {
    let s = u.cols.len();
    (0..u.d)
        .map(|i| {
            (0..s)
                .map(|j| (0..u.n).map(|r| u.r[r * u.d + i] * u.y[r * s + j]).sum())
                .collect()
        })
        .collect()
}

fn matmul(a: &[Vec<f64>], b: &[Vec<f64>]) -> Vec<Vec<f64>> {
    a.iter()
        .map(|row| {
            (0..b[0].len())
                .map(|j| row.iter().zip(b).map(|(x, br)| x * br[j]).sum())
                .collect()
        })
        .collect()
}

fn fro(a: &[Vec<f64>]) -> f64 {
    a.iter().flatten().map(|x| x * x).sum::<f64>().sqrt()
}

#[test]
fn the_update_solves_the_normal_equations() {
    // Invariant 2: ‖Δ_S G − R K_Sᵀ‖ / ‖R K_Sᵀ‖ < 1e-10 in f64.
    let sys = random_system(1, 40, 12, 3);
    let sel: Vec<usize> = (0..40).filter(|j| j % 3 != 1).collect();
    let u = solve_nse(&sys.view(), &sel, 7.0).unwrap().update;
    let lhs = matmul(&delta_f64(&u), &sys.g(&sel, 7.0));
    let rhs = sys.rk(&sel);
    let diff: Vec<Vec<f64>> = lhs
        .iter()
        .zip(&rhs)
        .map(|(a, b)| a.iter().zip(b).map(|(x, y)| x - y).collect())
        .collect();
    let rel = fro(&diff) / fro(&rhs);
    assert!(rel < 1e-10, "normal-equation residual {rel:e}");
}

#[test]
fn the_condition_estimate_is_the_eigenvalue_ratio() {
    // A system whose G is diagonal by construction: C diagonal, P = 0, and each request's key
    // on its own neuron, so G = diag(λ c_j + k_j²) and cond(G) = max / min, by hand.
    let (d_ff, d, n, lambda) = (12, 3, 2, 2.0);
    let c_diag = [
        1.0, 3.0, 0.5, 2.0, 50.0, 4.0, 1.5, 2.5, 0.75, 3.5, 1.25, 5.0f32,
    ];
    let mut c = vec![0.0f32; d_ff * d_ff];
    for (j, &v) in c_diag.iter().enumerate() {
        c[j * d_ff + j] = v;
    }
    let mut keys = vec![0.0f32; n * d_ff];
    keys[1] = 2.0; // request 0 on neuron 1: G_11 = 2·3 + 4 = 10
    keys[d_ff + 2] = 1.0; // request 1 on neuron 2: G_22 = 2·0.5 + 1 = 2
    let sys = System {
        c,
        p: PastKeys::new(d_ff),
        keys,
        resid: vec![1.0; n * d],
        d_ff,
        d,
        n,
    };
    let all: Vec<usize> = (0..d_ff).collect();
    // G's diagonal: λ c_j, plus 4 at neuron 1 and 1 at neuron 2; the largest is G_44 = 100
    // and the smallest G_88 = 1.5.
    let expected = 100.0 / 1.5;
    let got = solve_nse(&sys.view(), &all, lambda)
        .unwrap()
        .condition
        .unwrap();
    assert!(
        (got - expected).abs() < 1e-6 * expected,
        "cond {got} vs {expected}"
    );
}

#[test]
fn the_update_minimises_the_objective() {
    // Invariant 3: the objective ‖Δ K_S − R‖² + λ tr(Δ C Δᵀ) + tr(Δ P Δᵀ) grows in every
    // direction; for a quadratic the growth is tr(E G Eᵀ) exactly.
    let sys = random_system(2, 24, 6, 2);
    let sel: Vec<usize> = (0..24).step_by(2).collect();
    let lambda = 3.0;
    let delta = delta_f64(&solve_nse(&sys.view(), &sel, lambda).unwrap().update);
    let p = sys.p.dense();
    let objective = |dl: &[Vec<f64>]| {
        let mut f = 0.0;
        for (i, row) in dl.iter().enumerate() {
            for r in 0..sys.n {
                let pred: f64 = sel
                    .iter()
                    .zip(row)
                    .map(|(&j, x)| x * sys.keys[r * sys.d_ff + j] as f64)
                    .sum();
                f += (pred - sys.resid[r * sys.d + i]).powi(2);
            }
            for (a, &ja) in sel.iter().enumerate() {
                for (b, &jb) in sel.iter().enumerate() {
                    let m =
                        lambda * sys.c[ja * sys.d_ff + jb] as f64 + p[ja * sys.d_ff + jb] as f64;
                    f += row[a] * m * row[b];
                }
            }
        }
        f
    };
    let f0 = objective(&delta);
    let mut rng = Rng::new(9);
    for _ in 0..6 {
        let e: Vec<Vec<f64>> = (0..sys.d)
            .map(|_| {
                (0..sel.len())
                    .map(|_| 1e-3 * rng.range(-1.0, 1.0) as f64)
                    .collect()
            })
            .collect();
        for sign in [1.0, -1.0] {
            let moved: Vec<Vec<f64>> = delta
                .iter()
                .zip(&e)
                .map(|(a, b)| a.iter().zip(b).map(|(x, y)| x + sign * y).collect())
                .collect();
            assert!(
                objective(&moved) > f0,
                "a perturbation decreased the objective"
            );
        }
    }
}

/// Gauss–Jordan inverse with partial pivoting: an oracle independent of faer.
fn inverse(mut a: Vec<Vec<f64>>) -> Vec<Vec<f64>> {
    let n = a.len();
    let mut inv: Vec<Vec<f64>> = (0..n)
        .map(|i| (0..n).map(|j| if i == j { 1.0 } else { 0.0 }).collect())
        .collect();
    for col in 0..n {
        let piv = (col..n)
            .max_by(|&x, &y| a[x][col].abs().total_cmp(&a[y][col].abs()))
            .unwrap();
        a.swap(col, piv);
        inv.swap(col, piv);
        let p = a[col][col];
        for j in 0..n {
            a[col][j] /= p;
            inv[col][j] /= p;
        }
        for r in 0..n {
            if r != col {
                let f = a[r][col];
                for j in 0..n {
                    a[r][j] -= f * a[col][j];
                    inv[r][j] -= f * inv[col][j];
                }
            }
        }
    }
    inv
}

#[test]
fn all_neurons_and_no_past_keys_is_memit() {
    // Invariant 4: with S = all and P = 0, Δ = R Kᵀ (λC + KKᵀ)⁻¹.
    let mut sys = random_system(3, 20, 5, 3);
    sys.p = PastKeys::new(20);
    let all: Vec<usize> = (0..20).collect();
    let ours = delta_f64(&solve_nse(&sys.view(), &all, 11.0).unwrap().update);
    let memit = matmul(&sys.rk(&all), &inverse(sys.g(&all, 11.0)));
    let diff: Vec<Vec<f64>> = ours
        .iter()
        .zip(&memit)
        .map(|(a, b)| a.iter().zip(b).map(|(x, y)| x - y).collect())
        .collect();
    assert!(
        fro(&diff) / fro(&memit) < 1e-9,
        "differs from MEMIT by {:e}",
        fro(&diff) / fro(&memit)
    );
}

#[test]
fn selection_is_a_covering_prefix() {
    // Invariant 5, on random keys of 4 requests over 300 neurons.
    let (n, d_ff) = (4, 300);
    let mut rng = Rng::new(4);
    let keys = rng.vec(n * d_ff);
    let mut last = 0;
    for p in [0.05f32, 0.2, 0.5, 0.8, 0.95, 0.999] {
        let sel = select_neurons(&keys, d_ff, p);
        let s = &sel.scores;
        // A prefix of the descending order.
        let mut order: Vec<usize> = (0..d_ff).collect();
        order.sort_by(|&a, &b| s[b].total_cmp(&s[a]).then(a.cmp(&b)));
        assert_eq!(sel.selected, order[..sel.selected.len()]);
        // Code convention: Σ_S ≤ p Σ < Σ_S + s_(|S|), running sums in f32.
        let total: f32 = s.iter().sum();
        let covered: f32 = sel.selected.iter().map(|&j| s[j]).sum();
        let next = s[order[sel.selected.len()]];
        assert!(
            covered <= p * total && p * total < covered + next,
            "p = {p}: {covered} {next} {total}"
        );
        // |S| grows with p.
        assert!(sel.selected.len() >= last);
        last = sel.selected.len();
        // Permuting the requests changes nothing.
        let mut perm = keys[d_ff..].to_vec();
        perm.extend_from_slice(&keys[..d_ff]);
        assert_eq!(select_neurons(&perm, d_ff, p).selected, sel.selected);
    }
    assert_eq!(select_neurons(&keys, d_ff, 1.0).selected.len(), d_ff);
}

#[test]
fn keys_weigh_the_bare_prompt_half() {
    // Invariant 7: with templates [["{}"], [5 prefixes]] the bare prompt weighs 1/2 and each
    // prefix 1/10. Synthetic activations: template t of request r has value 10^t + r.
    let d_ff = 3;
    let kp = KeyPrompts {
        packed: Packed::new(&vec![vec![0u32]; 12]),
        texts: vec![String::new(); 12],
        rows: (0..12).collect(),
        subject_last: vec![0; 12],
        n_requests: 2,
        group_lens: vec![1, 5],
    };
    let all: Vec<f32> = (0..2)
        .flat_map(|r| (0..6).flat_map(move |t| vec![10f32.powi(t) + r as f32; d_ff]))
        .collect();
    let k = average_keys(&all, d_ff, &kp);
    for r in 0..2 {
        let want =
            0.5 * (1.0 + r as f32) + 0.1 * (1..6).map(|t| 10f32.powi(t) + r as f32).sum::<f32>();
        for j in 0..d_ff {
            assert!(
                (k[r * d_ff + j] - want).abs() <= 1e-3,
                "request {r}: {} vs {want}",
                k[r * d_ff + j]
            );
        }
    }
}
