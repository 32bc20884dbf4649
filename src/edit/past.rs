//! `P_l = Σ Kᵀ K` over the keys of the batches applied so far (spec §5.2), kept as those keys
//! while they are few and as the dense `(d_ff, d_ff)` matrix once that is the smaller.
//!
//! A session's first batches add a few keys each: `P` of the default model is 9.4 MB per layer
//! in f32 and a batch's keys 6 KB per request, and a model with `d_ff` = 8,192 would need 268 MB
//! per layer before any edit. The solves read `P` only through [`PastKeys::block`] (the selected
//! neurons, NSE and MEMIT-seq) and [`PastKeys::dense`] (AlphaEdit), which give the same values
//! bit for bit in either form: every element is the f32 sum, batch after batch, of that batch's
//! products summed over its keys in order ([`add_gram`]).

use std::borrow::Cow;

use crate::ops::par_rows;

/// `P` of one edited layer.
#[derive(Clone, Debug)]
pub struct PastKeys {
    d_ff: usize,
    form: Form,
}

#[derive(Clone, Debug)]
enum Form {
    /// Each batch's keys `(n, d_ff)`, oldest first.
    Keys(Vec<Vec<f32>>),
    Dense(Vec<f32>),
}

/// The keys are kept while they hold fewer rows than `d_ff / KEYS_FRACTION`: at most a quarter
/// of the dense matrix's memory, and a block of `|S|` neurons costs at most `d_ff / 4` products
/// per element to rebuild.
pub const KEYS_FRACTION: usize = 4;

/// Equal values (in either form), bit for bit.
impl PartialEq for PastKeys {
    fn eq(&self, other: &Self) -> bool {
        self.d_ff == other.d_ff && self.dense() == other.dense()
    }
}

impl PastKeys {
    /// `P = 0`.
    pub fn new(d_ff: usize) -> Self {
        PastKeys {
            d_ff,
            form: Form::Keys(vec![]),
        }
    }

    /// A dense `P` as given (tests and tools).
    ///
    /// # Panics
    /// `p.len() != d_ff²`.
    pub fn from_dense(d_ff: usize, p: Vec<f32>) -> Self {
        assert_eq!(p.len(), d_ff * d_ff, "P is (d_ff, d_ff)");
        PastKeys {
            d_ff,
            form: Form::Dense(p),
        }
    }

    /// Whether `P = 0` (no keys added since the last clear).
    pub fn is_zero(&self) -> bool {
        matches!(&self.form, Form::Keys(b) if b.is_empty())
    }

    /// Whether `P` is held as the dense matrix.
    pub fn is_dense(&self) -> bool {
        matches!(self.form, Form::Dense(_))
    }

    /// Bytes held.
    pub fn resident_bytes(&self) -> usize {
        4 * match &self.form {
            Form::Keys(k) => k.iter().map(Vec::len).sum(),
            Form::Dense(p) => p.len(),
        }
    }

    /// `P += Kᵀ K` for one batch's keys `k (n, d_ff)`.
    ///
    /// # Errors
    /// [`crate::Error::TooLarge`] when the dense matrix is due and does not fit the memory
    /// budget; `P` is then unchanged.
    ///
    /// # Panics
    /// `k.len()` not a multiple of `d_ff` (callers check entries from files first).
    pub fn add(&mut self, k: &[f32]) -> crate::Result<()> {
        let f = self.d_ff;
        assert!(
            f > 0 && k.len().is_multiple_of(f),
            "keys of width {f}: {}",
            k.len()
        );
        if k.is_empty() {
            return Ok(());
        }
        if self.densifies(k) {
            self.check_dense()?;
            self.form = Form::Dense(self.dense().into_owned());
        }
        match &mut self.form {
            Form::Keys(batches) => batches.push(k.to_vec()),
            Form::Dense(p) => add_gram(p, k, f, None),
        }
        Ok(())
    }

    /// Whether adding the keys `k` makes `P` dense.
    fn densifies(&self, k: &[f32]) -> bool {
        let f = self.d_ff;
        match &self.form {
            Form::Dense(_) => false,
            Form::Keys(batches) => {
                let rows = batches.iter().map(|b| b.len() / f).sum::<usize>() + k.len() / f;
                rows * KEYS_FRACTION >= f
            }
        }
    }

    /// The budget check of the dense matrix.
    fn check_dense(&self) -> crate::Result<()> {
        let f = self.d_ff;
        crate::budget::check(crate::budget::bytes_of(&[f, f], 4), || {
            format!("the past keys' second moment P of a layer (d_ff {f}: d_ff² f32)")
        })
    }

    /// Checks that [`PastKeys::add`] of `k` would succeed, changing nothing.
    ///
    /// # Errors
    /// As [`PastKeys::add`].
    pub fn check_add(&self, k: &[f32]) -> crate::Result<()> {
        if self.densifies(k) {
            self.check_dense()?;
        }
        Ok(())
    }

    /// `P = 0`.
    pub fn clear(&mut self) {
        self.form = Form::Keys(vec![]);
    }

