//! Checks edit requests before any work: every reason a request (or a whole request file) cannot
//! be edited, found in seconds with the tokenizer alone, so that a long run never stops at
//! record 734 and a batch never fails half-way through.
//!
//! A request is checked on exactly the prompts the editor builds: the rewriting prompts of the
//! z problem (every template, the target's tokens but the last appended), the key prompts and
//! the KL prompt. The checks are:
//! - the request's shape ([`EditRequest::validate`]);
//! - the target tokenises to at least one token ([`target_ids`]);
//! - the subject's last token can be located in every prompt ([`locate_subject`]);
//! - every prompt fits the model's context, and each rewriting prompt holds its target;
//! - for a file: the schema of every record, the evaluation probes (paraphrase and
//!   neighbourhood prompts with their answers) fit the context, and no batch edits the same
//!   prompt and subject twice.

use super::dataset::{Case, Probes};
use super::hparams::TargetSpace;
use super::request::EditRequest;
use super::subject::locate_subject;
use super::target::{KL_PROMPT, target_ids};
use super::templates::{ContextTemplates, rewriting_prompts};
use crate::model::Tokenizer;
use crate::{Error, Result};

/// What requests are checked against: the tokenizer, the templates and the model's context.
#[derive(Clone, Copy, Debug)]
pub struct CheckSpec<'a> {
    pub tok: &'a Tokenizer,
    pub templates: &'a ContextTemplates,
    /// How the target is tokenised ([`crate::edit::Hparams::target_space`]).
    pub target_space: TargetSpace,
    /// The model's context in tokens.
    pub max_ctx: usize,
}

