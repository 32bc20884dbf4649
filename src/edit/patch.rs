//! Patches: the edit ledger as one small, versioned, checksummed file that replays the edits on
//! the same base model bit for bit.
//!
//! Layout (version 2): `NSEPATCH` (8 bytes), format version (u32 LE), manifest length (u64 LE),
//! the JSON manifest, the blob of little-endian arrays it points into, then the sha256 (32 raw
//! bytes) of everything before it, so one checksum covers the manifest and the blob. The manifest
//! records the nse version that wrote it, the base model's sha256, the hyperparameters, the
//! requests, and for every update its layer, round, columns and the spans of its factors.
//!
//! A patch holds one whole history: every entry records its parent (the digest of the entry
//! before it, [`ROOT_DIGEST`] for the first), and the patch records the digest of the edited
//! weights after the last entry ([`EditState::weights_digest`]), which replay checks.
//! Decoding checks everything that does not need the model; [`Patch::check_fits`] checks the
//! rest against the loaded model before anything is applied.

mod blob;

use serde::{Deserialize, Serialize};

use self::blob::{Blob, BlobReader, Span, check_spans};
use super::hparams::Hparams;
use super::method::MethodKind;
use super::request::EditRequest;
use super::solve::Factored;
use super::state::{AppliedUpdate, EditState, LedgerEntry, Measured, ROOT_DIGEST};
use crate::backend::Backend;
use crate::model::Model;
use crate::{Error, Result};

const MAGIC: &[u8; 8] = b"NSEPATCH";
const HEADER: usize = 20;
const TRAILER: usize = 32;
/// Current format version.
pub const PATCH_VERSION: u32 = 2;
/// The version of nse that writes patches.
pub const NSE_VERSION: &str = env!("CARGO_PKG_VERSION");

#[derive(Clone, Debug, Serialize, Deserialize)]
struct UpdateManifest {
    round: usize,
    layer: usize,
    n: usize,
    d: usize,
    cols: Span,
    r: Span,
    y: Span,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
struct EntryManifest {
    parent: String,
    digest: String,
    method: MethodKind,
    requests: Vec<EditRequest>,
    #[serde(default)]
    measured: Vec<Measured>,
    updates: Vec<UpdateManifest>,
    /// `(layer, keys (n, d_ff) f32)`.
    p_keys: Vec<(usize, Span)>,
}

/// The JSON part of a patch.
#[derive(Clone, Debug, Serialize, Deserialize)]
struct Manifest {
    format: String,
    version: u32,
    nse_version: String,
    model_name: String,
    model_sha256: String,
    hparams: Hparams,
    weights_sha256: Option<String>,
    entries: Vec<EntryManifest>,
}

/// A decoded patch.
#[derive(Clone, Debug)]
pub struct Patch {
    pub model_name: String,
    pub model_sha256: String,
    pub hparams: Hparams,
    /// Oldest first; each entry's `parent` is the digest of the one before it.
    pub entries: Vec<LedgerEntry>,
    /// [`EditState::weights_digest`] after replaying every entry, when the writer recorded it.
    pub weights_sha256: Option<String>,
    /// The nse version that wrote the patch ([`NSE_VERSION`] for a patch built in memory).
    pub nse_version: String,
}

impl Patch {
    /// A patch of `entries` without a recorded weights digest (see [`Patch::of_state`]).
    pub fn new(
        model_name: &str,
        model_sha256: &str,
        hparams: &Hparams,
        entries: Vec<LedgerEntry>,
    ) -> Self {
        Patch {
            model_name: model_name.to_string(),
            model_sha256: model_sha256.to_string(),
            hparams: hparams.clone(),
            entries,
            weights_sha256: None,
            nse_version: NSE_VERSION.to_string(),
        }
    }

    /// The whole ledger of `state`, with the digest of `model`'s edited weights recorded so that
    /// every replay can prove it reproduced them.
    ///
    /// # Errors
    /// A backend failure reading the weights back.
    pub async fn of_state<B: Backend>(
        model_name: &str,
        model_sha256: &str,
        hparams: &Hparams,
        state: &EditState<B::Tensor>,
        model: &Model<B>,
    ) -> Result<Self> {
        let mut patch = Patch::new(model_name, model_sha256, hparams, state.ledger.clone());
        patch.weights_sha256 = Some(state.weights_digest(model).await?);
        Ok(patch)
    }

