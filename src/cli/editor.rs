//! What `nse edit` and `nse eval` share: hyperparameters, templates, covariance (with a progress
//! bar and the on-disk cache), the method, and progress reporting of a batch.

use std::path::{Path, PathBuf};

use clap::Args;
use indicatif::{ProgressBar, ProgressStyle};

use crate::backend::Backend;
use crate::edit::covariance::CorpusSpec;
use crate::edit::{ContextTemplates, CovarianceSet, Hparams, Progress};
use crate::model::{Model, ModelSource, Tokenizer};
use crate::session::EditSetup;
use crate::{Error, Result};

/// Editing options common to `nse edit` and `nse eval`.
#[derive(Args, Debug, Clone)]
pub struct EditorArgs {
    /// Hyperparameter file (default: the shipped file for the model, see hparams/).
    #[arg(long)]
    pub hparams: Option<PathBuf>,
    /// Context templates file ([["{}"], [...]] or an object with `context_templates`);
    /// default: the hyperparameter file's templates, else sampled from the model.
    #[arg(long)]
    pub templates: Option<PathBuf>,
    /// Covariance corpus (a text file; default: the hyperparameters' mom2_dataset).
    #[arg(long)]
    pub corpus: Option<PathBuf>,
    /// Load precomputed statistics `layer{l}.npy` from this directory instead of computing them.
    #[arg(long)]
    pub cov_dir: Option<PathBuf>,
}

/// The covariance corpus named by the hyperparameters: `wikitext2_raw_test` is the wikitext-2
/// test split in the data directory (see [`super::data`]); any other name is a file path.
pub fn resolve_corpus(name: &str) -> Result<PathBuf> {
    if name == "wikitext2_raw_test" {
        return super::data::file(super::data::WIKITEXT2_TEST);
    }
    Ok(PathBuf::from(name))
}

impl EditorArgs {
    /// Loads the hyperparameters and the templates for `model` (sampled from it, deterministically,
    /// when neither `--templates` nor the hyperparameters fix them). For a run that continues a
    /// patch made with `continuing`, those hyperparameters are used (a `--hparams` file must
    /// equal them), and `model` must be the base model, so that sampled templates are those of
    /// the first run.
    pub async fn hparams_and_templates<B: Backend>(
        &self,
        model: &Model<B>,
        tok: &Tokenizer,
        source: &ModelSource,
        continuing: Option<&Hparams>,
    ) -> Result<(Hparams, ContextTemplates)> {
        let chosen = match &self.hparams {
            Some(p) => Some(Hparams::parse(&read(p)?, &p.display().to_string())?),
            None => None,
        };
        let hp = match (chosen, continuing) {
            (Some(h), Some(c)) if h != *c => {
                return Err(Error::input(format!(
                    "--hparams differs from the hyperparameters the patch was made with \
                     (fields {}); a continued history must keep them: drop --hparams",
                    differing_fields(&h, c).join(", ")
                )));
            }
            (Some(h), _) => h,
            (None, Some(c)) => c.clone(),
            (None, None) => {
                let (hp, shipped) = Hparams::for_model_or_derived(&model.config, &source.name);
                // Once per process: the request check and the edit both choose them.
                static NOTE: std::sync::Once = std::sync::Once::new();
                if !shipped {
                    NOTE.call_once(|| eprintln!(
                        "note: no hyperparameter file ships for {:?}; using defaults derived from \
                         its depth and width (layers {:?}; `nse hparams --model M` writes them, \
                         hparams/README.md explains the rule)",
                        source.name, hp.layers
                    ));
                }
                hp
            }
        };
        hp.check_model(&model.config)?;
        let templates = match (&self.templates, &hp.context_templates) {
            (Some(p), _) => ContextTemplates::parse(&read(p)?, &p.display().to_string())?,
            (None, Some(groups)) => ContextTemplates::new(groups.clone())?,
            (None, None) => ContextTemplates::sample(model, tok, hp.template_seed).await?,
        };
        Ok((hp, templates))
    }

    /// Loads hyperparameters, templates and the covariance statistics for `model`: an
    /// [`EditSetup`] with both set.
    pub async fn prepare<B: Backend>(
        &self,
        model: &Model<B>,
        tok: &Tokenizer,
        source: &ModelSource,
    ) -> Result<EditSetup> {
        self.prepare_with(model, tok, source, None).await
    }

