//! Edit requests (spec §2.1): a prompt with `{}` where the subject goes, the subject, the new
//! target and optionally the true one.

use serde::{Deserialize, Serialize};

use crate::{Error, Result};

/// One fact to write into the model.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct EditRequest {
    /// Dataset case id, when the request comes from a dataset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub case_id: Option<u64>,
    /// The prompt with exactly one `{}` where the subject goes, e.g. `"The mother tongue of {} is"`.
    pub prompt: String,
    /// The subject, e.g. `"Danielle Darrieux"`.
    pub subject: String,
    /// The object to write in, without a leading space, e.g. `"English"`.
    pub target_new: String,
    /// The current object, for evaluation only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target_true: Option<String>,
}

impl EditRequest {
    /// A request from a prompt in which the subject is written out (the form users type):
    /// the subject's single occurrence becomes `{}`. A prompt that already holds `{}` is taken
    /// as a template.
    ///
    /// # Errors
    /// The subject does not occur in the prompt, or occurs more than once; see also
    /// [`EditRequest::validate`].
    pub fn from_sentence(
        prompt: &str,
        subject: &str,
        target_new: &str,
        target_true: Option<&str>,
    ) -> Result<Self> {
        let template = if prompt.contains("{}") {
            prompt.to_string()
        } else {
            let subject_trimmed = subject.trim();
            if subject_trimmed.is_empty() {
                return Err(Error::input(
                    "the subject is empty; type the entity the fact is about",
                ));
            }
            match prompt.matches(subject_trimmed).count() {
                0 => {
                    return Err(Error::refused(
                        "SubjectNotFound",
                        format!(
                            "the subject {subject_trimmed:?} does not occur in the prompt {prompt:?}; \
                         write the prompt so that it contains the subject exactly as typed"
                        ),
                    ));
                }
                1 => prompt.replacen(subject_trimmed, "{}", 1),
                n => {
                    return Err(Error::refused(
                        "SubjectNotFound",
                        format!(
                            "the subject {subject_trimmed:?} occurs {n} times in the prompt {prompt:?}; \
                         it must occur once (or write the prompt with {{}} where the subject goes)"
                        ),
                    ));
                }
            }
        };
        let r = EditRequest {
            case_id: None,
            prompt: template,
            subject: subject.trim().to_string(),
            target_new: target_new.trim().to_string(),
            target_true: target_true
                .map(|t| t.trim().to_string())
                .filter(|t| !t.is_empty()),
        };
        r.validate()?;
        Ok(r)
    }

    /// Checks the request's shape (the tokenizer-level checks happen when it is encoded).
    ///
    /// # Errors
    /// A prompt without exactly one `{}`, an empty subject or an empty target.
    pub fn validate(&self) -> Result<()> {
        let who = self
            .case_id
            .map_or(String::new(), |c| format!("case {c}: "));
        let holes = self.prompt.matches("{}").count();
        if holes != 1 {
            return Err(Error::input(format!(
                "{who}the prompt {:?} has {holes} `{{}}` placeholders; it needs exactly one, where the subject goes",
                self.prompt
            )));
        }
        if self.subject.trim().is_empty() {
            return Err(Error::input(format!(
                "{who}the subject is empty; type the entity the fact is about"
            )));
        }
        if self.target_new.trim().is_empty() {
            return Err(Error::input(format!(
                "{who}the new target is empty; type the object to write in"
            )));
        }
        Ok(())
    }

    /// Whether `other` edits the same prompt and subject: two such requests in one batch would
    /// count twice in the least-squares system, so a batch may hold only one of them.
    pub fn edits_same(&self, other: &EditRequest) -> bool {
        self.prompt == other.prompt && self.subject == other.subject
    }

    /// The prompt with the subject filled in.
    pub fn sentence(&self) -> String {
        self.prompt.replacen("{}", &self.subject, 1)
    }

    /// A short label for progress output and error messages.
    pub fn label(&self) -> String {
        format!("{} → {}", self.sentence(), self.target_new)
    }
}