    /// Number of edited requests.
    pub fn n_requests(&self) -> usize {
        self.entries.iter().map(|e| e.requests.len()).sum()
    }

    /// Encodes a patch.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut blob = Blob::default();
        let entries = self
            .entries
            .iter()
            .map(|e| EntryManifest {
                parent: e.parent.clone(),
                digest: e.digest(),
                method: e.method,
                requests: e.requests.clone(),
                measured: e.measured.clone(),
                updates: e
                    .updates
                    .iter()
                    .map(|u| UpdateManifest {
                        round: u.round,
                        layer: u.layer,
                        n: u.update.n,
                        d: u.update.d,
                        cols: blob.u32s(&u.update.cols),
                        r: blob.f64s(&u.update.r),
                        y: blob.f64s(&u.update.y),
                    })
                    .collect(),
                p_keys: e.p_keys.iter().map(|(&l, k)| (l, blob.f32s(k))).collect(),
            })
            .collect();
        let manifest = Manifest {
            format: "nse-patch".into(),
            version: PATCH_VERSION,
            nse_version: NSE_VERSION.into(),
            model_name: self.model_name.clone(),
            model_sha256: self.model_sha256.clone(),
            hparams: self.hparams.clone(),
            weights_sha256: self.weights_sha256.clone(),
            entries,
        };
        let json = serde_json::to_vec(&manifest).expect("the manifest serialises");
        let mut out = Vec::with_capacity(HEADER + json.len() + blob.bytes.len() + TRAILER);
        out.extend_from_slice(MAGIC);
        out.extend_from_slice(&PATCH_VERSION.to_le_bytes());
        out.extend_from_slice(&(json.len() as u64).to_le_bytes());
        out.extend_from_slice(&json);
        out.extend_from_slice(&blob.bytes);
        let sum = sha256_raw(&out);
        out.extend_from_slice(&sum);
        out
    }

    /// Decodes and verifies a patch: the checksum, every array's bounds, every size, every
    /// value finite, every entry's digest and the chain of parents.
    ///
    /// # Errors
    /// Not a patch, a version-1 or unknown version, a truncated or corrupt file, or any
    /// inconsistency; the message names `path` and the problem.
    pub fn from_bytes(bytes: &[u8], path: &str) -> Result<Self> {
        let bad = |msg: String| Error::format(path, format!("not a valid nse patch: {msg}"));
        if bytes.len() < 12 || &bytes[..8] != MAGIC {
            return Err(bad("it does not start with NSEPATCH".into()));
        }
        let version = u32::from_le_bytes(bytes[8..12].try_into().expect("4 bytes"));
        if version == 1 {
            return Err(Error::format(
                path,
                "this is a version-1 nse patch, which this nse (version 2 format) no longer \
                 reads: its manifest was not covered by its checksum, and a patch continued from \
                 another could silently lose the earlier edits. Re-create it by editing again \
                 with this nse (`nse edit`, or the page)",
            ));
        }
        if version != PATCH_VERSION {
            return Err(bad(format!(
                "format version {version}; this nse ({NSE_VERSION}) reads version \
                 {PATCH_VERSION}; use the nse version that wrote it, or a newer one"
            )));
        }
        if bytes.len() < HEADER + TRAILER {
            return Err(bad("the file is truncated".into()));
        }
        let (body, sum) = bytes.split_at(bytes.len() - TRAILER);
        if sha256_raw(body)[..] != sum[..] {
            return Err(bad(
                "the checksum does not match: the file is corrupt, truncated or was edited".into(),
            ));
        }
        let json_len = usize::try_from(u64::from_le_bytes(
            body[12..20].try_into().expect("8 bytes"),
        ))
        .ok()
        .and_then(|n| n.checked_add(HEADER))
        .filter(|&end| end <= body.len())
        .ok_or_else(|| bad("the manifest length points past the end of the file".into()))?;
        let manifest: Manifest = serde_json::from_slice(&body[HEADER..json_len])
            .map_err(|e| bad(format!("manifest: {e}")))?;
        decode(manifest, &body[json_len..], path)
    }

