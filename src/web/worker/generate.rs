//! The generate job: greedy decoding with the library's decoder, each token posted to the page
//! as it arrives, and the top-5 probabilities of the first one.

use super::Ui;
use super::session::{self, Session};
use crate::Error;
use crate::model::generate::Sampling;
use crate::session::protocol::{Event, Failure, Outcome, Reply};
use crate::web::js::now_ms;

/// Largest number of new tokens the page accepts in one go.
pub(crate) const MAX_NEW_TOKENS: usize = 512;

pub(crate) async fn generate(ui: &Ui, s: &mut Session, prompt: &str, max_tokens: usize) -> Outcome {
    if !(1..=MAX_NEW_TOKENS).contains(&max_tokens) {
        return Err(Failure::from(Error::input(format!(
            "“{max_tokens}” new tokens: type a whole number from 1 to {MAX_NEW_TOKENS}"
        ))));
    }
    let t0 = now_ms();
    let tok = &s.tokenizer;
    let eos = s.config().eos_id;
    let g = s
        .generate(prompt, max_tokens, Sampling::Greedy, |g| {
            if g.ids.len() == 1 {
                let rows = g
                    .top5_first
                    .iter()
                    .map(|&(id, p)| (id, tok.token_str(id).unwrap_or_default(), p))
                    .collect();
                ui.send(Event::Top5 { rows });
            }
            let text: Vec<u32> = g.ids.iter().copied().filter(|&t| Some(t) != eos).collect();
            if let Ok(text) = tok.decode(&text) {
                ui.send(Event::Token {
                    text,
                    n: g.ids.len(),
                });
            }
        })
        .await
        .map_err(|e| Failure {
            code: e.code().into(),
            message: format!("Generation failed: {e}"),
        })?;
    Ok(Reply::Generated {
        tokens: g.ids.len(),
        stopped_at_eos: g.stopped_at_eos,
        cancelled: g.cancelled,
        secs: (now_ms() - t0) / 1000.0,
        backend: session::backend_of(s),
    })
}
