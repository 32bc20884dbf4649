//! A GGUF (v2 and v3) reader over bytes already in memory.
//!
//! [`GgufFile::parse`] reads the header, the key/value metadata and the tensor infos, and checks
//! that every tensor of a type we can decode lies inside the file. Tensor data is only touched by
//! [`GgufFile::tensor`], which dequantises one tensor to f32 on demand, so the caller decides how
//! many f32 copies exist at once.
//!
//! Layout (all little-endian): magic `GGUF`, `u32` version, `u64` tensor count, `u64` metadata
//! count, the metadata (`string key, u32 type, value`), the tensor infos (`string name, u32 n_dims,
//! u64 dims[n_dims], u32 ggml_type, u64 offset`), padding to `general.alignment` (default 32),
//! then the tensor data, each tensor at `data_offset + offset`.
//!
//! No file system here: this module also runs in the browser on the bytes of a dropped file.
//! Every read is bounds-checked; a corrupt or truncated file is an [`Error::Format`] that says
//! what is wrong, never a panic or an allocation larger than the file justifies.

pub(crate) mod quant;
mod value;

use std::collections::HashMap;

pub use quant::GgmlType;
pub use value::MetaValue;

use super::HostTensor;
use super::host::Stored;
use crate::error::escape;
use crate::{Error, Result};
use value::Cursor;

/// Alignment of the data section when `general.alignment` is absent.
pub const DEFAULT_ALIGNMENT: u64 = 32;

/// ggml tensors have at most this many dimensions.
const MAX_DIMS: u32 = 4;

/// What the file says about one tensor.
#[derive(Clone, Debug, PartialEq)]
pub struct GgufTensorInfo {
    /// GGUF tensor name, e.g. `blk.3.ffn_down.weight`.
    pub name: String,
    /// Dimensions fastest-first, as GGUF stores them: `[ne0, ne1]` is a row-major
    /// `[ne1][ne0]` matrix (see [`GgufTensorInfo::shape`]).
    pub dims: Vec<u64>,
    /// Storage type.
    pub ggml_type: GgmlType,
    /// Byte offset of the data from the start of the data section.
    pub offset: u64,
}

impl GgufTensorInfo {
    /// Row-major shape, slowest dimension first: `[out][in]` for a linear weight.
    pub fn shape(&self) -> Vec<usize> {
        // `parse` checked that the element count fits in usize, so every dim does too.
        self.dims.iter().rev().map(|&d| d as usize).collect()
    }

    /// Number of weights.
    pub fn n_elements(&self) -> u64 {
        // `parse` checked that this product does not overflow.
        self.dims.iter().product()
    }

    /// Bytes of data, when the type is one we can decode (and the size fits in a `u64`).
    pub fn n_bytes(&self) -> Option<u64> {
        let (block, block_bytes) = self.ggml_type.block_layout()?;
        (self.n_elements() / block).checked_mul(block_bytes)
    }
}

/// A parsed GGUF file borrowing its bytes.
#[derive(Debug)]
pub struct GgufFile<'a> {
    bytes: &'a [u8],
    path: String,
    version: u32,
    metadata: Vec<(String, MetaValue)>,
    metadata_index: HashMap<String, usize>,
    tensors: Vec<GgufTensorInfo>,
    tensor_index: HashMap<String, usize>,
    alignment: u64,
    data_offset: u64,
    /// The whole file's length: `bytes.len()`, or more for [`GgufFile::parse_header`].
    file_len: u64,
}

impl<'a> GgufFile<'a> {
    /// Parses only the header, metadata and tensor infos, from the file's first bytes `prefix`
    /// of a file of `file_len` bytes (a model picked in the page is sized up before it is read
    /// whole). Tensors are checked against `file_len`; their data cannot be read from the
    /// result.
    ///
    /// Errors: as [`GgufFile::parse`]; a header longer than `prefix` is reported as truncated.
    pub fn parse_header(prefix: &'a [u8], file_len: u64, path: &str) -> Result<Self> {
        Self::parse_with_len(prefix, file_len.max(prefix.len() as u64), path)
    }

