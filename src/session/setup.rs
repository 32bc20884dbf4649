//! Everything an edit needs besides the model and its [`crate::edit::EditState`]: the
//! hyperparameters, the context templates, the covariance statistic, the method objects, and the
//! front end's record of each ledger entry.

use serde::{Deserialize, Serialize};

use crate::edit::check::CheckSpec;
use crate::edit::{
    AlphaEdit, ContextTemplates, CovarianceSet, EditMethod, Hparams, Memit, MemitSeq, MethodKind,
    Nse,
};
use crate::model::Tokenizer;
use crate::{Error, Result};

/// Everything editing needs besides the model and its edit state.
pub struct EditSetup {
    pub hp: Hparams,
    /// `None` until sampled from the unedited model (when the hyperparameters fix none), see
    /// [`super::Session::ensure_templates`].
    pub templates: Option<ContextTemplates>,
    /// `None` until the front end provides it ([`EditSetup::set_cov`]).
    pub cov: Option<CovarianceSet>,
    /// AlphaEdit's null-space projectors, built from `cov` on first use.
    alphaedit: Option<AlphaEdit>,
    /// The record of each ledger entry, in ledger order.
    pub meta: Vec<EntryMeta>,
}

/// What a front end shows about one ledger entry beyond the [`crate::edit::LedgerEntry`] itself.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct EntryMeta {
    /// Seconds the batch took.
    pub seconds: f64,
    /// `‖z − h‖` of every request at the start of each round (the last is the exit check).
    pub residuals: Vec<Vec<f32>>,
    /// Rounds that updated weights.
    pub rounds_used: usize,
    /// Probes of each request (from its dataset case, or the compare panel).
    pub probes: Vec<RequestProbes>,
    /// `(P(new), P(true))` of each request on its edit prompt right after the batch (`None`
    /// without a true target).
    pub scores: Vec<Option<(f32, f32)>>,
    /// How the entry came to be, when not from a plain apply ("re-applied after removing …").
    #[serde(default)]
    pub note: String,
}

/// Paraphrase and neighbourhood prompts of one request.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct RequestProbes {
    pub paraphrase: Vec<String>,
    pub neighborhood: Vec<String>,
}

impl EditSetup {
    /// A setup with `hp`; templates (unless `hp` fixes them), covariance and projectors come later.
    ///
    /// # Errors
    /// Invalid fixed templates.
    pub fn new(hp: Hparams) -> Result<Self> {
        let templates = hp
            .context_templates
            .clone()
            .map(ContextTemplates::new)
            .transpose()?;
        Ok(EditSetup {
            hp,
            templates,
            cov: None,
            alphaedit: None,
            meta: vec![],
        })
    }

    /// Runs `f` with the library's request checks ([`CheckSpec`]) for this model, keeping
    /// `margin` tokens of the context free. Until the templates are sampled the bare prompt alone
    /// is checked: a template only adds text before the subject, so the subject's last token is
    /// placed the same way in it.
    pub fn with_check<T>(
        &self,
        tok: &Tokenizer,
        max_ctx: usize,
        margin: usize,
        f: impl FnOnce(&CheckSpec<'_>) -> T,
    ) -> T {
        let bare;
        let templates = match &self.templates {
            Some(t) => t,
            None => {
                bare = ContextTemplates::new(vec![vec!["{}".into()]]).expect("one template");
                &bare
            }
        };
        f(&CheckSpec {
            tok,
            templates,
            target_space: self.hp.target_space,
            max_ctx: max_ctx.saturating_sub(margin),
        })
    }

    /// Uses `cov` from now on (AlphaEdit's projectors, built from the previous one, are dropped).
    pub fn set_cov(&mut self, cov: CovarianceSet) {
        self.cov = Some(cov);
        self.alphaedit = None;
    }

    /// Gets `kind` ready: AlphaEdit builds its projectors (an eigendecomposition per layer) unless
    /// built already; the other methods need nothing.
    ///
    /// # Errors
    /// AlphaEdit without a covariance yet, or a failed decomposition.
    pub fn prepare_method(&mut self, kind: MethodKind, d_ff: usize) -> Result<()> {
        if kind == MethodKind::Alphaedit && self.alphaedit.is_none() {
            let cov = self
                .cov
                .as_ref()
                .ok_or_else(|| Error::input("AlphaEdit needs the covariance statistic first"))?;
            self.alphaedit = Some(AlphaEdit::new(cov.matrices(), d_ff, &self.hp)?);
        }
        Ok(())
    }

    /// The method object.
    ///
    /// # Errors
    /// AlphaEdit before [`EditSetup::prepare_method`].
    pub fn method(&self, kind: MethodKind) -> Result<&dyn EditMethod> {
        Ok(match kind {
            MethodKind::Nse => &Nse,
            MethodKind::MemitSeq => &MemitSeq,
            MethodKind::Memit => &Memit,
            MethodKind::Alphaedit => self.alphaedit.as_ref().ok_or_else(|| {
                Error::input("AlphaEdit's projectors are not built: prepare the method first")
            })?,
        })
    }

    /// The templates.
    ///
    /// # Errors
    /// Not sampled yet.
    pub fn templates(&self) -> Result<&ContextTemplates> {
        self.templates
            .as_ref()
            .ok_or_else(|| Error::input("the context templates are not sampled yet"))
    }

    /// The covariance statistic.
    ///
    /// # Errors
    /// None provided yet.
    pub fn cov(&self) -> Result<&CovarianceSet> {
        self.cov
            .as_ref()
            .ok_or_else(|| Error::input("no covariance statistic yet: compute or load one first"))
    }
}