    /// [`EditorArgs::prepare`] for a run that continues a patch made with `continuing` (see
    /// [`EditorArgs::hparams_and_templates`]); the covariance is the base model's.
    pub async fn prepare_with<B: Backend>(
        &self,
        model: &Model<B>,
        tok: &Tokenizer,
        source: &ModelSource,
        continuing: Option<&Hparams>,
    ) -> Result<EditSetup> {
        let (hp, templates) = self
            .hparams_and_templates(model, tok, source, continuing)
            .await?;
        let cov = match &self.cov_dir {
            Some(dir) => {
                CovarianceSet::from_npy_dir(dir, &hp.layers, model.config.d_ff, hp.mom2_n_samples)?
            }
            None => {
                let corpus = match &self.corpus {
                    Some(p) => p.clone(),
                    None => resolve_corpus(&hp.mom2_dataset)?,
                };
                if !corpus.is_file() {
                    return Err(Error::input(format!(
                        "covariance corpus {} not found; pass --corpus FILE or --cov-dir DIR",
                        corpus.display()
                    )));
                }
                let bar = bar(hp.mom2_n_samples as u64, "covariance (tokens)");
                let spec = CorpusSpec {
                    path: corpus,
                    budget: hp.mom2_n_samples,
                    window: hp.mom2_window,
                };
                let cov = CovarianceSet::load_or_compute(
                    model,
                    tok,
                    &source.sha256,
                    &spec,
                    &hp.layers,
                    |done, total| {
                        bar.set_length(total as u64);
                        bar.set_position(done as u64);
                    },
                )
                .await?;
                bar.finish_and_clear();
                cov
            }
        };
        eprintln!("covariance: {}", cov.source);
        let mut setup = EditSetup::new(hp)?;
        setup.templates = Some(templates);
        setup.set_cov(cov);
        Ok(setup)
    }
}

/// The top-level fields whose values differ between two sets of hyperparameters.
fn differing_fields(a: &Hparams, b: &Hparams) -> Vec<String> {
    let (serde_json::Value::Object(a), serde_json::Value::Object(b)) = (
        serde_json::to_value(a).expect("hparams serialise"),
        serde_json::to_value(b).expect("hparams serialise"),
    ) else {
        unreachable!("hparams serialise to objects")
    };
    let mut keys: Vec<&String> = a.keys().chain(b.keys()).collect();
    keys.sort();
    keys.dedup();
    keys.into_iter()
        .filter(|k| a.get(*k) != b.get(*k))
        .map(|k| format!("`{k}`"))
        .collect()
}

fn read(p: &Path) -> Result<String> {
    std::fs::read_to_string(p).map_err(|e| Error::io(p, e))
}

/// A progress bar on stderr.
pub fn bar(len: u64, what: &str) -> ProgressBar {
    let b = ProgressBar::new(len);
    b.set_style(
        ProgressStyle::with_template("{msg:>24} [{bar:40}] {pos}/{len} ({elapsed})")
            .expect("static template")
            .progress_chars("=> "),
    );
    b.set_message(what.to_string());
    b
}

/// Prints batch progress as one updating line.
pub fn batch_progress(label: String) -> impl FnMut(Progress) {
    let line = ProgressBar::new_spinner();
    line.set_message(label.clone());
    move |p| {
        let msg = match p {
            Progress::Z {
                request,
                of,
                step,
                loss,
            } => format!("z {}/{of}: step {step}, loss {loss:.4}", request + 1),
            Progress::Round {
                round,
                edited,
                residuals,
            } => {
                let mean = residuals.iter().sum::<f32>() / residuals.len().max(1) as f32;
                format!("round {round}: {edited} to edit, mean ‖z − h‖ {mean:.1}")
            }
            Progress::Layer {
                round,
                layer,
                n_selected,
            } => format!("round {round}: layer {layer} ({n_selected} neurons)"),
            Progress::PastKeys => "updating P".to_string(),
        };
        line.set_message(format!("{label}: {msg}"));
        line.tick();
    }
}
