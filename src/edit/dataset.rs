//! Reading edit cases from CounterFact (ROME schema and the reduced EasyEdit schema), zsRE, and
//! plain request lists.
//!
//! Each record becomes an [`EditRequest`] plus the probes the evaluation needs. The schema is
//! recognised per record from its fields:
//! - ROME CounterFact: `requested_rewrite {prompt, subject, target_new{str}, target_true{str}}`,
//!   `paraphrase_prompts`, `neighborhood_prompts`;
//! - EasyEdit CounterFact: `prompt` (subject filled in), `subject`, `target_new`, `ground_truth`,
//!   `rephrase_prompt`, `locality_prompt`;
//! - zsRE: `subject`, `src`, `answers`, `rephrase`, `loc`, `loc_ans`. As in the reference (spec
//!   §2.3), the request writes in `answers[0]` and `target_true` is unused;
//! - a plain request: `prompt` (with `{}` or the subject), `subject`, `target_new`, optional
//!   `target_true`.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::request::EditRequest;
use crate::{Error, Result};

/// What the evaluation probes for one case.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Probes {
    /// CounterFact: paraphrases (success = new beats true) and neighbourhood prompts about other
    /// subjects whose answer is the true target (success = true beats new).
    CounterFact {
        paraphrase: Vec<String>,
        neighborhood: Vec<String>,
    },
    /// zsRE: a paraphrased question, and an unrelated NQ question with its answer that must
    /// survive the edit.
    Zsre {
        paraphrase: Vec<String>,
        loc: String,
        loc_ans: String,
    },
    /// A bare request without probes.
    None,
}

/// One case of a dataset.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Case {
    pub request: EditRequest,
    pub probes: Probes,
}

/// Parses a JSON array of records (any of the supported schemas, mixed freely).
///
/// # Errors
/// Malformed JSON, an empty array, or records missing a field: the message names the file and
/// every bad record with its index and field (see [`parse_records`] for the records one by one).
pub fn parse_cases(text: &str, path: &str) -> Result<Vec<Case>> {
    let records = parse_records(text, path)?;
    let n = records.len();
    let bad: Vec<String> = records
        .iter()
        .enumerate()
        .filter_map(|(i, r)| r.as_ref().err().map(|e| format!("record {i}: {e}")))
        .collect();
    if !bad.is_empty() {
        let msg = match bad.as_slice() {
            [one] => one.clone(),
            _ => format!(
                "{} of {n} records are malformed: {}",
                bad.len(),
                bad.join("; ")
            ),
        };
        return Err(Error::Json {
            path: path.into(),
            msg,
        });
    }
    Ok(records.into_iter().flatten().collect())
}

/// Parses a JSON array of records, each on its own: one entry per record, in file order, with
/// the record's case or what is wrong with it (without the record number).
///
/// # Errors
/// Only problems of the whole document: malformed JSON, not an array, no record.
pub fn parse_records(text: &str, path: &str) -> Result<Vec<std::result::Result<Case, String>>> {
    let doc: Value = serde_json::from_str(text).map_err(|e| Error::Json {
        path: path.into(),
        msg: format!("not valid JSON: {e}"),
    })?;
    let records = match &doc {
        Value::Array(a) => a.as_slice(),
        Value::Object(o) if o.get("requests").is_some_and(Value::is_array) => o["requests"]
            .as_array()
            .map(Vec::as_slice)
            .unwrap_or_default(),
        _ => {
            return Err(Error::Json {
                path: path.into(),
                msg: "expected a JSON array of records (CounterFact, zsRE or {prompt, subject, target_new})".into(),
            });
        }
    };
    if records.is_empty() {
        return Err(Error::Json {
            path: path.into(),
            msg: "the dataset holds no records".into(),
        });
    }
    Ok(records
        .iter()
        .enumerate()
        .map(|(i, r)| parse_record(r, i))
        .collect())
}

