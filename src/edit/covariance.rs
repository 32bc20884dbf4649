//! The preservation statistic `C_l = E[k kᵀ]` (spec §5.1): the uncentred second moment of the
//! `down_proj` input over a text corpus, computed on the *unedited* model for every edited layer
//! up front (hazard H11).
//!
//! Windowing follows `tests/golden/smollm2-config.json`: the corpus is split into articles
//! at top-level ` = Title = ` lines (text before the first heading dropped), each article is
//! tokenised as one string and cut into consecutive windows, and windows are used in file order
//! until the token budget is reached (the last one truncated). Per window, `Kᵀ K` is accumulated
//! on the backend in f32; window sums are added on the host in f64.

use std::collections::BTreeMap;

use crate::backend::{Backend, Transpose};
use crate::model::{ForwardSpec, Model, Packed, Tokenizer};
use crate::{Error, Result};

/// Windows accumulated on the backend before their sum is read back and added in f64.
const WINDOWS_PER_READBACK: usize = 8;

/// Splits a wikitext-style corpus into articles at top-level heading lines (`" = Title = "`).
/// A corpus without such headings is one article.
pub fn articles(text: &str) -> Vec<&str> {
    let is_heading = |line: &str| {
        let l = line.trim_end_matches(['\n', '\r']);
        l.starts_with(" = ") && l.ends_with(" = ") && l.len() > 6 && !l[3..].starts_with('=')
    };
    let mut starts = vec![];
    let mut offset = 0;
    for line in text.split_inclusive('\n') {
        if is_heading(line) {
            starts.push(offset);
        }
        offset += line.len();
    }
    if starts.is_empty() {
        return if text.trim().is_empty() {
            vec![]
        } else {
            vec![text]
        };
    }
    starts.push(text.len());
    starts.windows(2).map(|w| &text[w[0]..w[1]]).collect()
}

/// The token windows of a corpus under a budget.
///
/// # Errors
/// An empty corpus. One with fewer tokens than the budget is accepted (all of it is used).
pub fn windows(text: &str, tok: &Tokenizer, window: usize, budget: usize) -> Result<Vec<Vec<u32>>> {
    // Line endings as Python's text mode reads them (the reference's statistics did): the
    // wikitext-2 raw files use CRLF, and "\r\n" tokenises differently from "\n".
    let text = text.replace("\r\n", "\n").replace('\r', "\n");
    let mut out = vec![];
    let mut total = 0;
    'articles: for article in articles(&text) {
        let ids = tok.encode(article)?;
        for chunk in ids.chunks(window) {
            let take = chunk.len().min(budget - total);
            out.push(chunk[..take].to_vec());
            total += take;
            if total == budget {
                break 'articles;
            }
        }
    }
    if total == 0 {
        return Err(Error::input("the covariance corpus holds no text"));
    }
    Ok(out)
}

/// `C_l` for each layer in `layers`, as row-major `(d_ff, d_ff)` f32 matrices, with the token
/// count. `on_progress(tokens_done, tokens_total)` is called after each window.
pub async fn second_moments<B: Backend>(
    model: &Model<B>,
    windows: &[Vec<u32>],
    layers: &[usize],
    on_progress: impl FnMut(usize, usize),
) -> Result<(BTreeMap<usize, Vec<f32>>, usize)> {
    second_moments_with(model, windows, layers, None, on_progress).await
}

