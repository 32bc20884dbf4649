//! `nse patch show|verify|undo|remove`: inspect and operate on a patch's history, bit-exact.

use std::collections::BTreeSet;
use std::path::PathBuf;

use clap::{Args, Subcommand};

use super::common::{BackendChoice, Loaded, ModelArgs, load_unpatched, read_patch, write_patch};
use super::editor::{EditorArgs, batch_progress};
use crate::backend::Backend;
use crate::edit::patch::Patch;
use crate::edit::{EditContext, EditMethod, EditState, ROOT_DIGEST, history};
use crate::model::Model;
use crate::{Error, Result, with_model};

#[derive(Subcommand, Debug)]
pub enum PatchCommand {
    /// List the entries: requests, method, layers, neurons, and P(new) measured when made.
    Show(ShowArgs),
    /// Replay the patch on the base model and check the weights digest it recorded.
    Verify(OnModel),
    /// Remove the last K entries (bit-exact: the rest replay as they were).
    Undo(UndoArgs),
    /// Remove entry K and re-edit the requests of every later entry on top of the rest.
    Remove(RemoveArgs),
}

#[derive(Args, Debug)]
pub struct ShowArgs {
    /// The patch (a directory written by `nse edit`, or its patch.nsepatch).
    patch: PathBuf,
}

/// A patch and the base model it applies to.
#[derive(Args, Debug)]
pub struct OnModel {
    /// The patch (a directory written by `nse edit`, or its patch.nsepatch).
    patch: PathBuf,
    /// The base model (default: $NSE_MODEL, else the default model).
    #[arg(long)]
    model: Option<PathBuf>,
    /// Compute backend.
    #[arg(long, value_enum, default_value_t = BackendChoice::Auto)]
    backend: BackendChoice,
}

#[derive(Args, Debug)]
pub struct UndoArgs {
    #[command(flatten)]
    on: OnModel,
    /// Number of entries to remove from the end.
    #[arg(long, default_value_t = 1)]
    last: usize,
    /// Where to write the shortened patch (a directory, or a .nsepatch file).
    #[arg(long)]
    out: PathBuf,
}

#[derive(Args, Debug)]
pub struct RemoveArgs {
    #[command(flatten)]
    on: OnModel,
    /// The entry to remove, counted from 1 as `nse patch show` numbers them.
    #[arg(long)]
    entry: usize,
    /// Where to write the new patch (a directory, or a .nsepatch file).
    #[arg(long)]
    out: PathBuf,
    #[command(flatten)]
    editor: EditorArgs,
}

pub fn run(cmd: PatchCommand) -> Result<()> {
    match cmd {
        PatchCommand::Show(a) => show(&read_patch(&a.patch)?),
        PatchCommand::Verify(on) => {
            let patch = read_patch(&on.patch)?;
            let want = patch.weights_sha256.clone().ok_or_else(|| {
                Error::input(
                    "this patch recorded no weights digest, so there is nothing to verify \
                     against; re-export it with this nse",
                )
            })?;
            let mut loaded = load_base(&on)?;
            let sha = loaded.source.sha256.clone();
            with_model!(&mut loaded.model, m => {
                patch.hparams.check_model(&m.config)?; // layers and the memory P needs, before allocating it
                let mut state = EditState::new(m, &patch.hparams.layers)?;
                pollster::block_on(patch.apply(m, &mut state, &sha))
            })?;
            println!(
                "ok: replaying {} entries ({} edits) on {} reproduces the recorded weights \
                 (sha256 {want})",
                patch.entries.len(),
                patch.n_requests(),
                loaded.source.name
            );
            Ok(())
        }
        PatchCommand::Undo(a) => {
            let patch = read_patch(&a.on.patch)?;
            let n = patch.entries.len();
            if a.last == 0 || a.last > n {
                return Err(Error::input(format!(
                    "--last {} but the patch has {n} entries; give 1..={n}",
                    a.last
                )));
            }
            let mut loaded = load_base(&a.on)?;
            let out = with_model!(&mut loaded.model, m => pollster::block_on(async {
                patch.hparams.check_model(&m.config)?; // layers and the memory P needs, before allocating it
                let mut state = EditState::new(m, &patch.hparams.layers)?;
                patch.apply(m, &mut state, &loaded.source.sha256).await?;
                state.rewind_to(m, n - a.last)?;
                rewrite(&patch, &state, m).await
            }))?;
            write(
                &a.out,
                &out,
                &format!("removed the last {} entries", a.last),
            )
        }
        PatchCommand::Remove(a) => {
            let patch = read_patch(&a.on.patch)?;
            let n = patch.entries.len();
            if a.entry == 0 || a.entry > n {
                return Err(Error::input(format!(
                    "--entry {} but the patch has {n} entries; give 1..={n}",
                    a.entry
                )));
            }
            let Loaded {
                mut model,
                tokenizer,
                source,
                ..
            } = load_base(&a.on)?;
            let (tokenizer, source) = (&tokenizer, &source);
            let out = with_model!(&mut model, m => pollster::block_on(async {
                let mut editor = a.editor.prepare_with(m, tokenizer, source, Some(&patch.hparams)).await?;
                let kinds: BTreeSet<&str> = patch.entries[a.entry..].iter().map(|e| e.method.name()).collect();
                for e in &patch.entries[a.entry..] {
                    editor.prepare_method(e.method, m.config.d_ff)?;
                }
                let mut refs: Vec<&dyn EditMethod> = vec![];
                for e in &patch.entries[a.entry..] {
                    if !refs.iter().any(|m| m.kind() == e.method) {
                        refs.push(editor.method(e.method)?);
                    }
                }
                patch.hparams.check_model(&m.config)?; // layers and the memory P needs, before allocating it
                let mut state = EditState::new(m, &patch.hparams.layers)?;
                patch.apply(m, &mut state, &source.sha256).await?;
                let ctx = EditContext {
                    tok: tokenizer,
                    hp: &editor.hp,
                    templates: editor.templates()?,
                    cov: editor.cov()?,
                    method: refs.first().copied().unwrap_or(&crate::edit::Nse),
                };
                let mut bars = vec![];
                let later = n - a.entry;
                eprintln!("re-editing the {later} later entries ({})", kinds.into_iter().collect::<Vec<_>>().join(", "));
                history::remove_entry(m, &mut state, a.entry - 1, &ctx, &refs, None, |j, p| {
                    while bars.len() <= j {
                        bars.push(batch_progress(format!("entry {}/{later}", bars.len() + 1)));
                    }
                    bars[j](p)
                })
                .await?;
                rewrite(&patch, &state, m).await
            }))?;
            write(&a.out, &out, &format!("removed entry {}", a.entry))
        }
    }
}