/// Reads and parses a dataset file (native only).
#[cfg(not(target_arch = "wasm32"))]
pub fn load_cases(path: &std::path::Path) -> Result<Vec<Case>> {
    let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
    parse_cases(&text, &path.display().to_string())
}

struct Rec<'a> {
    v: &'a Value,
    index: usize,
}

impl Rec<'_> {
    fn str_at(&self, v: &Value, field: &str) -> Field<String> {
        match v.get(field) {
            Some(Value::String(s)) => Ok(s.clone()),
            Some(other) => Err(format!("field `{field}` should be a string, found {other}")),
            None => Err(format!("missing field `{field}`")),
        }
    }

    fn str(&self, field: &str) -> Field<String> {
        self.str_at(self.v, field)
    }

    /// A string field, or the `str` of an object field (`target_new: {str, id}`).
    fn str_or_obj(&self, v: &Value, field: &str) -> Field<String> {
        match v.get(field) {
            Some(Value::Object(o)) => self.str_at(&Value::Object(o.clone()), "str"),
            _ => self.str_at(v, field),
        }
    }

    fn strings(&self, field: &str) -> Field<Vec<String>> {
        match self.v.get(field) {
            Some(Value::Array(a)) => a
                .iter()
                .map(|x| {
                    x.as_str()
                        .map(str::to_string)
                        .ok_or_else(|| format!("`{field}` must hold strings"))
                })
                .collect(),
            Some(Value::String(s)) => Ok(vec![s.clone()]),
            Some(other) => Err(format!(
                "field `{field}` should be a list of strings, found {other}"
            )),
            None => Err(format!("missing field `{field}`")),
        }
    }

    fn case_id(&self) -> Option<u64> {
        self.v.get("case_id").and_then(Value::as_u64)
    }

    fn request(
        &self,
        prompt: &str,
        subject: &str,
        new: &str,
        true_: Option<&str>,
    ) -> Field<EditRequest> {
        let mut r =
            EditRequest::from_sentence(prompt, subject, new, true_).map_err(|e| e.to_string())?;
        r.case_id = self.case_id().or(Some(self.index as u64));
        Ok(r)
    }
}

/// A record's field, or what is wrong with it.
type Field<T> = std::result::Result<T, String>;