    /// Parses the header, metadata and tensor infos of `bytes`; `path` only names the file in
    /// errors.
    ///
    /// Errors: [`Error::Format`] for a file that is not GGUF, truncated or inconsistent;
    /// [`Error::Unsupported`] for GGUF v1 or a big-endian file.
    pub fn parse(bytes: &'a [u8], path: &str) -> Result<Self> {
        Self::parse_with_len(bytes, bytes.len() as u64, path)
    }

    fn parse_with_len(bytes: &'a [u8], file_len: u64, path: &str) -> Result<Self> {
        let mut c = Cursor {
            bytes,
            pos: 0,
            path,
            in_memory: 0,
        };
        let magic = c.array::<4>(&|| "the GGUF magic".into())?;
        if &magic != b"GGUF" {
            return Err(c.error(format!(
                "not a GGUF file: it starts with {magic:02x?}, not the magic `GGUF`; pass a .gguf \
                 model, or a directory with config.json, tokenizer.json and *.safetensors"
            )));
        }
        let version = c.u32(&|| "the GGUF version".into())?;
        match version {
            2 | 3 => {}
            1 => {
                return Err(unsupported(
                    path,
                    "GGUF version 1 predates 64-bit counts; convert the \
                     model again with a current llama.cpp",
                ));
            }
            v if matches!(v.swap_bytes(), 2 | 3) => {
                return Err(unsupported(
                    path,
                    "this is a big-endian GGUF file; use the little-endian \
                     conversion of the model",
                ));
            }
            v => {
                return Err(c.error(format!(
                    "unknown GGUF version {v} (we read 2 and 3): the file \
                     is corrupt or from a newer GGUF"
                )));
            }
        }
        // A tensor info needs at least 8 (name length) + 4 + 4 + 8 bytes; a metadata entry
        // 8 + 4 + 1.
        let n_tensors = c.u64(&|| "the tensor count".into())?;
        let n_kv = c.count(13, &|| "the metadata entry count".into())?;
        // The entry itself and its index slot (key copy and position).
        let entry =
            std::mem::size_of::<(String, MetaValue)>() + std::mem::size_of::<(String, usize)>();
        c.charge(n_kv, entry, &|| format!("{n_kv} metadata entries"))?;
        let mut metadata = Vec::with_capacity(n_kv);
        let mut metadata_index = HashMap::with_capacity(n_kv);
        for i in 0..n_kv {
            let key = c.string(&|| format!("key of metadata entry #{i}"))?;
            // The key as messages show it: a hostile file's key may hold terminal escapes.
            let shown = escape(&key);
            let ty = c.u32(&|| format!("value type of metadata key `{shown}`"))?;
            let value = c.value(ty, &shown, 0)?;
            if metadata_index.contains_key(&key) {
                return Err(c.error(format!(
                    "metadata key `{shown}` appears twice: the file is corrupt"
                )));
            }
            metadata_index.insert(key.clone(), metadata.len());
            metadata.push((key, value));
        }
        let n_tensors = check_count(&c, n_tensors, 24, "the tensor count")?;
        let entry = std::mem::size_of::<GgufTensorInfo>() + std::mem::size_of::<(String, usize)>();
        c.charge(n_tensors, entry, &|| format!("{n_tensors} tensor infos"))?;
        let mut tensors = Vec::with_capacity(n_tensors);
        let mut tensor_index = HashMap::with_capacity(n_tensors);
        for i in 0..n_tensors {
            let info = read_tensor_info(&mut c, i)?;
            if tensor_index
                .insert(info.name.clone(), tensors.len())
                .is_some()
            {
                return Err(c.error(format!(
                    "tensor `{}` appears twice: the file is corrupt",
                    escape(&info.name)
                )));
            }
            tensors.push(info);
        }
        let mut file = GgufFile {
            bytes,
            path: path.to_string(),
            version,
            metadata,
            metadata_index,
            tensors,
            tensor_index,
            alignment: DEFAULT_ALIGNMENT,
            data_offset: 0,
            file_len,
        };
        file.alignment = match file.get_u64("general.alignment")? {
            None => DEFAULT_ALIGNMENT,
            Some(a) if a.is_power_of_two() => a,
            Some(a) => {
                return Err(file.format(format!(
                    "general.alignment is {a}, not a power of two: the file is corrupt"
                )));
            }
        };
        file.data_offset = (c.pos as u64).next_multiple_of(file.alignment);
        file.check_tensor_bounds()?;
        Ok(file)
    }

