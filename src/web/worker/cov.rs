//! The covariance statistics `C_l` in the page: from IndexedDB, else the statistic shipped
//! beside the default model (`models/cov/`, when its model sha256 matches), else computed in the
//! page over a smaller token budget. Whatever was fetched or computed is saved in IndexedDB,
//! keyed by model sha256, layers, corpus and budget ([`storage::cov_key`]).

use std::collections::BTreeMap;

use js_sys::{Array, Float32Array, Object, Reflect};
use serde::Deserialize;
use wasm_bindgen::{JsCast, JsValue};

use super::loader::fetch_bytes;
use super::session::Session;
use super::storage::{self, COVARIANCE, Db};
use crate::edit::covariance::windows;
use crate::edit::{CovarianceSet, Hparams};
use crate::web::js;
use crate::{Error, Result};

/// Where the statistic of the default model is shipped (written by `nse covariance`).
pub(crate) const SHIPPED_DIR: &str = "models/cov";
/// The corpus the page computes over when nothing matches (wikitext-2 test, raw).
pub(crate) const CORPUS_URL: &str = "models/wikitext-2-raw_wiki.test.raw";
/// The corpus's name in cache keys (the hyperparameters' `mom2_dataset`).
const CORPUS_NAME: &str = "wikitext2_raw_test";

/// `covariance.json` as `nse covariance` writes it.
#[derive(Deserialize)]
struct Manifest {
    model_sha256: String,
    layers: Vec<usize>,
    tokens: usize,
    #[serde(default)]
    corpus: Option<String>,
    #[serde(default)]
    window: Option<usize>,
}

/// Reports `(fraction done, what is happening)`.
pub(crate) type Report<'a> = &'a dyn Fn(f64, &str);

/// When to compute the statistic in the page, and over how many tokens.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Compute {
    /// Only when no stored or shipped statistic matches.
    IfMissing { budget: usize },
    /// Now, skipping the stored and shipped ones (the "recompute" button).
    Now { budget: usize },
}

/// The statistics of `hp.layers`: stored, shipped, or computed (in that order of preference,
/// unless `compute` says `Now`). `db` is `None` where IndexedDB is unavailable.
///
/// # Errors
/// A malformed shipped file, a missing corpus, or a failure of the computation.
pub(crate) async fn obtain(
    s: &mut Session,
    db: Option<&Db>,
    compute: Compute,
    report: Report<'_>,
) -> Result<CovarianceSet> {
    let d_ff = s.config().d_ff;
    let hp = s.setup()?.hp.clone();
    let model_sha256 = s.source.sha256.clone();
    let model_sha256 = model_sha256.as_str();
    let (budget, force_compute) = match compute {
        Compute::IfMissing { budget } => (budget, false),
        Compute::Now { budget } => (budget, true),
    };
    if !force_compute {
        if let Some(db) = db {
            report(0.0, "Covariance: looking in this browser's storage…");
            match load_stored(db, model_sha256, &hp.layers, d_ff).await {
                Ok(Some(set)) => return Ok(set),
                Ok(None) => {}
                Err(e) => web_sys::console::warn_1(&e.to_string().into()),
            }
        }
        report(0.05, "Covariance: looking for the shipped statistic…");
        if let Some((set, corpus, window)) =
            fetch_shipped(model_sha256, &hp.layers, d_ff, report).await?
        {
            if let Some(db) = db {
                let key = storage::cov_key(model_sha256, &hp.layers, &corpus, set.tokens, window);
                store(db, &key, &set).await;
            }
            return Ok(set);
        }
    }
    let set = compute_in_page(s, &hp, budget, report).await?;
    if let Some(db) = db {
        let key = storage::cov_key(
            model_sha256,
            &hp.layers,
            CORPUS_NAME,
            set.tokens,
            hp.mom2_window,
        );
        store(db, &key, &set).await;
    }
    Ok(set)
}

/// The stored set of these layers with the largest budget.
async fn load_stored(
    db: &Db,
    sha: &str,
    layers: &[usize],
    d_ff: usize,
) -> Result<Option<CovarianceSet>> {
    let keys = db
        .keys_with_prefix(COVARIANCE, &storage::cov_prefix(sha, layers))
        .await?;
    let budget = |k: &String| {
        k.rsplit('|')
            .find_map(|p| p.strip_prefix('n').and_then(|n| n.parse::<usize>().ok()))
            .unwrap_or(0)
    };
    let Some(key) = keys.iter().max_by_key(|k| budget(k)) else {
        return Ok(None);
    };
    let Some(v) = db.get(COVARIANCE, key).await? else {
        return Ok(None);
    };
    let bad = || {
        Error::input(format!(
            "the stored covariance {key} is unreadable; it is recomputed"
        ))
    };
    let get = |k: &str| Reflect::get(&v, &JsValue::from_str(k)).map_err(|_| bad());
    let tokens = get("tokens")?.as_f64().ok_or_else(bad)? as usize;
    let source = get("source")?.as_string().unwrap_or_default();
    let mut m = BTreeMap::new();
    for &l in layers {
        let c = get(&format!("m{l}"))?
            .dyn_into::<Float32Array>()
            .map_err(|_| bad())?
            .to_vec();
        if Some(c.len()) != d_ff.checked_mul(d_ff) || !c.iter().all(|x| x.is_finite()) {
            // Deleted, or the same bad entry would be found again on every load.
            if let Err(e) = db.delete(COVARIANCE, key).await {
                web_sys::console::warn_1(&e.to_string().into());
            }
            return Err(bad());
        }
        m.insert(l, c);
    }
    Ok(Some(CovarianceSet::new(
        m,
        tokens,
        format!("{source}, from this browser's storage"),
    )))
}