/// [`second_moments`] with a `pause` awaited after every window: the page yields to the event
/// loop there, and a cancelled job stops there (nothing is kept).
///
/// Layers are summed together when the memory budget holds their sums, else a few at a time,
/// each group with its own pass over the windows (the same floats either way: each layer's
/// sums are its own; `on_progress` then counts the tokens of every pass). A layer's sums take
/// `d_ff²` f32 on the backend plus the copy read back, and `d_ff²` f64 on the host when there is
/// more than one readback.
///
/// # Errors
/// A backend failure, too little memory for one layer's sums, or the pause hook's error
/// (cancelled).
pub async fn second_moments_with<B: Backend>(
    model: &Model<B>,
    windows: &[Vec<u32>],
    layers: &[usize],
    pause: Option<crate::edit::target::Pause<'_>>,
    mut on_progress: impl FnMut(usize, usize),
) -> Result<(BTreeMap<usize, Vec<f32>>, usize)> {
    let d_ff = model.config.d_ff;
    let one_readback = windows.len() <= WINDOWS_PER_READBACK;
    let per_layer = crate::budget::bytes_of(&[d_ff, d_ff], if one_readback { 8 } else { 16 });
    crate::budget::check(per_layer, || {
        format!("the covariance sums of one layer (d_ff {d_ff}: d_ff² f32 and f64 values)")
    })?;
    let per_layer = per_layer.unwrap_or(u64::MAX).max(1);
    let group = usize::try_from(crate::budget::limit() / per_layer)
        .unwrap_or(usize::MAX)
        .clamp(1, layers.len().max(1));
    let total: usize = windows.iter().map(Vec::len).sum();
    let passes = layers.len().div_ceil(group);
    let mut out = BTreeMap::new();
    for (i, chunk) in layers.chunks(group).enumerate() {
        let progress = |done: usize, _: usize| on_progress(i * total + done, passes * total);
        out.append(&mut layer_sums(model, windows, chunk, one_readback, pause, progress).await?);
    }
    Ok((out, total))
}

/// The second moments of `layers` from one pass over `windows`: the backend's f32 sums read
/// back every [`WINDOWS_PER_READBACK`] windows and added in f64, or, with `one_readback`, the
/// one readback divided by the token count directly (the same floats: its f64 sum would be the
/// f32 values themselves).
async fn layer_sums<B: Backend>(
    model: &Model<B>,
    windows: &[Vec<u32>],
    layers: &[usize],
    one_readback: bool,
    pause: Option<crate::edit::target::Pause<'_>>,
    mut on_progress: impl FnMut(usize, usize),
) -> Result<BTreeMap<usize, Vec<f32>>> {
    let be = model.backend();
    let d_ff = model.config.d_ff;
    let last = *layers.iter().max().expect("at least one layer");
    let total: usize = windows.iter().map(Vec::len).sum();
    let scale = |x: f64| (x / total as f64) as f32;
    let mut sums: BTreeMap<usize, Vec<f64>> = BTreeMap::new();
    let mut out: BTreeMap<usize, Vec<f32>> = BTreeMap::new();
    let mut acc: BTreeMap<usize, B::Tensor> = BTreeMap::new();
    let mut done = 0;
    for (w, ids) in windows.iter().enumerate() {
        let fwd = model.forward(
            &Packed::new(&[ids.as_slice()]),
            &ForwardSpec {
                mlp_key: layers,
                last_layer: Some(last),
                ..Default::default()
            },
        )?;
        for &l in layers {
            let k = &fwd.mlp_key[&l]; // (n, d_ff)
            match acc.get_mut(&l) {
                Some(c) => be.matmul_acc(c, k, k, Transpose::TN)?,
                None => {
                    acc.insert(l, be.matmul(k, k, Transpose::TN)?);
                }
            }
        }
        done += ids.len();
        if (w + 1) % WINDOWS_PER_READBACK == 0 || w + 1 == windows.len() {
            for (l, c) in std::mem::take(&mut acc) {
                let mut part = be.read(&c).await?;
                drop(c);
                if one_readback {
                    for x in &mut part {
                        *x = scale(f64::from(*x));
                    }
                    out.insert(l, part);
                } else {
                    let s = sums.entry(l).or_insert_with(|| vec![0.0; d_ff * d_ff]);
                    for (s, x) in s.iter_mut().zip(part) {
                        *s += x as f64;
                    }
                }
            }
        }
        on_progress(done, total);
        if let Some(p) = pause {
            p().await?;
        }
    }
    for (l, s) in sums {
        out.insert(l, s.into_iter().map(scale).collect());
    }
    Ok(out)
}