    /// `P_SS`, `(|S|, |S|)` row-major, for the neurons `sel`.
    pub fn block(&self, sel: &[usize]) -> Vec<f32> {
        let s = sel.len();
        match &self.form {
            Form::Dense(p) => {
                let mut out = Vec::with_capacity(s * s);
                for &a in sel {
                    out.extend(sel.iter().map(|&b| p[a * self.d_ff + b]));
                }
                out
            }
            Form::Keys(batches) => {
                let mut out = vec![0.0f32; s * s];
                for b in batches {
                    add_gram(&mut out, b, self.d_ff, Some(sel));
                }
                out
            }
        }
    }

    /// `P`, `(d_ff, d_ff)` row-major (built from the keys when held as keys).
    pub fn dense(&self) -> Cow<'_, [f32]> {
        match &self.form {
            Form::Dense(p) => Cow::Borrowed(p),
            Form::Keys(batches) => {
                let mut p = vec![0.0f32; self.d_ff * self.d_ff];
                for b in batches {
                    add_gram(&mut p, b, self.d_ff, None);
                }
                Cow::Owned(p)
            }
        }
    }

    /// `tr P`, summed in f64 in neuron order.
    pub fn trace(&self) -> f64 {
        let f = self.d_ff;
        match &self.form {
            Form::Dense(p) => (0..f).map(|i| f64::from(p[i * f + i])).sum(),
            Form::Keys(batches) => (0..f)
                .map(|i| {
                    let mut d = 0.0f32;
                    for b in batches {
                        let mut sum = 0.0f32;
                        for row in b.chunks_exact(f) {
                            sum += row[i] * row[i];
                        }
                        d += sum;
                    }
                    f64::from(d)
                })
                .sum(),
        }
    }
}

/// `out += K_Sᵀ K_S` for the columns `cols` of `k (n, d_ff)` (`None`: all of them), `out
/// (|S|, |S|)`: each element gets its products summed over the keys in order from zero, then
/// added (so a block of the dense matrix and the block built from the keys are the same floats).
fn add_gram(out: &mut [f32], k: &[f32], d_ff: usize, cols: Option<&[usize]>) {
    let n = k.len() / d_ff;
    let gathered;
    let (ks, s): (&[f32], usize) = match cols {
        None => (k, d_ff),
        Some(cols) => {
            gathered = k
                .chunks_exact(d_ff)
                .flat_map(|row| cols.iter().map(move |&c| row[c]))
                .collect::<Vec<f32>>();
            (&gathered, cols.len())
        }
    };
    assert_eq!(out.len(), s * s);
    par_rows(out, s, |a, row| {
        let mut acc = vec![0.0f32; s];
        for r in 0..n {
            let key = &ks[r * s..(r + 1) * s];
            let x = key[a];
            for (o, &y) in acc.iter_mut().zip(key) {
                *o += x * y;
            }
        }
        for (o, v) in row.iter_mut().zip(acc) {
            *o += v;
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ops::testing::uniform;

    /// Batches added one by one, crossing into the dense form, give the same blocks, dense
    /// matrix and trace bit for bit as a state that stayed dense, and the f64 values.
    #[test]
    fn keys_and_dense_give_the_same_floats() {
        let f = 40;
        let batches: Vec<Vec<f32>> = [2usize, 3, 4, 7]
            .iter()
            .enumerate()
            .map(|(i, &n)| uniform(n * f, i as u64 + 1, -1.0, 1.0))
            .collect();
        let mut lazy = PastKeys::new(f);
        let mut dense = PastKeys::from_dense(f, vec![0.0; f * f]);
        let sel = [3usize, 0, 17, 39, 18];
        let mut rows = 0;
        assert!(lazy.is_zero());
        for b in &batches {
            lazy.add(b).unwrap();
            dense.add(b).unwrap();
            rows += b.len() / f;
            assert!(!lazy.is_zero());
            assert_eq!(lazy.is_dense(), rows * KEYS_FRACTION >= f, "{rows} rows");
            assert_eq!(lazy.block(&sel), dense.block(&sel), "{rows} rows");
            assert_eq!(lazy.dense(), dense.dense());
            assert_eq!(lazy.trace().to_bits(), dense.trace().to_bits());
            // Against f64: P[i][j] = Σ over every key so far.
            let p = lazy.dense();
            for (i, j) in [(0, 0), (5, 9), (39, 1)] {
                let want: f64 = batches[..]
                    .iter()
                    .take_while(|x| !std::ptr::eq(*x, b))
                    .chain(std::iter::once(b))
                    .flat_map(|x| x.chunks_exact(f))
                    .map(|k| k[i] as f64 * k[j] as f64)
                    .sum();
                assert!((p[i * f + j] as f64 - want).abs() < 1e-5, "({i}, {j})");
            }
        }
        assert!(lazy.is_dense());
        lazy.clear();
        assert!(lazy.is_zero() && !lazy.is_dense() && lazy.block(&sel).iter().all(|&x| x == 0.0));
        assert_eq!(lazy.resident_bytes(), 0);
    }
}
