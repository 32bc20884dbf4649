//! Context templates (spec §2.4) and the prompts built from them.
//!
//! Templates come in groups: `[["{}"], [t_1 … t_5]]`. Keys are averaged within each group, then
//! across groups, so the bare prompt weighs ½ and each generated prefix 1/10.

use serde_json::Value;
use tokenizers::normalizers::unicode::NFKD;
use tokenizers::{NormalizedString, Normalizer};

use super::request::EditRequest;
use crate::backend::Backend;
use crate::model::{Model, Sampling, Tokenizer, generate};
use crate::{Error, Result};

/// The prompts the reference samples templates from.
pub const SEED_PROMPTS: [&str; 5] = ["The", "Therefore", "Because", "I", "You"];
/// Total length of a sampled template, prompt tokens included.
pub const TEMPLATE_TOKENS: usize = 10;
/// Top-k of the template sampler.
pub const TEMPLATE_TOP_K: usize = 5;

/// Groups of templates, each with exactly one `{}` where the request's prompt goes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ContextTemplates {
    pub groups: Vec<Vec<String>>,
}

impl ContextTemplates {
    /// Templates from explicit groups.
    ///
    /// # Errors
    /// No group, an empty group, or a template without exactly one `{}`.
    pub fn new(groups: Vec<Vec<String>>) -> Result<Self> {
        if groups.is_empty() || groups.iter().any(Vec::is_empty) {
            return Err(Error::input(
                "context templates need at least one non-empty group",
            ));
        }
        if let Some(bad) = groups
            .iter()
            .flatten()
            .find(|t| t.matches("{}").count() != 1)
        {
            return Err(Error::input(format!(
                "context template {bad:?} must contain exactly one `{{}}`"
            )));
        }
        Ok(ContextTemplates { groups })
    }

    /// Parses a templates file: a bare `[[...], [...]]`, or an object with `templates` or
    /// `context_templates` (as in the golden `smollm2-config.json` and `micro-3.json`).
    pub fn parse(text: &str, path: &str) -> Result<Self> {
        let doc: Value = serde_json::from_str(text).map_err(|e| Error::Json {
            path: path.into(),
            msg: e.to_string(),
        })?;
        let v = match &doc {
            Value::Array(_) => &doc,
            Value::Object(o) => o
                .get("context_templates")
                .map(|c| c.get("templates").unwrap_or(c))
                .or_else(|| o.get("templates"))
                .ok_or_else(|| Error::Json {
                    path: path.into(),
                    msg: "no `templates` or `context_templates` field".into(),
                })?,
            _ => {
                return Err(Error::Json {
                    path: path.into(),
                    msg: "expected an array of template groups".into(),
                });
            }
        };
        let groups: Vec<Vec<String>> =
            serde_json::from_value(v.clone()).map_err(|e| Error::Json {
                path: path.into(),
                msg: format!("templates must be a list of lists of strings: {e}"),
            })?;
        ContextTemplates::new(groups).map_err(|e| Error::Json {
            path: path.into(),
            msg: e.to_string(),
        })
    }

    /// Samples `[["{}"], [5 prefixes]]` from `model` (which must be the unedited model) as the
    /// reference does: one top-k (k = 5) sample per seed prompt, 10 tokens in total, then
    /// NFKD, `"\n\n"` → `" "`, `<|endoftext|>` removed, braces replaced by spaces, `". {}"` appended.
    pub async fn sample<B: Backend>(model: &Model<B>, tok: &Tokenizer, seed: u64) -> Result<Self> {
        let mut group = Vec::with_capacity(SEED_PROMPTS.len());
        for (i, prompt) in SEED_PROMPTS.iter().enumerate() {
            let ids = tok.encode(prompt)?;
            let new_tokens = TEMPLATE_TOKENS.saturating_sub(ids.len());
            let sampling = Sampling::TopK {
                k: TEMPLATE_TOP_K,
                seed: seed.wrapping_mul(1000).wrapping_add(i as u64),
            };
            let out = generate(model, &ids, new_tokens, sampling, |_| {}).await?;
            let mut all = ids;
            all.extend(out.ids);
            group.push(postprocess(&tok.decode(&all)?)?);
        }
        ContextTemplates::new(vec![vec!["{}".into()], group])
    }

    /// All templates, group after group.
    pub fn flat(&self) -> impl Iterator<Item = &String> {
        self.groups.iter().flatten()
    }

    /// Number of templates.
    pub fn len(&self) -> usize {
        self.groups.iter().map(Vec::len).sum()
    }

    /// True when there is no template (never, for a constructed value).
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Per-template weights of the key average: `1 / (n_groups · group_len)`.
    pub fn weights(&self) -> Vec<f32> {
        let g = self.groups.len() as f32;
        self.groups
            .iter()
            .flat_map(|grp| std::iter::repeat_n(1.0 / (g * grp.len() as f32), grp.len()))
            .collect()
    }
}

/// The reference's post-processing of a sampled text into a template.
fn postprocess(text: &str) -> Result<String> {
    let mut n = NormalizedString::from(text);
    NFKD.normalize(&mut n)
        .map_err(|e| Error::input(format!("normalising a template: {e}")))?;
    let t = n
        .get()
        .replace("\n\n", " ")
        .replace("<|endoftext|>", "")
        .replace(['{', '}'], " ");
    Ok(format!("{t}. {{}}"))
}

/// A request's prompt placed into a template: still one `{}`, where the subject goes.
pub fn apply(template: &str, request: &EditRequest) -> String {
    template.replacen("{}", &request.prompt, 1)
}

/// The rewriting prompts of the z problem (spec §4.2): the request's prompt in every template,
/// followed by `suffix` (the text of the target's tokens but the last; empty for key prompts).
pub fn rewriting_prompts(
    templates: &ContextTemplates,
    request: &EditRequest,
    suffix: &str,
) -> Vec<String> {
    templates
        .flat()
        .map(|tpl| apply(tpl, request) + suffix)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn weights_are_half_and_tenth() {
        let t = ContextTemplates::new(vec![
            vec!["{}".into()],
            (0..5).map(|i| format!("T{i}. {{}}")).collect(),
        ])
        .unwrap();
        assert_eq!(t.weights(), [0.5, 0.1, 0.1, 0.1, 0.1, 0.1]);
    }

    #[test]
    fn postprocess_matches_the_reference_rules() {
        assert_eq!(
            postprocess("Because {x}\n\nis<|endoftext|>").unwrap(),
            "Because  x  is. {}"
        );
        assert_eq!(postprocess("ﬁne").unwrap(), "fine. {}"); // NFKD folds the ligature
    }
}