/// Where the covariance cache lives natively: `$NSE_CACHE_DIR`, else `$XDG_CACHE_HOME/nse`, else
/// `~/.cache/nse`.
#[cfg(not(target_arch = "wasm32"))]
pub fn cache_dir() -> std::path::PathBuf {
    use std::path::PathBuf;
    if let Some(d) = std::env::var_os("NSE_CACHE_DIR") {
        return PathBuf::from(d);
    }
    let base = std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))
        .unwrap_or_else(std::env::temp_dir);
    base.join("nse")
}

/// Which corpus, how many tokens, in which windows.
#[derive(Clone, Debug)]
pub struct CorpusSpec {
    /// A text file (wikitext-style headings split it into articles).
    pub path: std::path::PathBuf,
    /// Token budget.
    pub budget: usize,
    /// Window length in tokens.
    pub window: usize,
}

/// The cache key of one layer's statistic: model, corpus, budget, window, layer.
pub fn cache_key(
    model_sha256: &str,
    corpus_sha256: &str,
    budget: usize,
    window: usize,
    layer: usize,
) -> String {
    format!(
        "cov-{}-{}-n{budget}-w{window}-L{layer}",
        &model_sha256[..16.min(model_sha256.len())],
        &corpus_sha256[..16.min(corpus_sha256.len())]
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_at_top_level_headings_only() {
        let text = "preamble\n = A = \n a text\n = = Sub = = \n more\n = B = \n b\n";
        let a = articles(text);
        assert_eq!(
            a,
            [" = A = \n a text\n = = Sub = = \n more\n", " = B = \n b\n"]
        );
        assert_eq!(articles("plain text\n"), ["plain text\n"]);
        assert!(articles("  \n").is_empty());
    }
}

/// One layer's `C_l` from the bytes of a `.npy` file (a cache file, a golden or shipped file);
/// `path` names it in errors.
///
/// # Errors
/// [`Error::Format`] for a file that is not a float32 `.npy`, a shape other than
/// `(d_ff, d_ff)`, or a value that is not finite (a second moment of finite keys never is NaN
/// or infinite, so such a file is corrupt, and using it would turn the edit into NaN).
pub fn matrix_from_npy(bytes: &[u8], path: &str, d_ff: usize) -> Result<Vec<f32>> {
    let (shape, v) = crate::npy::read_f32(bytes, path)?;
    if shape != [d_ff, d_ff] {
        return Err(Error::format(
            path,
            format!("shape {shape:?}, expected [{d_ff}, {d_ff}]"),
        ));
    }
    if let Some(i) = v.iter().position(|x| !x.is_finite()) {
        return Err(Error::format(
            path,
            format!(
                "entry ({}, {}) of the covariance statistic is {}: the file is corrupt",
                i / d_ff,
                i % d_ff,
                v[i]
            ),
        ));
    }
    Ok(v)
}

/// The statistics of every edited layer.
#[derive(Clone, Debug, Default)]
pub struct CovarianceSet {
    layers: BTreeMap<usize, Vec<f32>>,
    /// Tokens they were computed over.
    pub tokens: usize,
    /// Where they came from (corpus, cache file, golden file).
    pub source: String,
}

impl CovarianceSet {
    /// A set from explicit matrices.
    pub fn new(
        layers: BTreeMap<usize, Vec<f32>>,
        tokens: usize,
        source: impl Into<String>,
    ) -> Self {
        CovarianceSet {
            layers,
            tokens,
            source: source.into(),
        }
    }

    /// `C_l`, `(d_ff, d_ff)`.
    ///
    /// # Errors
    /// The layer was not computed (the hyperparameters changed since).
    pub fn layer(&self, l: usize) -> Result<&[f32]> {
        self.layers.get(&l).map(Vec::as_slice).ok_or_else(|| {
            Error::input(format!(
                "no covariance statistic for layer {l}; recompute it for the current layers"
            ))
        })
    }

    /// All layers.
    pub fn matrices(&self) -> &BTreeMap<usize, Vec<f32>> {
        &self.layers
    }
}

#[cfg(not(target_arch = "wasm32"))]
mod native {
    use std::path::Path;

    use super::*;
    use crate::npy;

    impl CovarianceSet {
        /// Loads `layer{l}.npy` for each layer from `dir` (the golden files' layout).
        pub fn from_npy_dir(
            dir: &Path,
            layers: &[usize],
            d_ff: usize,
            tokens: usize,
        ) -> Result<Self> {
            let mut m = BTreeMap::new();
            for &l in layers {
                let path = dir.join(format!("layer{l}.npy"));
                m.insert(l, read_matrix(&path, d_ff)?);
            }
            Ok(CovarianceSet::new(m, tokens, dir.display().to_string()))
        }

        /// Loads the statistics from the cache ([`cache_dir`]), computing (and caching) the
        /// missing layers. `on_progress(tokens_done, tokens_total)` reports the computation.
        pub async fn load_or_compute<B: Backend>(
            model: &Model<B>,
            tok: &Tokenizer,
            model_sha256: &str,
            corpus: &CorpusSpec,
            layers: &[usize],
            on_progress: impl FnMut(usize, usize),
        ) -> Result<Self> {
            let dir = cache_dir();
            Self::load_or_compute_in(&dir, model, tok, model_sha256, corpus, layers, on_progress)
                .await
        }

        /// [`CovarianceSet::load_or_compute`] with the cache in `dir`.
        ///
        /// A cache file that cannot be used (truncated, another shape, a NaN or infinite
        /// entry) is removed and its layer recomputed; [`CovarianceSet::source`] says so.
        pub async fn load_or_compute_in<B: Backend>(
            dir: &Path,
            model: &Model<B>,
            tok: &Tokenizer,
            model_sha256: &str,
            corpus: &CorpusSpec,
            layers: &[usize],
            on_progress: impl FnMut(usize, usize),
        ) -> Result<Self> {
            let CorpusSpec {
                path: corpus_path,
                budget,
                window,
            } = corpus;
            let (budget, window) = (*budget, *window);
            let text =
                std::fs::read_to_string(corpus_path).map_err(|e| Error::io(corpus_path, e))?;
            let corpus_sha = crate::model::load::sha256_hex(&[text.as_bytes()]);
            let path_of = |l| {
                dir.join(format!(
                    "{}.npy",
                    cache_key(model_sha256, &corpus_sha, budget, window, l)
                ))
            };
            let mut m = BTreeMap::new();
            let mut missing = vec![];
            let mut discarded = vec![];
            for &l in layers {
                let path = path_of(l);
                match read_matrix(&path, model.config.d_ff) {
                    Ok(c) => {
                        m.insert(l, c);
                    }
                    Err(e) => {
                        // A cache file that exists but is bad (truncated, NaN, another shape) is
                        // removed, so that the recomputed statistic replaces it for good.
                        if path.exists() {
                            let removed = std::fs::remove_file(&path).is_ok();
                            discarded.push(format!(
                                "{}cache for layer {l} ({e})",
                                if removed {
                                    "removed the bad "
                                } else {
                                    "ignored the bad "
                                }
                            ));
                        }
                        missing.push(l);
                    }
                }
            }
            let wins = windows(&text, tok, window, budget)?;
            let tokens = wins.iter().map(Vec::len).sum();
            if !missing.is_empty() {
                let (computed, _) = second_moments(model, &wins, &missing, on_progress).await?;
                std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
                for (l, c) in computed {
                    let bytes = npy::write_f32(&[model.config.d_ff, model.config.d_ff], &c);
                    // Write then rename, so an interrupted run never leaves a truncated cache file.
                    let tmp = path_of(l).with_extension("tmp");
                    std::fs::write(&tmp, bytes).map_err(|e| Error::io(&tmp, e))?;
                    std::fs::rename(&tmp, path_of(l)).map_err(|e| Error::io(path_of(l), e))?;
                    m.insert(l, c);
                }
            }
            let mut source = format!(
                "{} ({tokens} tokens, cache {})",
                corpus_path.display(),
                dir.display()
            );
            for d in discarded {
                source.push_str(&format!("; {d}, recomputed"));
            }
            Ok(CovarianceSet::new(m, tokens, source))
        }
    }

    fn read_matrix(path: &Path, d_ff: usize) -> Result<Vec<f32>> {
        let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
        matrix_from_npy(&bytes, &path.display().to_string(), d_ff)
    }
}