impl CheckSpec<'_> {
    /// Every reason `r` cannot be edited (empty when it can).
    pub fn request_problems(&self, r: &EditRequest) -> Vec<String> {
        self.inspect_request(r).0
    }

    /// [`CheckSpec::request_problems`], and the length in tokens of the longest prompt built.
    fn inspect_request(&self, r: &EditRequest) -> (Vec<String>, usize) {
        // The report names the record and its case_id; the message need not repeat them.
        let unnamed = EditRequest {
            case_id: None,
            ..r.clone()
        };
        if let Err(e) = unnamed.validate() {
            return (vec![e.to_string()], 0);
        }
        let mut problems = vec![];
        let target = match target_ids(self.tok, r, self.target_space) {
            Ok(t) => Some(t),
            Err(e) => {
                problems.push(e.to_string());
                None
            }
        };
        let suffix = match &target {
            Some(t) => match self.tok.decode(&t[..t.len() - 1]) {
                Ok(s) => s,
                Err(e) => return (vec![e.to_string()], 0),
            },
            None => String::new(),
        };
        // The key prompts first (the plain sentence leads, so a message quotes it), then the
        // rewriting prompts with the target appended, then the KL prompt.
        let keys = rewriting_prompts(self.templates, r, "");
        let rewriting = rewriting_prompts(self.templates, r, &suffix);
        let n_keys = keys.len();
        let prompts = keys.into_iter().chain(rewriting).chain([KL_PROMPT.into()]);
        let mut longest = 0;
        for (i, template) in prompts.enumerate() {
            let located = match locate_subject(self.tok, &template, &r.subject) {
                Ok(l) => l,
                Err(e) => {
                    // Every prompt places the subject the same way: one message is enough.
                    problems.push(e.to_string());
                    break;
                }
            };
            let n = located.ids.len();
            longest = longest.max(n);
            if n > self.max_ctx {
                problems.push(format!(
                    "the prompt {:?} has {n} tokens, more than the model's context of {}; \
                     shorten the prompt or the target",
                    located.text, self.max_ctx
                ));
                break;
            }
            let is_rewriting = (n_keys..2 * n_keys).contains(&i);
            if let Some(t) = &target
                && is_rewriting
                && n < t.len()
            {
                problems.push(format!(
                    "the rewriting prompt {:?} has {n} tokens, fewer than its target's {}",
                    located.text,
                    t.len()
                ));
                break;
            }
        }
        (problems, longest)
    }

    /// Checks one request.
    ///
    /// # Errors
    /// The first of [`CheckSpec::request_problems`].
    pub fn check_request(&self, r: &EditRequest) -> Result<()> {
        match self.request_problems(r).into_iter().next() {
            None => Ok(()),
            Some(p) => Err(Error::input(p)),
        }
    }

    /// Checks a batch before it is applied: every request, and no two editing the same prompt
    /// and subject.
    ///
    /// # Errors
    /// An empty batch, or one error listing every request that cannot be edited, with its
    /// position and reason.
    pub fn check_batch(&self, requests: &[EditRequest]) -> Result<()> {
        if requests.is_empty() {
            return Err(Error::input(
                "the batch is empty; give at least one request",
            ));
        }
        let cases: Vec<_> = requests
            .iter()
            .map(|r| {
                Ok(Case {
                    request: r.clone(),
                    probes: Probes::None,
                })
            })
            .collect();
        let report = self.check_all(&cases, Some(requests.len()), false, "request");
        report.into_result()
    }

    /// Whether the evaluation probes of `case` can be scored: each prompt with its answer fits
    /// the context, and each answer tokenises to at least one token.
    pub fn probe_problems(&self, case: &Case) -> Vec<String> {
        self.inspect_probes(case).0
    }

    /// [`CheckSpec::probe_problems`], and the length in tokens of the longest probe.
    fn inspect_probes(&self, case: &Case) -> (Vec<String>, usize) {
        let r = &case.request;
        let mut pairs: Vec<(&str, &str)> = vec![];
        let sentence = r.sentence();
        match &case.probes {
            Probes::CounterFact {
                paraphrase,
                neighborhood,
            } => {
                for p in paraphrase.iter().chain(neighborhood) {
                    pairs.push((p, &r.target_new));
                    if let Some(t) = &r.target_true {
                        pairs.push((p, t));
                    }
                }
            }
            Probes::Zsre {
                paraphrase,
                loc,
                loc_ans,
            } => {
                pairs.extend(
                    paraphrase
                        .iter()
                        .map(|p| (p.as_str(), r.target_new.as_str())),
                );
                pairs.push((loc, loc_ans));
            }
            Probes::None => {}
        }
        pairs.push((&sentence, &r.target_new));
        let mut problems = vec![];
        let mut longest = 0;
        for (prompt, answer) in pairs {
            let answer_ids = self.tok.encode(&format!(" {answer}"));
            let full = self.tok.encode(&format!("{prompt} {answer}"));
            longest = longest.max(full.as_ref().map_or(0, Vec::len));
            match (answer_ids, full) {
                (Err(e), _) | (_, Err(e)) => problems.push(e.to_string()),
                (Ok(a), _) if a.len() <= usize::from(self.tok.add_bos()) => problems.push(format!(
                    "the answer {answer:?} to the probe {prompt:?} encodes to no token"
                )),
                (_, Ok(f)) if f.len() > self.max_ctx => problems.push(format!(
                    "the probe {prompt:?} with its answer has {} tokens, more than the model's \
                     context of {}",
                    f.len(),
                    self.max_ctx
                )),
                _ => continue,
            }
        }
        (problems, longest)
    }

    /// Checks the records of a file (`Err` holds a record's schema problem), in batches of
    /// `batch` consecutive records when given (duplicates are checked within each batch);
    /// `with_probes` also checks the evaluation probes.
    pub fn check_records(
        &self,
        records: &[std::result::Result<Case, String>],
        batch: Option<usize>,
        with_probes: bool,
    ) -> CheckReport {
        self.check_all(records, batch, with_probes, "record")
    }

    /// [`CheckSpec::check_records`], calling each item `noun` in messages.
    fn check_all(
        &self,
        records: &[std::result::Result<Case, String>],
        batch: Option<usize>,
        with_probes: bool,
        noun: &'static str,
    ) -> CheckReport {
        let mut problems = vec![];
        let mut longest_prompt = 0;
        for (i, record) in records.iter().enumerate() {
            let case = match record {
                Ok(c) => c,
                Err(e) => {
                    problems.push(RecordProblem::new(i, None, e.clone()));
                    continue;
                }
            };
            let id = case.request.case_id;
            let (mut reasons, longest) = self.inspect_request(&case.request);
            longest_prompt = longest_prompt.max(longest);
            if with_probes {
                let (more, longest) = self.inspect_probes(case);
                reasons.extend(more);
                longest_prompt = longest_prompt.max(longest);
            }
            if let Some(b) = batch.filter(|&b| b > 0) {
                let start = i - i % b;
                let earlier = records[start..i].iter().enumerate().find(|(_, o)| {
                    o.as_ref()
                        .is_ok_and(|o| o.request.edits_same(&case.request))
                });
                if let Some((j, _)) = earlier {
                    reasons.push(format!(
                        "it edits the same prompt and subject ({:?}) as {noun} {} of the same \
                         batch of {b}; remove the duplicate or put it in another batch",
                        case.request.sentence(),
                        start + j
                    ));
                }
            }
            problems.extend(reasons.into_iter().map(|r| RecordProblem::new(i, id, r)));
        }
        CheckReport {
            noun,
            n_records: records.len(),
            batch,
            problems,
            longest_prompt,
        }
    }

    /// [`CheckSpec::check_records`] on cases that all parsed.
    pub fn check_cases(
        &self,
        cases: &[Case],
        batch: Option<usize>,
        with_probes: bool,
    ) -> CheckReport {
        let records: Vec<_> = cases.iter().cloned().map(Ok).collect();
        self.check_records(&records, batch, with_probes)
    }
}