    /// Every decodable tensor is block-aligned, aligned in the file, and ends inside it.
    fn check_tensor_bounds(&self) -> Result<()> {
        let len = self.file_len;
        for t in &self.tensors {
            if !t.offset.is_multiple_of(self.alignment) {
                return Err(self.format(format!(
                    "tensor `{}` starts at data offset {}, not a multiple of the alignment {}: the \
                     file is corrupt",
                    escape(&t.name),
                    t.offset,
                    self.alignment
                )));
            }
            let Some((block, _)) = t.ggml_type.block_layout() else {
                continue;
            };
            let row = t.dims.first().copied().unwrap_or(1);
            if !row.is_multiple_of(block) {
                return Err(self.format(format!(
                    "tensor `{}` has rows of {row} weights, not a multiple of the {} block size \
                     {block}: the file is corrupt",
                    escape(&t.name),
                    t.ggml_type
                )));
            }
            let end = t
                .n_bytes()
                .and_then(|size| self.data_offset.checked_add(t.offset)?.checked_add(size));
            match end {
                Some(end) if end <= len => {}
                _ => {
                    return Err(self.format(format!(
                        "tensor `{}` data ends at byte {} but the file has {len} bytes: the \
                         file is truncated; download it again",
                        escape(&t.name),
                        end.map_or_else(|| "beyond 2^64".to_string(), |e| e.to_string())
                    )));
                }
            }
        }
        Ok(())
    }

    /// The path given to [`GgufFile::parse`].
    pub fn path(&self) -> &str {
        &self.path
    }

    /// GGUF version (2 or 3).
    pub fn version(&self) -> u32 {
        self.version
    }

    /// Data section alignment.
    pub fn alignment(&self) -> u64 {
        self.alignment
    }

    /// Byte offset of the data section in the file.
    pub fn data_offset(&self) -> u64 {
        self.data_offset
    }

    /// Size of the whole file in bytes.
    pub fn file_len(&self) -> u64 {
        self.file_len
    }

    /// All metadata entries in file order.
    pub fn metadata(&self) -> &[(String, MetaValue)] {
        &self.metadata
    }

    /// One metadata value.
    pub fn get(&self, key: &str) -> Option<&MetaValue> {
        self.metadata_index.get(key).map(|&i| &self.metadata[i].1)
    }

    /// A non-negative integer of any width; a value of another type is an [`Error::Format`].
    pub fn get_u64(&self, key: &str) -> Result<Option<u64>> {
        self.typed(key, "a non-negative integer", MetaValue::as_u64)
    }

    /// An `f32` or `f64`.
    pub fn get_f64(&self, key: &str) -> Result<Option<f64>> {
        self.typed(key, "a float", MetaValue::as_f64)
    }

    pub fn get_bool(&self, key: &str) -> Result<Option<bool>> {
        self.typed(key, "a bool", MetaValue::as_bool)
    }

    pub fn get_str(&self, key: &str) -> Result<Option<&str>> {
        self.typed(key, "a string", MetaValue::as_str)
    }

    /// An array of strings (a vocabulary, merges).
    pub fn get_str_array(&self, key: &str) -> Result<Option<Vec<&str>>> {
        self.typed(key, "an array of strings", |v| {
            v.as_array()?.iter().map(MetaValue::as_str).collect()
        })
    }

    /// An array of integers (token types).
    pub fn get_i64_array(&self, key: &str) -> Result<Option<Vec<i64>>> {
        self.typed(key, "an array of integers", |v| {
            v.as_array()?.iter().map(MetaValue::as_i64).collect()
        })
    }

