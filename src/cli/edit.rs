//! `nse edit`: apply requests sequentially in batches; write the patch, a report and a dump.

use std::path::PathBuf;
use std::time::Instant;

use clap::Args;
use serde_json::{Value, json};

use super::check::refuse_bad_requests;
use super::common::{Loaded, ModelArgs, PATCH_FILE, load_unpatched, write_json, write_patch};
use super::editor::{EditorArgs, batch_progress};
use crate::edit::dataset::load_cases;
use crate::edit::patch::Patch;
use crate::edit::{EditRequest, MethodKind};
use crate::session::{ApplyOptions, Session};
use crate::{Error, Result, with_model};

#[derive(Args, Debug)]
pub struct EditArgs {
    /// Requests: CounterFact (ROME or EasyEdit schema), zsRE, or [{prompt, subject, target_new}].
    #[arg(long)]
    requests: PathBuf,
    /// Editing method: nse, memit-seq, memit (no past keys) or alphaedit.
    #[arg(long, default_value = "nse")]
    method: String,
    /// Requests per batch.
    #[arg(long, default_value_t = 10)]
    batch: usize,
    /// Use only the first N requests of the file.
    #[arg(long)]
    n: Option<usize>,
    /// Output directory for the patch and the report. With `--patch`, the patch written there
    /// holds the earlier patch's edits followed by this run's: one history.
    #[arg(long)]
    out: PathBuf,
    /// Also write a detailed JSON dump of every internal quantity.
    #[arg(long)]
    dump: Option<PathBuf>,
    #[command(flatten)]
    editor: EditorArgs,
    #[command(flatten)]
    model: ModelArgs,
}

pub fn run(args: EditArgs) -> Result<()> {
    let method = MethodKind::parse(&args.method)?;
    if args.batch == 0 {
        return Err(Error::input("--batch must be at least 1"));
    }
    let mut cases = load_cases(&args.requests)?;
    if let Some(n) = args.n {
        if n > cases.len() {
            return Err(Error::input(format!(
                "--n {n} but {} holds only {} requests",
                args.requests.display(),
                cases.len()
            )));
        }
        cases.truncate(n);
    }
    let (loaded, patch) = load_unpatched(&args.model)?;
    let continuing = patch.as_ref().map(|p| &p.hparams);
    refuse_bad_requests(&args.editor, &loaded, &cases, args.batch, false, continuing)?;
    let requests: Vec<EditRequest> = cases.into_iter().map(|c| c.request).collect();
    let mut session = editing_session(loaded, &args.editor, patch.as_ref())?;
    pollster::block_on(edit(&mut session, method, &requests, patch.as_ref(), &args))
}

/// The model as an editing session with the editor's setup (templates and covariance from the
/// base model, exactly as in the run that made a continued patch), continuing `patch` when there
/// is one (its entries replayed bit for bit and its weights digest checked).
pub fn editing_session(
    loaded: Loaded,
    editor: &EditorArgs,
    patch: Option<&Patch>,
) -> Result<Session> {
    let Loaded {
        model,
        tokenizer,
        source,
        ..
    } = loaded;
    let device = model.describe();
    let continuing = patch.map(|p| &p.hparams);
    let setup = with_model!(&model, m => pollster::block_on(editor.prepare_with(m, &tokenizer, &source, continuing)))?;
    let mut session = Session::with_editing(model, tokenizer, source, device, Ok(setup))?;
    if let Some(p) = patch {
        pollster::block_on(session.import_patch(p, "continued"))?;
        eprintln!(
            "continuing from a patch of {} edit(s) in {} batch(es)",
            p.n_requests(),
            p.entries.len()
        );
    }
    Ok(session)
}

/// P(new) and P(true) on the edit prompt, per request (P(true) is `None` without a true target).
async fn efficacy(s: &Session, requests: &[EditRequest]) -> Result<Vec<(f32, Option<f32>)>> {
    let items: Vec<(String, String, Option<String>)> = requests
        .iter()
        .map(|r| (r.sentence(), r.target_new.clone(), r.target_true.clone()))
        .collect();
    s.score(&items).await
}