/// One problem of one record.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RecordProblem {
    /// Position of the record in the file (0-based, as `record N` in every message).
    pub record: usize,
    /// The record's own `case_id`, when it has one that differs from its position.
    pub case_id: Option<u64>,
    pub reason: String,
}

impl RecordProblem {
    fn new(record: usize, case_id: Option<u64>, reason: String) -> Self {
        RecordProblem {
            record,
            case_id: case_id.filter(|&c| c != record as u64),
            reason,
        }
    }
}

/// What a check of many records found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CheckReport {
    /// What the items are called in messages: "record" (of a file) or "request" (of a batch).
    pub noun: &'static str,
    pub n_records: usize,
    /// The batch size duplicates were checked with (`None`: not checked).
    pub batch: Option<usize>,
    /// Every problem, record by record in file order (a record may have several).
    pub problems: Vec<RecordProblem>,
    /// Tokens of the longest prompt built from the records (0 when none was tokenised).
    pub longest_prompt: usize,
}

impl CheckReport {
    /// The schema problems of `records` alone, for when no tokenizer is at hand.
    pub fn schema(records: &[std::result::Result<Case, String>], batch: Option<usize>) -> Self {
        CheckReport {
            noun: "record",
            n_records: records.len(),
            batch,
            problems: records
                .iter()
                .enumerate()
                .filter_map(|(i, r)| {
                    r.as_ref()
                        .err()
                        .map(|e| RecordProblem::new(i, None, e.clone()))
                })
                .collect(),
            longest_prompt: 0,
        }
    }

    /// True when every record can be edited.
    pub fn is_ok(&self) -> bool {
        self.problems.is_empty()
    }

    /// Number of records with at least one problem.
    pub fn n_bad(&self) -> usize {
        let mut records: Vec<usize> = self.problems.iter().map(|p| p.record).collect();
        records.dedup();
        records.len()
    }

    /// One line per problem: `record 17 (case_id 123): reason`.
    pub fn lines(&self) -> Vec<String> {
        let noun = self.noun;
        self.problems
            .iter()
            .map(|p| match p.case_id {
                Some(c) => format!("{noun} {} (case_id {c}): {}", p.record, p.reason),
                None => format!("{noun} {}: {}", p.record, p.reason),
            })
            .collect()
    }

    /// `Ok` when every record can be edited, else one error listing every problem:
    /// "3 of 1000 records cannot be edited:" then one line per problem.
    ///
    /// # Errors
    /// Any problem.
    pub fn into_result(self) -> Result<()> {
        if self.is_ok() {
            return Ok(());
        }
        Err(Error::input(format!(
            "{} of {} {}s cannot be edited:\n  {}",
            self.n_bad(),
            self.n_records,
            self.noun,
            self.lines().join("\n  ")
        )))
    }
}