/// Saves a set; a failure (quota) is only logged: the statistic is still used this session.
async fn store(db: &Db, key: &str, set: &CovarianceSet) {
    let o = Object::new();
    storage::set(&o, "tokens", &JsValue::from_f64(set.tokens as f64));
    storage::set(&o, "source", &JsValue::from_str(&set.source));
    let layers = Array::new();
    for (l, c) in set.matrices() {
        layers.push(&JsValue::from_f64(*l as f64));
        storage::set(
            &o,
            &format!("m{l}"),
            &Float32Array::from(c.as_slice()).into(),
        );
    }
    storage::set(&o, "layers", &layers.into());
    if let Err(e) = db.put(COVARIANCE, key, &o.into()).await {
        web_sys::console::warn_1(&format!("the covariance statistic was not saved: {e}").into());
    }
}

/// The shipped statistic, when its manifest names this model and these layers; `None` when
/// there is none or it is for another model.
async fn fetch_shipped(
    sha: &str,
    layers: &[usize],
    d_ff: usize,
    report: Report<'_>,
) -> Result<Option<(CovarianceSet, String, usize)>> {
    let Ok(bytes) = fetch_bytes(&format!("{SHIPPED_DIR}/covariance.json"), |_, _| {}).await else {
        return Ok(None);
    };
    let Ok(manifest) = serde_json::from_slice::<Manifest>(&bytes) else {
        return Ok(None);
    };
    if manifest.model_sha256 != sha || !layers.iter().all(|l| manifest.layers.contains(l)) {
        return Ok(None);
    }
    let mut m = BTreeMap::new();
    for (i, &l) in layers.iter().enumerate() {
        let url = format!("{SHIPPED_DIR}/layer{l}.npy");
        report(
            0.1 + 0.8 * i as f64 / layers.len() as f64,
            &format!("Covariance: downloading {url}…"),
        );
        let bytes = fetch_bytes(&url, |_, _| {}).await?;
        let c = crate::edit::covariance::matrix_from_npy(&bytes, &url, d_ff)?;
        m.insert(l, c);
        js::yield_now().await;
    }
    let corpus = manifest.corpus.unwrap_or_else(|| CORPUS_NAME.into());
    let source = format!(
        "shipped in {SHIPPED_DIR}/ ({corpus}, {} tokens)",
        manifest.tokens
    );
    let set = CovarianceSet::new(m, manifest.tokens, source);
    Ok(Some((set, corpus, manifest.window.unwrap_or(0))))
}

/// Computes the statistic over the first `budget` tokens of [`CORPUS_URL`] with the library's
/// loop ([`Session::compute_covariance`]), reporting after every window; the session's pause hook
/// yields to the event loop there, so the page stays responsive on the cpu backend too, and a
/// cancel stops it there.
async fn compute_in_page(
    s: &mut Session,
    hp: &Hparams,
    budget: usize,
    report: Report<'_>,
) -> Result<CovarianceSet> {
    report(
        0.0,
        &format!("Covariance: downloading the corpus {CORPUS_URL}…"),
    );
    let text = fetch_bytes(CORPUS_URL, |_, _| {}).await.map_err(|e| {
        Error::input(format!(
            "no covariance statistic matches this model, and the corpus to compute one is \
             missing ({e}); run `bash scripts/setup.sh`, which ships both"
        ))
    })?;
    let text = String::from_utf8_lossy(&text);
    let wins = windows(&text, &s.tokenizer, hp.mom2_window, budget)?;
    let t0 = js::now_ms();
    let mut set = s
        .compute_covariance(&wins, CORPUS_NAME, |done, total| {
            let rate = done as f64 / ((js::now_ms() - t0) / 1000.0).max(1e-3);
            let left = (total - done) as f64 / rate.max(1e-9);
            report(
                done as f64 / total as f64,
                &format!(
                    "Covariance: computing in this page, {done} of {total} tokens ({rate:.0} tokens/s, about {left:.0} s left)"
                ),
            );
        })
        .await?;
    set.source.push_str(", computed in this page");
    Ok(set)
}