/// Efficacy in percent over the requests that have a true target (`None` when none has one:
/// there is then nothing to compare P(new) with).
fn success_rate(probs: &[(f32, Option<f32>)]) -> Option<f64> {
    let with_truth: Vec<(f32, f32)> = probs
        .iter()
        .filter_map(|&(n, t)| t.map(|t| (n, t)))
        .collect();
    (!with_truth.is_empty()).then(|| {
        let ok = with_truth.iter().filter(|(n, t)| n > t).count();
        100.0 * ok as f64 / with_truth.len() as f64
    })
}

/// `p` with 4 decimals, or "-".
fn prob_cell(p: Option<f32>) -> String {
    p.map_or_else(|| "-".into(), |p| format!("{p:.4}"))
}

async fn edit(
    session: &mut Session,
    kind: MethodKind,
    requests: &[EditRequest],
    continued: Option<&Patch>,
    args: &EditArgs,
) -> Result<()> {
    let pre = efficacy(session, requests).await?;
    let with_truth = requests.iter().filter(|r| r.target_true.is_some()).count();
    match success_rate(&pre) {
        Some(rate) => eprintln!(
            "pre-edit efficacy: {rate:.1}% of the {with_truth} requests with a true target"
        ),
        None => eprintln!(
            "no request has a target_true: efficacy (P(new) > P(true)) is not defined; P(new) \
             before and after is reported instead"
        ),
    }

    let mut batches = vec![];
    let mut z_dump = vec![];
    let t_all = Instant::now();
    for (b, chunk) in requests.chunks(args.batch).enumerate() {
        let t0 = Instant::now();
        let label = format!("batch {}/{}", b + 1, requests.len().div_ceil(args.batch));
        let out = session
            .apply(
                chunk,
                vec![],
                kind,
                ApplyOptions::default(),
                batch_progress(label),
            )
            .await?;
        let secs = t0.elapsed().as_secs_f64();
        eprintln!(
            "batch {} done in {secs:.1} s: residuals {:?} → {:?}",
            b + 1,
            out.rounds.first().map(|r| round1(&r.residual_norms)),
            out.rounds.last().map(|r| round1(&r.residual_norms))
        );
        batches.push(json!({
            "case_ids": chunk.iter().map(|r| r.case_id).collect::<Vec<_>>(),
            "seconds": secs,
            "rounds": out.rounds,
        }));
        z_dump.extend(out.z);
    }
    let post = efficacy(session, requests).await?;
    let (pre_rate, post_rate) = (success_rate(&pre), success_rate(&post));
    println!(
        "{:<52} {:>10} {:>10} {:>11} {:>10}",
        "request", "P(new) pre", "post", "P(true) pre", "post"
    );
    for (r, (a, b)) in requests.iter().zip(pre.iter().zip(&post)) {
        let label: String = r.label().chars().take(50).collect();
        println!(
            "{label:<52} {:>10.4} {:>10.4} {:>11} {:>10}",
            a.0,
            b.0,
            prob_cell(a.1),
            prob_cell(b.1)
        );
    }
    let summary = match (pre_rate, post_rate) {
        (Some(pre_rate), Some(post_rate)) => format!(
            "efficacy (P(new) > P(true) on the edit prompt, {with_truth} requests with a true \
             target): pre {pre_rate:.1}%  post {post_rate:.1}%"
        ),
        _ => "efficacy: not defined (no request has a target_true)".into(),
    };
    println!(
        "{summary}  ({} requests, {} batches, {:.1} s)",
        requests.len(),
        batches.len(),
        t_all.elapsed().as_secs_f64()
    );

    std::fs::create_dir_all(&args.out).map_err(|e| Error::io(&args.out, e))?;
    let patch = session.export_patch().await?;
    let (patch_path, n_bytes) = write_patch(&args.out.join(PATCH_FILE), &patch)?;
    let earlier = continued.map_or(0, Patch::n_requests);
    let source = &session.source;
    let editor = session.setup()?;
    let report = json!({
        "method": kind.name(), "model": source.name, "model_sha256": source.sha256,
        "hparams": editor.hp, "n_requests": requests.len(), "batch_size": args.batch,
        "covariance": editor.cov()?.source,
        "efficacy_pre": pre_rate, "efficacy_post": post_rate,
        "per_request": requests.iter().zip(pre.iter().zip(&post)).map(|(r, (a, b))| json!({
            "request": r, "p_new_pre": a.0, "p_true_pre": a.1, "p_new_post": b.0, "p_true_post": b.1,
        })).collect::<Vec<_>>(),
        "seconds": t_all.elapsed().as_secs_f64(),
        "patch": {
            "file": PATCH_FILE, "bytes": n_bytes, "entries": patch.entries.len(),
            "requests": patch.n_requests(), "continued_requests": earlier,
            "weights_sha256": patch.weights_sha256,
        },
    });
    write_json(&args.out.join("report.json"), &report)?;
    let history = if earlier > 0 {
        format!(
            "{} edits: {earlier} from the continued patch + {} new",
            patch.n_requests(),
            requests.len()
        )
    } else {
        format!("{} edits", patch.n_requests())
    };
    println!(
        "wrote {} ({n_bytes} bytes, {history}) and {}",
        patch_path.display(),
        args.out.join("report.json").display()
    );

    if let Some(path) = &args.dump {
        let dump = dump_json(
            &session.tokenizer,
            editor,
            requests,
            &z_dump,
            &batches,
            &post,
        )?;
        write_json(path, &dump)?;
        println!("wrote dump {}", path.display());
    }
    Ok(())
}