fn parse_record(v: &Value, index: usize) -> Field<Case> {
    let rec = Rec { v, index };
    if !v.is_object() {
        return Err("expected a JSON object".into());
    }
    if let Some(rw) = v.get("requested_rewrite") {
        // ROME / MEMIT CounterFact.
        let prompt = rec.str_at(rw, "prompt")?;
        let subject = rec.str_at(rw, "subject")?;
        let new = rec.str_or_obj(rw, "target_new")?;
        let true_ = rec.str_or_obj(rw, "target_true")?;
        let request = rec.request(&prompt, &subject, &new, Some(&true_))?;
        let probes = Probes::CounterFact {
            paraphrase: rec.strings("paraphrase_prompts")?,
            neighborhood: rec.strings("neighborhood_prompts")?,
        };
        Ok(Case { request, probes })
    } else if v.get("src").is_some() || v.get("answers").is_some() {
        // zsRE (MEND / ROME layout).
        let subject = rec.str("subject")?;
        let src = rec.str("src")?;
        let answers = rec.strings("answers")?;
        let new = answers
            .first()
            .ok_or_else(|| "`answers` is empty".to_string())?;
        let request = rec.request(&src, &subject, new, None)?;
        let probes = Probes::Zsre {
            paraphrase: rec.strings("rephrase")?,
            loc: rec.str("loc")?,
            loc_ans: rec.str("loc_ans")?,
        };
        Ok(Case { request, probes })
    } else if v.get("ground_truth").is_some() || v.get("rephrase_prompt").is_some() {
        // EasyEdit's reduced CounterFact: the subject is already in the prompt.
        let request = rec.request(
            &rec.str("prompt")?,
            &rec.str("subject")?,
            &rec.str("target_new")?,
            Some(&rec.str("ground_truth")?),
        )?;
        let probes = Probes::CounterFact {
            paraphrase: rec.strings("rephrase_prompt")?,
            neighborhood: rec.strings("locality_prompt")?,
        };
        Ok(Case { request, probes })
    } else {
        let true_ = match v.get("target_true") {
            None | Some(Value::Null) => None,
            Some(_) => Some(rec.str_or_obj(v, "target_true")?),
        };
        let request = rec.request(
            &rec.str("prompt")?,
            &rec.str("subject")?,
            &rec.str_or_obj(v, "target_new")?,
            true_.as_deref(),
        )?;
        Ok(Case {
            request,
            probes: Probes::None,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_all_schemas() {
        let text = r#"[
          {"case_id": 7, "requested_rewrite": {"prompt": "The mother tongue of {} is", "subject": "Danielle Darrieux",
            "target_new": {"str": "English", "id": "Q1860"}, "target_true": {"str": "French", "id": "Q150"}},
           "paraphrase_prompts": ["a", "b"], "neighborhood_prompts": ["c"]},
          {"case_id": 0, "prompt": "The mother tongue of Danielle Darrieux is", "target_new": "English", "subject": "Danielle Darrieux",
           "ground_truth": "French", "rephrase_prompt": "r", "locality_prompt": "l", "locality_ground_truth": "French"},
          {"subject": "UniFirst", "src": "What is the product made by UniFirst?", "answers": ["uniform"], "alt": "x",
           "rephrase": "What will be the product of UniFirst?", "loc": "nq question: q", "loc_ans": "Walter"},
          {"prompt": "The Eiffel Tower is located in the city of", "subject": "Eiffel Tower", "target_new": "Rome"}
        ]"#;
        let cases = parse_cases(text, "t.json").unwrap();
        assert_eq!(cases[0].request.prompt, "The mother tongue of {} is");
        assert_eq!(cases[0].request.case_id, Some(7));
        assert_eq!(cases[1].request, cases[0].request.clone().with_case(0));
        assert_eq!(cases[2].request.prompt, "What is the product made by {}?");
        assert_eq!(cases[2].request.target_new, "uniform");
        assert_eq!(cases[3].request.prompt, "The {} is located in the city of");
        assert_eq!(cases[3].request.case_id, Some(3));
        assert!(matches!(cases[3].probes, Probes::None));
    }

    impl EditRequest {
        fn with_case(mut self, c: u64) -> Self {
            self.case_id = Some(c);
            self
        }
    }

    #[test]
    fn bad_records_name_the_problem() {
        let err = parse_cases("[]", "e.json").unwrap_err().to_string();
        assert!(err.contains("no records"), "{err}");
        let err = parse_cases(r#"[{"prompt": "x {}", "subject": "s"}]"#, "e.json")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("record 0") && err.contains("target_new"),
            "{err}"
        );
        let err = parse_cases(
            r#"[{"prompt": "Paris is nice", "subject": "Rome", "target_new": "x"}]"#,
            "e.json",
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("does not occur"), "{err}");
        let err = parse_cases("{", "e.json").unwrap_err().to_string();
        assert!(err.contains("not valid JSON"), "{err}");
    }

    #[test]
    fn every_malformed_record_is_listed() {
        let text = r#"[{"prompt": "x {}", "subject": "s", "target_new": "t"}, {"prompt": "x {}"},
                       3, {"prompt": "{} y", "subject": "s", "target_new": "u"}]"#;
        let err = parse_cases(text, "e.json").unwrap_err().to_string();
        assert_eq!(
            err,
            "e.json: 2 of 4 records are malformed: record 1: missing field `subject`; \
             record 2: expected a JSON object"
        );
        let records = parse_records(text, "e.json").unwrap();
        assert_eq!(records.len(), 4);
        assert_eq!(records[3].as_ref().unwrap().request.prompt, "{} y");
        assert_eq!(records[3].as_ref().unwrap().request.case_id, Some(3));
        assert_eq!(records[2], Err("expected a JSON object".to_string()));
    }
}