    fn typed<'s, T>(
        &'s self,
        key: &str,
        want: &str,
        f: impl FnOnce(&'s MetaValue) -> Option<T>,
    ) -> Result<Option<T>> {
        let Some(v) = self.get(key) else {
            return Ok(None);
        };
        match f(v) {
            Some(t) => Ok(Some(t)),
            None => Err(self.format(format!(
                "metadata key `{key}` holds {} {v}, expected {want}: the file is corrupt or was \
                 written by an incompatible converter",
                v.type_name()
            ))),
        }
    }

    /// All tensor infos in file order.
    pub fn tensor_infos(&self) -> &[GgufTensorInfo] {
        &self.tensors
    }

    /// One tensor info.
    pub fn tensor_info(&self, name: &str) -> Option<&GgufTensorInfo> {
        self.tensor_index.get(name).map(|&i| &self.tensors[i])
    }

    /// The raw stored bytes of a tensor of a decodable type.
    pub fn tensor_bytes(&self, name: &str) -> Result<&'a [u8]> {
        let info = self.require(name)?;
        let size = info.n_bytes().ok_or_else(|| self.unsupported_type(info))?;
        // `check_tensor_bounds` proved this range lies inside the file; with only its header
        // parsed ([`GgufFile::parse_header`]) the bytes may not be here.
        let start = self.data_offset + info.offset;
        let range = usize::try_from(start)
            .ok()
            .zip(usize::try_from(start + size).ok())
            .and_then(|(a, b)| self.bytes.get(a..b));
        match range {
            Some(b) => Ok(b),
            None => Err(self.format(format!(
                "tensor `{}` lies beyond the {} bytes read of this file (only its header was read)",
                escape(name),
                self.bytes.len()
            ))),
        }
    }

    /// Dequantises one tensor to f32 (GGUF name kept).
    ///
    /// # Shapes
    /// GGUF dims `[ne0, ne1, …]` become the row-major shape `[…, ne1, ne0]`.
    ///
    /// Errors: [`Error::MissingTensor`] when absent, [`Error::Unsupported`] for a storage type
    /// other than F32, F16, BF16, Q8_0, Q4_0, Q4_1, Q5_0, Q5_1, Q4_K, Q5_K and Q6_K,
    /// [`Error::TooLarge`] when its f32 copy is over the memory budget.
    pub fn tensor(&self, name: &str) -> Result<HostTensor> {
        let bytes = self.tensor_bytes(name)?;
        let info = self.require(name)?;
        let n = info.n_elements();
        crate::budget::check(n.checked_mul(4), || {
            format!(
                "tensor `{}` dequantised to f32 ({n} weights)",
                escape(&info.name)
            )
        })?;
        let data = quant::dequantize(info.ggml_type, bytes, n as usize);
        Ok(HostTensor::new(name, info.shape(), data))
    }

    /// Bytes the tensors take once loaded as [`GgufFile::tensor_stored`] keeps them: a matrix
    /// in a storage type that tiles its rows stays at its file size, anything else becomes f32.
    pub fn resident_bytes(&self) -> u64 {
        self.tensor_infos()
            .iter()
            .map(|t| {
                let keeps = match (t.ggml_type.block_layout(), &t.shape()[..]) {
                    (Some((block, _)), [_, cols]) => {
                        t.ggml_type != GgmlType::F32 && (*cols as u64).is_multiple_of(block)
                    }
                    _ => false,
                };
                match t.n_bytes() {
                    Some(b) if keeps => b,
                    _ => t.n_elements().saturating_mul(4),
                }
            })
            .fold(0, u64::saturating_add)
    }

    /// One tensor as the weights of a model keep it: a matrix whose storage type can be decoded
    /// row by row ([`Stored::new`]) stays in that type, anything else is dequantised to f32 as
    /// [`GgufFile::tensor`] does.
    ///
    /// Errors: as [`GgufFile::tensor`].
    pub fn tensor_stored(&self, name: &str) -> Result<HostTensor> {
        let bytes = self.tensor_bytes(name)?;
        let info = self.require(name)?;
        if let [rows, cols] = info.shape()[..]
            && info.ggml_type != GgmlType::F32
        {
            crate::budget::check(Some(bytes.len() as u64), || {
                format!("tensor `{}` ({} bytes)", escape(&info.name), bytes.len())
            })?;
            if let Some(s) = Stored::new(info.ggml_type, bytes.to_vec(), rows, cols) {
                return Ok(HostTensor::stored(name, s));
            }
        }
        self.tensor(name)
    }

    fn require(&self, name: &str) -> Result<&GgufTensorInfo> {
        self.tensor_info(name).ok_or_else(|| Error::MissingTensor {
            path: self.path.clone(),
            name: name.to_string(),
            arch: self
                .get_str("general.architecture")
                .ok()
                .flatten()
                .unwrap_or("GGUF")
                .to_string(),
        })
    }

    fn unsupported_type(&self, info: &GgufTensorInfo) -> Error {
        unsupported(
            &self.path,
            &format!(
                "tensor `{}` is stored as ggml type {}, which nse cannot dequantise; convert \
                 the model to F16, BF16, Q8_0, Q4_0, Q4_1, Q5_0, Q5_1, Q4_K, Q5_K or Q6_K \
                 (the Q4_K_M and Q5_K_M mixtures load; for example `llama-quantize \
                 --allow-requantize in.gguf out.gguf Q8_0`, or `convert_hf_to_gguf.py \
                 --outtype f16`)",
                escape(&info.name),
                info.ggml_type
            ),
        )
    }

    /// A [`Error::Format`] for this file.
    pub(crate) fn format(&self, msg: String) -> Error {
        Error::format(&self.path, msg)
    }
}