    /// Checks, without changing anything, that the patch can be appended to `state` on `model`:
    /// the same base model, the same edited layers, every update and key of the right shape for
    /// the model, and a first entry whose parent is the state's [`EditState::head`].
    ///
    /// # Errors
    /// The first mismatch, naming both sides.
    pub fn check_fits<B: Backend>(
        &self,
        model: &Model<B>,
        state: &EditState<B::Tensor>,
        model_sha256: &str,
    ) -> Result<()> {
        if self.model_sha256 != model_sha256 {
            return Err(Error::refused(
                "PatchForAnotherModel",
                format!(
                    "this patch was made for the model {:?} (sha256 {}…), not for the loaded \
                     model (sha256 {}…); load the model it was made for",
                    self.model_name,
                    short(&self.model_sha256),
                    short(model_sha256)
                ),
            ));
        }
        if self.hparams.layers != state.layers {
            return Err(Error::input(format!(
                "the patch edits layers {:?} but this editing session edits layers {:?}; apply \
                 it with the patch's own hyperparameters",
                self.hparams.layers, state.layers
            )));
        }
        let (d, d_ff) = (model.config.d_model, model.config.d_ff);
        self.hparams.check_model(&model.config)?;
        for (k, e) in self.entries.iter().enumerate() {
            let what = |msg: String| {
                Error::input(format!(
                    "entry {} of the patch does not fit this model: {msg}",
                    k + 1
                ))
            };
            for u in &e.updates {
                if !state.layers.contains(&u.layer) {
                    return Err(what(format!(
                        "it updates layer {}, which is not edited",
                        u.layer
                    )));
                }
                if u.update.d != d {
                    return Err(what(format!(
                        "an update of layer {} has {} rows, the model {d}",
                        u.layer, u.update.d
                    )));
                }
                if let Some(&c) = u.update.cols.iter().find(|&&c| c as usize >= d_ff) {
                    return Err(what(format!(
                        "an update of layer {} writes neuron {c}, the model has {d_ff}",
                        u.layer
                    )));
                }
            }
            for (l, keys) in &e.p_keys {
                if !state.layers.contains(l) || keys.len() != e.requests.len() * d_ff {
                    return Err(what(format!(
                        "its keys of layer {l} hold {} values, expected {} requests × {d_ff} \
                         neurons of an edited layer",
                        keys.len(),
                        e.requests.len()
                    )));
                }
            }
        }
        let head = state.head();
        if let Some(first) = self.entries.first()
            && first.parent != head
        {
            return Err(Error::input(if first.parent == ROOT_DIGEST {
                format!(
                    "the patch starts from the unedited model, but {} edit(s) are already \
                     applied here; start from the base model (or undo them) to apply it",
                    state.ledger.len()
                )
            } else if head == ROOT_DIGEST {
                format!(
                    "the patch continues a history it does not hold: its first entry was made \
                     after entry {}…, which is missing; apply the complete patch that ends with \
                     that entry",
                    short(&first.parent)
                )
            } else {
                format!(
                    "the patch's first entry was made after entry {}…, but the edits applied \
                     here end with entry {}…; the histories do not line up",
                    short(&first.parent),
                    short(&head)
                )
            }));
        }
        Ok(())
    }

    /// Appends the patch's entries to `state`, replaying them on `model` bit for bit, and
    /// checks the recorded weights digest when there is one.
    ///
    /// # Errors
    /// Those of [`Patch::check_fits`] (nothing is applied then); a weights digest that does not
    /// match after replay, or a backend failure (the state and model are rewound to before the
    /// call).
    pub async fn apply<B: Backend>(
        &self,
        model: &mut Model<B>,
        state: &mut EditState<B::Tensor>,
        model_sha256: &str,
    ) -> Result<()> {
        self.check_fits(model, state, model_sha256)?;
        let before = state.ledger.len();
        let result = async {
            state.replay(model, &self.entries)?;
            match &self.weights_sha256 {
                Some(want) => {
                    let got = state.weights_digest(model).await?;
                    if &got != want {
                        return Err(Error::input(format!(
                            "replaying the patch gave weights with sha256 {}…, but the patch \
                             recorded {}… when it was written: it was made on other weights \
                             than the loaded model's; nothing was applied",
                            short(&got),
                            short(want)
                        )));
                    }
                    Ok(())
                }
                None => Ok(()),
            }
        }
        .await;
        if result.is_err() {
            state.rewind_to(model, before)?;
        }
        result
    }
}

