//! The subject's last token (spec §3.1), located and checked.
//!
//! The index is `len(encode(prefix + subject)) − 1`, taken in the tokens of the full sentence.
//! That is right when the tokens of `prefix + subject` are a prefix of the sentence's tokens. BPE
//! can instead merge the subject's last characters with the text after it:
//! - with a letter or digit — a subject cut mid-word ("Washingto" in "I live in Washington"), or
//!   CJK, which has no spaces ("大数" in "大数据", where "数据" is one token) — the index points past
//!   the sentence or at a token that joins the subject to another word. [`locate_subject`]
//!   refuses these with an error naming the subject and the split it found;
//! - with punctuation alone ("F.C." + "," → `".,"`, "(SS-381)" + "?" → `")?"`: 6 of the 1,000
//!   zsRE records and 13 of the 10,000 CounterFact records in `shared/data`), the token still
//!   ends the subject and adds no word: it is accepted at the reference's index, so those
//!   records edit as in the reference.
//!
//! Every caller (keys, the z problem, the request checks, the page's form) goes through
//! [`locate_subject`].

use crate::model::Tokenizer;
use crate::{Error, Result};

/// A template with its subject placed, tokenised, and the subject's last token located.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SubjectTokens {
    /// The full text: the template with the subject in place of `{}`.
    pub text: String,
    /// Tokens of `text` (with the BOS when the tokenizer adds one).
    pub ids: Vec<u32>,
    /// Index into `ids` of the token that ends the subject.
    pub last: usize,
}

/// Places `subject` into `template` (at its first `{}`), tokenises the result and locates the
/// subject's last token.
///
/// # Errors
/// A template without `{}`; a subject that encodes to no token; a subject whose end falls inside
/// a token of the full text that also holds a letter or digit after it (the message names that
/// token and the split, and says how to fix the request).
pub fn locate_subject(tok: &Tokenizer, template: &str, subject: &str) -> Result<SubjectTokens> {
    let at = template
        .find("{}")
        .ok_or_else(|| Error::input(format!("{template:?} has no `{{}}`")))?;
    let upto = format!("{}{subject}", &template[..at]);
    let text = template.replacen("{}", subject, 1);
    let head = tok.encode(&upto)?;
    let ids = tok.encode(&text)?;
    if head.len() <= usize::from(starts_with_bos(tok, &head)) {
        return Err(Error::input(format!(
            "the subject {subject:?} encodes to no token; type the entity the fact is about"
        )));
    }
    if !ids.starts_with(&head) && !ends_in_punctuation(tok, &text, &upto, &head, &ids) {
        return Err(straddle_error(tok, subject, &text, upto.len(), &head, &ids));
    }
    Ok(SubjectTokens {
        last: head.len() - 1,
        text,
        ids,
    })
}

/// The subject-last index of `subject` placed into `template` (see [`locate_subject`]).
///
/// # Errors
/// As [`locate_subject`].
pub fn subject_last_index(tok: &Tokenizer, template: &str, subject: &str) -> Result<usize> {
    locate_subject(tok, template, subject).map(|s| s.last)
}

/// Whether the sentence's tokens are those of `prefix + subject` except the last, which the
/// sentence extends with punctuation or spaces only (no letter or digit: no other word joins
/// the subject).
fn ends_in_punctuation(tok: &Tokenizer, text: &str, upto: &str, head: &[u32], ids: &[u32]) -> bool {
    let n = head.len();
    if ids.len() < n || ids[..n - 1] != head[..n - 1] {
        return false;
    }
    let bos = usize::from(starts_with_bos(tok, ids));
    let Ok(covered) = tok.decode(&ids[bos..n]) else {
        return false;
    };
    // `covered` must be the sentence's own text (no partial character shown as U+FFFD).
    text.starts_with(&covered)
        && covered.len() > upto.len()
        && covered.starts_with(upto)
        && !covered[upto.len()..].chars().any(char::is_alphanumeric)
}

fn starts_with_bos(tok: &Tokenizer, ids: &[u32]) -> bool {
    tok.add_bos() && tok.bos_id().is_some() && ids.first().copied() == tok.bos_id()
}

/// The error for a subject whose end falls inside a token of the full text: it names that token
/// (or tokens, when byte-level pieces of one character straddle the end) and the whole split.
fn straddle_error(
    tok: &Tokenizer,
    subject: &str,
    text: &str,
    subject_end: usize,
    head: &[u32],
    ids: &[u32],
) -> Error {
    let bos = usize::from(starts_with_bos(tok, ids));
    let body = &ids[bos..];
    if body.is_empty() {
        return Error::input(format!(
            "the prompt {text:?} encodes to no token; type a prompt around the subject"
        ));
    }
    // The first token whose text reaches the subject's end (decode(encode(s)) == s, so the
    // decoded prefix of the tokens is a prefix of `text`).
    let reaches = body
        .iter()
        .enumerate()
        .position(|(i, _)| {
            tok.decode(&body[..=i])
                .is_ok_and(|s| s.as_bytes().starts_with(&text.as_bytes()[..subject_end]))
        })
        .unwrap_or(body.len().saturating_sub(1));
    // The first token that differs from the tokens of `prefix + subject`.
    let diverges = head
        .iter()
        .zip(ids)
        .take_while(|(a, b)| a == b)
        .count()
        .saturating_sub(bos)
        .min(reaches);
    let straddling = tok
        .decode(&body[diverges..=reaches])
        .unwrap_or_else(|_| "?".into());
    let split: Vec<String> = body
        .iter()
        .map(|&id| format!("{:?}", tok.token_str(id).unwrap_or_else(|| "?".into())))
        .collect();
    Error::refused(
        "SubjectSplitsToken",
        format!(
            "the subject {subject:?} ends inside the token {straddling:?} of {text:?} (it splits \
             as {}), so the edit has no position to write at; type the whole word as the \
             subject, or rephrase so that the subject is not joined to the text after it",
            split.join(" | ")
        ),
    )
}