fn round1(v: &[f32]) -> Vec<f32> {
    v.iter().map(|x| (x * 10.0).round() / 10.0).collect()
}

/// The `--dump` document, with the reference dump's field names where they exist.
fn dump_json(
    tok: &crate::model::Tokenizer,
    editor: &crate::session::EditSetup,
    requests: &[EditRequest],
    zs: &[crate::edit::target::ZResult],
    batches: &[Value],
    post: &[(f32, Option<f32>)],
) -> Result<Value> {
    let mut per_request = vec![];
    for ((r, z), p) in requests.iter().zip(zs).zip(post) {
        let kp = crate::edit::keys::KeyPrompts::new(tok, editor.templates()?, &[r])?;
        let key_prompts: Vec<Value> = (0..kp.texts.len())
            .map(|t| {
                json!({
                    "template_index": t, "text": kp.texts[t],
                    "input_ids": kp.packed.ids[kp.packed.offsets[t]..kp.packed.offsets[t + 1]],
                    "subject_last_index": kp.subject_last[t],
                })
            })
            .collect();
        per_request.push(json!({
            "case_id": r.case_id, "request": r, "key_prompts": key_prompts,
            "z": {
                "target_ids": z.target_ids, "prompts": z.prompts, "input_ids": z.input_ids, "lookup_idxs": z.lookup_idxs,
                "steps_loss_nll_kl_wd_prob": z.steps.iter().map(|s| [s.loss, s.nll, s.kl, s.wd, s.prob]).collect::<Vec<_>>(),
                "h_init": z.h_init, "delta": z.delta, "z": z.z,
                "h_init_norm": crate::edit::target::norm(&z.h_init), "delta_norm": crate::edit::target::norm(&z.delta),
            },
            "post": { "p_new": p.0, "p_true": p.1 },
        }));
    }
    Ok(json!({
        "hparams": editor.hp, "context_templates": editor.templates()?.groups,
        "requests": per_request, "batches": batches,
    }))
}

#[cfg(test)]
mod tests {
    use super::{prob_cell, success_rate};

    #[test]
    fn efficacy_counts_only_requests_with_a_true_target() {
        // 0.6 > 0.3 succeeds, 0.2 < 0.5 fails, the request without a truth is left out: 1 of 2.
        let probs = [(0.6, Some(0.3)), (0.2, Some(0.5)), (0.9, None)];
        assert_eq!(success_rate(&probs), Some(50.0));
        assert_eq!(success_rate(&[(0.9, None)]), None);
        assert_eq!(prob_cell(None), "-");
        assert_eq!(prob_cell(Some(0.25)), "0.2500");
    }
}