/// Checks a parsed manifest and the blob it points into, and builds the patch.
fn decode(manifest: Manifest, blob: &[u8], path: &str) -> Result<Patch> {
    let bad = |msg: String| Error::format(path, format!("not a valid nse patch: {msg}"));
    if manifest.format != "nse-patch" || manifest.version != PATCH_VERSION {
        return Err(bad(format!(
            "the manifest says format {:?} version {}",
            manifest.format, manifest.version
        )));
    }
    if !is_sha256(&manifest.model_sha256)
        || manifest
            .weights_sha256
            .as_deref()
            .is_some_and(|s| !is_sha256(s))
    {
        return Err(bad("a recorded sha256 is not 64 hexadecimal digits".into()));
    }
    manifest.hparams.validate(path)?;
    let mut spans = vec![];
    for e in &manifest.entries {
        for u in &e.updates {
            spans.extend([(u.cols, 4), (u.r, 8), (u.y, 8)]);
        }
        spans.extend(e.p_keys.iter().map(|&(_, s)| (s, 4)));
    }
    check_spans(&spans, blob.len()).map_err(bad)?;
    let read = BlobReader { blob };
    let mut entries: Vec<LedgerEntry> = vec![];
    let mut prev_digest: Option<String> = None;
    for (k, e) in manifest.entries.into_iter().enumerate() {
        let bad_entry = |msg: String| bad(format!("entry {}: {msg}", k + 1));
        let mut updates = vec![];
        for u in e.updates {
            let update = Factored {
                cols: read.u32s(u.cols),
                r: read.f64s(u.r),
                y: read.f64s(u.y),
                n: u.n,
                d: u.d,
            };
            let sizes_ok = u.n.checked_mul(u.d) == Some(update.r.len())
                && u.n.checked_mul(update.cols.len()) == Some(update.y.len());
            if !sizes_ok {
                return Err(bad_entry(format!(
                    "an update of layer {} has inconsistent sizes",
                    u.layer
                )));
            }
            let mut sorted = update.cols.clone();
            sorted.sort_unstable();
            if sorted.windows(2).any(|w| w[0] == w[1]) {
                return Err(bad_entry(format!(
                    "an update of layer {} writes a neuron twice",
                    u.layer
                )));
            }
            if !update.r.iter().chain(&update.y).all(|x| x.is_finite()) {
                return Err(bad_entry(format!(
                    "an update of layer {} holds NaN or infinity",
                    u.layer
                )));
            }
            updates.push(AppliedUpdate {
                round: u.round,
                layer: u.layer,
                update,
            });
        }
        let mut p_keys = std::collections::BTreeMap::new();
        for (l, s) in e.p_keys {
            let keys = read.f32s(s);
            if !keys.iter().all(|x| x.is_finite()) {
                return Err(bad_entry(format!(
                    "the keys of layer {l} hold NaN or infinity"
                )));
            }
            if p_keys.insert(l, keys).is_some() {
                return Err(bad_entry(format!("the keys of layer {l} appear twice")));
            }
        }
        let entry = LedgerEntry {
            method: e.method,
            requests: e.requests,
            updates,
            p_keys,
            parent: e.parent,
            measured: e.measured,
        };
        for r in &entry.requests {
            r.validate().map_err(|err| bad_entry(err.to_string()))?;
        }
        if entry.digest() != e.digest {
            return Err(bad_entry(
                "its content does not match its recorded digest".into(),
            ));
        }
        if let Some(prev) = &prev_digest
            && &entry.parent != prev
        {
            return Err(bad_entry(format!(
                "it was made after entry {}…, not after the entry before it in this patch: \
                 the entries are out of order or one is missing",
                short(&entry.parent)
            )));
        }
        prev_digest = Some(e.digest);
        entries.push(entry);
    }
    Ok(Patch {
        model_name: manifest.model_name,
        model_sha256: manifest.model_sha256,
        hparams: manifest.hparams,
        entries,
        weights_sha256: manifest.weights_sha256,
        nse_version: manifest.nse_version,
    })
}

/// The first 12 characters of a digest, for messages (escaped: it may come from a file).
fn short(s: &str) -> String {
    let head: String = s.chars().take(12).collect();
    head.escape_debug().to_string()
}

fn is_sha256(s: &str) -> bool {
    s.len() == 64 && s.bytes().all(|b| b.is_ascii_hexdigit())
}

fn sha256_raw(bytes: &[u8]) -> [u8; 32] {
    use sha2::{Digest, Sha256};
    Sha256::digest(bytes).into()
}