fn unsupported(path: &str, msg: &str) -> Error {
    Error::Unsupported {
        path: path.to_string(),
        msg: msg.to_string(),
    }
}

/// `n` items of at least `min_bytes_each` bytes must fit in what is left of the file.
fn check_count(c: &Cursor, n: u64, min_bytes_each: usize, what: &str) -> Result<usize> {
    match usize::try_from(n)
        .ok()
        .and_then(|n| n.checked_mul(min_bytes_each))
    {
        Some(need) if need <= c.remaining() => Ok(n as usize),
        _ => Err(c.error(format!(
            "{what} is {n}, but only {} bytes of the file are left for them: the file is truncated \
             or corrupt; download it again",
            c.remaining()
        ))),
    }
}

fn read_tensor_info(c: &mut Cursor, i: usize) -> Result<GgufTensorInfo> {
    let name = c.string(&|| format!("name of tensor info #{i}"))?;
    let info = read_tensor_layout(c, &escape(&name))?;
    Ok(GgufTensorInfo { name, ..info })
}

/// The dimensions, type and offset of a tensor info; `name` is the escaped name for messages.
fn read_tensor_layout(c: &mut Cursor, name: &str) -> Result<GgufTensorInfo> {
    let n_dims = c.u32(&|| format!("dimension count of tensor `{name}`"))?;
    if n_dims > MAX_DIMS {
        return Err(c.error(format!(
            "tensor `{name}` claims {n_dims} dimensions (ggml allows at most \
             {MAX_DIMS}): the file is corrupt"
        )));
    }
    let mut dims = Vec::with_capacity(n_dims as usize);
    for d in 0..n_dims {
        dims.push(c.u64(&|| format!("dimension {d} of tensor `{name}`"))?);
    }
    let product = dims.iter().try_fold(1u64, |acc, &d| acc.checked_mul(d));
    let fits = product.is_some_and(|n| usize::try_from(n).is_ok())
        && dims.iter().all(|&d| usize::try_from(d).is_ok());
    if !fits {
        return Err(c.error(format!(
            "tensor `{name}` has dimensions {dims:?} whose product overflows: the file is corrupt"
        )));
    }
    let ggml_type = GgmlType(c.u32(&|| format!("type of tensor `{name}`"))?);
    let offset = c.u64(&|| format!("data offset of tensor `{name}`"))?;
    Ok(GgufTensorInfo {
        name: String::new(),
        dims,
        ggml_type,
        offset,
    })
}
