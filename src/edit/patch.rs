//! Patches: the edit ledger as one small, versioned, checksummed file that replays the edits on
//! the same base model bit for bit.
//!
//! Layout: `NSEPATCH` (8 bytes), format version (u32 LE), manifest length (u64 LE), the JSON
//! manifest, then the blob of little-endian arrays it points into. The manifest records the base
//! model's sha256, the method and hyperparameters, the requests, and for every update its layer,
//! round, columns and the offsets of its factors; it also holds the blob's sha256.

use serde::{Deserialize, Serialize};

use super::hparams::Hparams;
use super::method::MethodKind;
use super::request::EditRequest;
use super::solve::Factored;
use super::state::{AppliedUpdate, EditState, LedgerEntry, apply_update};
use crate::backend::Backend;
use crate::model::Model;
use crate::{Error, Result};

const MAGIC: &[u8; 8] = b"NSEPATCH";
/// Current format version.
pub const PATCH_VERSION: u32 = 1;

/// A slice of the blob: `len` elements starting at byte `offset`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
struct Span {
    offset: u64,
    len: u64,
}

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
    method: MethodKind,
    requests: Vec<EditRequest>,
    updates: Vec<UpdateManifest>,
    /// `(layer, keys (n, d_ff) f32)`.
    p_keys: Vec<(usize, Span)>,
}

/// The JSON part of a patch.
#[derive(Clone, Debug, Serialize, Deserialize)]
struct Manifest {
    format: String,
    version: u32,
    model_name: String,
    model_sha256: String,
    hparams: Hparams,
    blob_sha256: String,
    entries: Vec<EntryManifest>,
}

/// A decoded patch.
#[derive(Clone, Debug)]
pub struct Patch {
    pub model_name: String,
    pub model_sha256: String,
    pub hparams: Hparams,
    pub entries: Vec<LedgerEntry>,
}

impl Patch {
    /// Encodes a patch.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut blob = Blob::default();
        let entries = self
            .entries
            .iter()
            .map(|e| EntryManifest {
                method: e.method,
                requests: e.requests.clone(),
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
            model_name: self.model_name.clone(),
            model_sha256: self.model_sha256.clone(),
            hparams: self.hparams.clone(),
            blob_sha256: crate::model::load::sha256_hex(&[&blob.bytes]),
            entries,
        };
        let json = serde_json::to_vec(&manifest).expect("the manifest serialises");
        let mut out = Vec::with_capacity(20 + json.len() + blob.bytes.len());
        out.extend_from_slice(MAGIC);
        out.extend_from_slice(&PATCH_VERSION.to_le_bytes());
        out.extend_from_slice(&(json.len() as u64).to_le_bytes());
        out.extend_from_slice(&json);
        out.extend_from_slice(&blob.bytes);
        out
    }

    /// Decodes and verifies a patch.
    ///
    /// # Errors
    /// Not a patch, an unknown version, a truncated file or a checksum mismatch.
    pub fn from_bytes(bytes: &[u8], path: &str) -> Result<Self> {
        let bad = |msg: String| Error::format(path, format!("not a valid nse patch: {msg}"));
        if bytes.len() < 20 || &bytes[..8] != MAGIC {
            return Err(bad("it does not start with NSEPATCH".into()));
        }
        let version = u32::from_le_bytes(bytes[8..12].try_into().expect("4 bytes"));
        if version != PATCH_VERSION {
            return Err(bad(format!(
                "format version {version}, this build reads version {PATCH_VERSION}"
            )));
        }
        let json_len = u64::from_le_bytes(bytes[12..20].try_into().expect("8 bytes")) as usize;
        let json = bytes
            .get(20..20usize.saturating_add(json_len))
            .ok_or_else(|| bad("the file is truncated".into()))?;
        let manifest: Manifest =
            serde_json::from_slice(json).map_err(|e| bad(format!("manifest: {e}")))?;
        let blob = &bytes[20 + json_len..];
        if crate::model::load::sha256_hex(&[blob]) != manifest.blob_sha256 {
            return Err(bad(
                "the checksum does not match: the file is corrupt or truncated".into(),
            ));
        }
        let read = BlobReader { blob, path };
        let entries = manifest
            .entries
            .into_iter()
            .map(|e| {
                let updates = e
                    .updates
                    .into_iter()
                    .map(|u| {
                        let update = Factored {
                            cols: read.u32s(u.cols)?,
                            r: read.f64s(u.r)?,
                            y: read.f64s(u.y)?,
                            n: u.n,
                            d: u.d,
                        };
                        if update.r.len() != u.n * u.d || update.y.len() != u.n * update.cols.len()
                        {
                            return Err(bad(format!(
                                "update of layer {} has inconsistent sizes",
                                u.layer
                            )));
                        }
                        Ok(AppliedUpdate {
                            round: u.round,
                            layer: u.layer,
                            update,
                        })
                    })
                    .collect::<Result<_>>()?;
                let p_keys = e
                    .p_keys
                    .into_iter()
                    .map(|(l, s)| Ok((l, read.f32s(s)?)))
                    .collect::<Result<_>>()?;
                Ok(LedgerEntry {
                    method: e.method,
                    requests: e.requests,
                    updates,
                    p_keys,
                })
            })
            .collect::<Result<_>>()?;
        Ok(Patch {
            model_name: manifest.model_name,
            model_sha256: manifest.model_sha256,
            hparams: manifest.hparams,
            entries,
        })
    }