/// The base model for a patch operation (the patch is applied by the caller).
fn load_base(on: &OnModel) -> Result<Loaded> {
    let args = ModelArgs {
        model: on.model.clone(),
        backend: on.backend,
        patch: None,
        memory_budget: None,
        tokenizer: None,
        weights: Default::default(),
    };
    Ok(load_unpatched(&args)?.0)
}

/// `patch` with the ledger of `state` and its weights digest.
async fn rewrite<B: Backend>(
    patch: &Patch,
    state: &EditState<B::Tensor>,
    model: &Model<B>,
) -> Result<Patch> {
    Patch::of_state(
        &patch.model_name,
        &patch.model_sha256,
        &patch.hparams,
        state,
        model,
    )
    .await
}

fn write(out: &std::path::Path, patch: &Patch, what: &str) -> Result<()> {
    let (file, bytes) = write_patch(out, patch)?;
    println!(
        "{what}: wrote {} ({bytes} bytes, {} entries, {} edits, weights sha256 {})",
        file.display(),
        patch.entries.len(),
        patch.n_requests(),
        patch.weights_sha256.as_deref().unwrap_or("-")
    );
    Ok(())
}

/// Prints the entries of a patch.
fn show(p: &Patch) -> Result<()> {
    println!(
        "model {:?} (sha256 {}), written by nse {}",
        p.model_name, p.model_sha256, p.nse_version
    );
    println!(
        "edited layers {:?}; {} entries, {} edits; weights sha256 {}",
        p.hparams.layers,
        p.entries.len(),
        p.n_requests(),
        p.weights_sha256.as_deref().unwrap_or("not recorded")
    );
    for (k, e) in p.entries.iter().enumerate() {
        let parent = if e.parent == ROOT_DIGEST {
            "the base model".to_string()
        } else {
            format!("{}…", &e.parent[..12.min(e.parent.len())])
        };
        println!(
            "\n#{} {} ({} request{}), digest {}…, after {parent}",
            k + 1,
            e.method.name(),
            e.requests.len(),
            if e.requests.len() == 1 { "" } else { "s" },
            &e.digest()[..12]
        );
        let neurons: Vec<String> = p
            .hparams
            .layers
            .iter()
            .map(|&l| {
                let cols: BTreeSet<u32> = e
                    .updates
                    .iter()
                    .filter(|u| u.layer == l)
                    .flat_map(|u| u.update.cols.iter().copied())
                    .collect();
                format!("{l}: {}", cols.len())
            })
            .collect();
        let rounds = e.updates.iter().map(|u| u.round + 1).max().unwrap_or(0);
        println!(
            "   neurons changed per layer {{{}}} in {rounds} round(s)",
            neurons.join(", ")
        );
        for (i, r) in e.requests.iter().enumerate() {
            let probs = match e.measured.get(i) {
                Some(m) if m.p_new.is_finite() => match m.p_true {
                    Some(t) => format!("P(new) {:.4}, P(true) {t:.4}", m.p_new),
                    None => format!("P(new) {:.4}", m.p_new),
                },
                _ => "P not measured".into(),
            };
            println!("   - {:?}  [{probs}]", r.label());
        }
    }
    Ok(())
}
