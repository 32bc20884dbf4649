//! The comparison job: the original and the edited model side by side on the edit prompt and
//! the page's probes (greedy continuations, P(new), P(true), the realistic verdict).

use super::Ui;
use super::session::{self, FORM_CONTEXT_MARGIN, Session};
use crate::Result;
use crate::edit::EditRequest;
use crate::session::Probe;
use crate::session::protocol::{CompareRow, Compared, Failure, Outcome, ProbePrompt, Reply};
use crate::web::js::now_ms;

/// Compares on the form's request when it can be placed, else on the ledger's last request.
pub(crate) async fn compare(
    ui: &Ui,
    s: &mut Session,
    form: Option<EditRequest>,
    probes: Vec<ProbePrompt>,
) -> Outcome {
    // A cancel pressed during the job before (an edit) stopped that job, not this one.
    session::clear_cancel();
    let placed = form.filter(|r| {
        s.setup()
            .and_then(|setup| {
                setup.with_check(
                    &s.tokenizer,
                    s.config().max_ctx,
                    FORM_CONTEXT_MARGIN,
                    |spec| spec.check_request(r),
                )
            })
            .is_ok()
    });
    let Some(request) =
        placed.or_else(|| s.ledger().last().and_then(|e| e.requests.last().cloned()))
    else {
        return Ok(Reply::Compared { compared: None });
    };
    ui.progress(None, "Comparing the original and the edited model…");
    let t0 = now_ms();
    match run(s, request, probes).await {
        Ok(mut compared) => {
            compared.secs = (now_ms() - t0) / 1000.0;
            ui.progress(Some(1.0), &format!("Compared in {:.1} s.", compared.secs));
            Ok(Reply::Compared {
                compared: Some(compared),
            })
        }
        Err(e) => {
            ui.progress(Some(0.0), "The comparison failed.");
            Err(Failure {
                code: e.code().into(),
                message: format!("The comparison failed: {e}"),
            })
        }
    }
}

/// A true target for `r`: its own, a ledger request's for the same prompt and new target, or
/// the unedited model's answer.
async fn with_truth(s: &mut Session, r: EditRequest) -> Result<EditRequest> {
    if r.target_true.is_some() {
        return Ok(r);
    }
    let from_ledger = s
        .ledger()
        .iter()
        .flat_map(|e| &e.requests)
        .rev()
        .find(|x| x.sentence() == r.sentence() && x.target_new == r.target_new)
        .and_then(|x| x.target_true.clone());
    let mut reqs = [r];
    if let Some(t) = from_ledger {
        reqs[0].target_true = Some(t);
    } else {
        s.fill_true_targets(&mut reqs).await?;
    }
    let [r] = reqs;
    Ok(r)
}

async fn run(s: &mut Session, request: EditRequest, probes: Vec<ProbePrompt>) -> Result<Compared> {
    let r = with_truth(s, request).await?;
    let mut kinds = vec![ProbePrompt {
        kind: "edit".into(),
        prompt: r.sentence(),
    }];
    kinds.extend(probes);
    let asked: Vec<Probe> = kinds
        .iter()
        .map(|p| Probe {
            prompt: p.prompt.clone(),
            target_new: r.target_new.clone(),
            target_true: r.target_true.clone(),
        })
        .collect();
    let (original, edited) = s.compare(&asked).await?;
    let rows = kinds
        .into_iter()
        .zip(original.into_iter().zip(edited))
        .map(|(p, (original, edited))| CompareRow {
            kind: p.kind,
            prompt: p.prompt,
            original,
            edited,
        })
        .collect();
    Ok(Compared {
        request: r,
        rows,
        secs: 0.0,
    })
}