    /// Replays the patch on `model` (which must be the base model it was made on) and records it
    /// in `state`.
    ///
    /// # Errors
    /// A different base model (by sha256), layers the state does not edit, or column indices
    /// outside the model; the model is untouched then.
    pub fn apply<B: Backend>(
        &self,
        model: &mut Model<B>,
        state: &mut EditState<B::Tensor>,
        model_sha256: &str,
    ) -> Result<()> {
        if self.model_sha256 != model_sha256 {
            return Err(Error::input(format!(
                "this patch was made for the model {} (sha256 {}…), not for the loaded model (sha256 {}…); \
                 load the model it was made for",
                self.model_name,
                &self.model_sha256[..12.min(self.model_sha256.len())],
                &model_sha256[..12.min(model_sha256.len())]
            )));
        }
        let (d, d_ff) = (model.config.d_model, model.config.d_ff);
        for u in self.entries.iter().flat_map(|e| &e.updates) {
            if !state.layers.contains(&u.layer)
                || u.update.d != d
                || u.update.cols.iter().any(|&c| c as usize >= d_ff)
            {
                return Err(Error::input(format!(
                    "the patch's update of layer {} does not fit this model",
                    u.layer
                )));
            }
        }
        for e in &self.entries {
            for u in &e.updates {
                let (be, w) = model.parts_mut();
                apply_update(be, &mut w.layers[u.layer].down_proj, &u.update)?;
            }
            state.add_to_p(&e.p_keys);
            state.ledger.push(e.clone());
        }
        Ok(())
    }
}

/// Appends arrays to the blob and returns where they went.
#[derive(Default)]
struct Blob {
    bytes: Vec<u8>,
}

impl Blob {
    fn push(&mut self, len: usize, bytes: impl Iterator<Item = u8>) -> Span {
        let offset = self.bytes.len() as u64;
        self.bytes.extend(bytes);
        Span {
            offset,
            len: len as u64,
        }
    }
    fn f64s(&mut self, v: &[f64]) -> Span {
        self.push(v.len(), v.iter().flat_map(|x| x.to_le_bytes()))
    }
    fn f32s(&mut self, v: &[f32]) -> Span {
        self.push(v.len(), v.iter().flat_map(|x| x.to_le_bytes()))
    }
    fn u32s(&mut self, v: &[u32]) -> Span {
        self.push(v.len(), v.iter().flat_map(|x| x.to_le_bytes()))
    }
}

struct BlobReader<'a> {
    blob: &'a [u8],
    path: &'a str,
}

impl BlobReader<'_> {
    fn bytes(&self, s: Span, width: usize) -> Result<&[u8]> {
        let start = s.offset as usize;
        let end = start.checked_add((s.len as usize).saturating_mul(width));
        end.and_then(|e| self.blob.get(start..e)).ok_or_else(|| {
            Error::format(
                self.path,
                "not a valid nse patch: an array points past the end",
            )
        })
    }
    fn f64s(&self, s: Span) -> Result<Vec<f64>> {
        Ok(self
            .bytes(s, 8)?
            .chunks_exact(8)
            .map(|c| f64::from_le_bytes(c.try_into().expect("8")))
            .collect())
    }
    fn f32s(&self, s: Span) -> Result<Vec<f32>> {
        Ok(self
            .bytes(s, 4)?
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes(c.try_into().expect("4")))
            .collect())
    }
    fn u32s(&self, s: Span) -> Result<Vec<u32>> {
        Ok(self
            .bytes(s, 4)?
            .chunks_exact(4)
            .map(|c| u32::from_le_bytes(c.try_into().expect("4")))
            .collect())
    }
}
