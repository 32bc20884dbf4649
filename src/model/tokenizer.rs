//! Text ↔ token ids, built from GGUF metadata or read from a Hugging Face `tokenizer.json`.
//!
//! Policy (`tests/golden/smollm2-config.json`, `tokenizer_policy`): `encode` inserts no special
//! tokens except a BOS when the model asks for one (SmolLM2 does not), and `decode` keeps special
//! tokens and does not clean up spaces, so `decode(encode(s)) == s`.

use tokenizers::decoders::byte_level::ByteLevel as ByteLevelDecoder;
use tokenizers::models::bpe::{BPE, Merges, Vocab};
use tokenizers::pre_tokenizers::byte_level::ByteLevel;
use tokenizers::pre_tokenizers::digits::Digits;
use tokenizers::pre_tokenizers::sequence::Sequence;
use tokenizers::pre_tokenizers::split::{Split, SplitPattern};
use tokenizers::{AddedToken, PreTokenizerWrapper, SplitDelimiterBehavior};

use super::gguf::GgufFile;
use crate::error::escape;
use crate::{Error, Result};

/// GGUF `tokenizer.ggml.token_type` of a control (special) token.
const TOKEN_TYPE_CONTROL: i64 = 3;
/// GGUF `tokenizer.ggml.token_type` of a user-defined token (matched in raw text, not special).
const TOKEN_TYPE_USER_DEFINED: i64 = 4;

/// A byte-level BPE (or any `tokenizer.json`) tokenizer with the model's BOS/EOS policy.
#[derive(Clone, Debug)]
pub struct Tokenizer {
    inner: tokenizers::Tokenizer,
    bos_id: Option<u32>,
    eos_id: Option<u32>,
    add_bos: bool,
}

/// How a GGUF's `tokenizer.ggml.pre` splits text before byte-level BPE.
enum PreKind {
    /// GPT-2's byte-level regex.
    Gpt2,
    /// Digits one by one, then GPT-2's regex (`smollm`).
    DigitsThenGpt2,
    /// A regex split (isolated matches), then byte-level without GPT-2's regex.
    Split(&'static str),
}

/// Llama 3's split (`llama-bpe`): numbers in runs of up to three digits.
const LLAMA3_SPLIT: &str = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";

/// Qwen2's split: as Llama 3's, with digits one by one.
const QWEN2_SPLIT: &str = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";

impl Tokenizer {
    /// Builds the tokenizer stored in a GGUF file's `tokenizer.ggml.*` metadata.
    ///
    /// Only `tokenizer.ggml.model = gpt2` (byte-level BPE) with the `smollm`, `gpt-2`,
    /// `llama-bpe` or `qwen2` pre-tokenizer is built: other pre-tokenizers split text
    /// differently, and guessing would give silently wrong ids. Control tokens (token type 3) become special added tokens.
    ///
    /// Errors: [`Error::Unsupported`] for another tokenizer model or pre-tokenizer,
    /// [`Error::Format`] for missing or inconsistent metadata.
    pub fn from_gguf(gguf: &GgufFile) -> Result<Self> {
        let path = gguf.path();
        let unsupported = |msg: String| Error::Unsupported {
            path: path.to_string(),
            msg,
        };
        let missing = |key: &str| {
            Error::format(
                path,
                format!("metadata key `{key}` is missing: the GGUF has no usable tokenizer"),
            )
        };
        let model = gguf
            .get_str("tokenizer.ggml.model")?
            .ok_or_else(|| missing("tokenizer.ggml.model"))?;
        if model != "gpt2" {
            return Err(unsupported(format!(
                "tokenizer model `{}` (tokenizer.ggml.model); only `gpt2` (byte-level BPE) is \
                 built from GGUF metadata. Load the model's Hugging Face directory (config.json, \
                 tokenizer.json, *.safetensors) instead",
                escape(model)
            )));
        }
        let pre_kind = match gguf.get_str("tokenizer.ggml.pre")? {
            Some("smollm") => PreKind::DigitsThenGpt2,
            None | Some("gpt-2") | Some("gpt2") => PreKind::Gpt2,
            Some("llama-bpe") | Some("llama3") => PreKind::Split(LLAMA3_SPLIT),
            Some("qwen2") => PreKind::Split(QWEN2_SPLIT),
            Some(pre) => {
                return Err(unsupported(format!(
                    "pre-tokenizer `{}` (tokenizer.ggml.pre); supported: `smollm`, `gpt-2`, \
                     `llama-bpe`, `qwen2`. Load the model's Hugging Face directory (with its \
                     tokenizer.json) instead",
                    escape(pre)
                )));
            }
        };
        let tokens = gguf
            .get_str_array("tokenizer.ggml.tokens")?
            .ok_or_else(|| missing("tokenizer.ggml.tokens"))?;
        let merges = gguf
            .get_str_array("tokenizer.ggml.merges")?
            .ok_or_else(|| missing("tokenizer.ggml.merges"))?;
        let types = gguf.get_i64_array("tokenizer.ggml.token_type")?;
        if let Some(types) = &types
            && types.len() != tokens.len()
        {
            return Err(Error::format(
                path,
                format!(
                    "{} token types for {} tokens: the file is corrupt",
                    types.len(),
                    tokens.len()
                ),
            ));
        }

        let mut vocab = Vocab::with_capacity(tokens.len());
        for (id, &tok) in tokens.iter().enumerate() {
            // A duplicate keeps its first id, as the ids of the other occurrences are unreachable
            // from text anyway.
            vocab.entry(tok.to_string()).or_insert(id as u32);
        }
        let merges = parse_merges(&merges).map_err(|msg| Error::format(path, msg))?;
        let bpe = BPE::builder()
            .vocab_and_merges(vocab, merges)
            .build()
            .map_err(|e| {
                Error::format(
                    path,
                    format!("tokenizer.ggml.merges does not fit tokenizer.ggml.tokens: {e}"),
                )
            })?;

        let mut inner = tokenizers::Tokenizer::new(bpe);
        let mut pre: Vec<PreTokenizerWrapper> = Vec::new();
        match pre_kind {
            PreKind::Gpt2 => pre.push(ByteLevel::new(false, true, true).into()),
            PreKind::DigitsThenGpt2 => {
                pre.push(Digits::new(true).into());
                pre.push(ByteLevel::new(false, true, true).into());
            }
            PreKind::Split(pattern) => {
                let split = Split::new(
                    SplitPattern::Regex(pattern.to_string()),
                    SplitDelimiterBehavior::Isolated,
                    false,
                )
                .map_err(|e| Error::format(path, format!("the split pattern: {e}")))?;
                pre.push(split.into());
                pre.push(ByteLevel::new(false, true, false).into());
            }
        }
        inner.with_pre_tokenizer(Some(Sequence::new(pre)));
        inner.with_decoder(Some(ByteLevelDecoder::new(false, true, true)));
        if let Some(types) = &types {
            let of_type = |want: i64, special: bool| {
                tokens
                    .iter()
                    .zip(types)
                    .filter(move |&(_, &t)| t == want)
                    .map(move |(&tok, _)| AddedToken::from(tok, special))
            };
            let added = |e| {
                Error::format(
                    path,
                    format!("cannot add the control and user-defined tokens: {e}"),
                )
            };
            inner
                .add_special_tokens(of_type(TOKEN_TYPE_CONTROL, true))
                .map_err(added)?;
            inner
                .add_tokens(of_type(TOKEN_TYPE_USER_DEFINED, false))
                .map_err(added)?;
        }

        let id = |key: &str| -> Result<Option<u32>> {
            match gguf.get_u64(key)? {
                None => Ok(None),
                Some(id) if id < tokens.len() as u64 => Ok(Some(id as u32)),
                Some(id) => Err(Error::format(
                    path,
                    format!(
                        "{key} is {id} but the vocabulary has {} tokens: the file is corrupt",
                        tokens.len()
                    ),
                )),
            }
        };
        let (bos_id, eos_id) = (
            id("tokenizer.ggml.bos_token_id")?,
            id("tokenizer.ggml.eos_token_id")?,
        );
        id("tokenizer.ggml.unknown_token_id")?;
        let add_bos = gguf
            .get_bool("tokenizer.ggml.add_bos_token")?
            .unwrap_or(false);
        if add_bos && bos_id.is_none() {
            return Err(Error::format(
                path,
                "tokenizer.ggml.add_bos_token is true but no bos_token_id is given",
            ));
        }
        Ok(Tokenizer {
            inner,
            bos_id,
            eos_id,
            add_bos,
        })
    }

    /// A byte-level tokenizer with one token per byte (GPT-2's byte-to-character mapping) and no
    /// merges, its vocabulary padded to `vocab_size` with tokens no text produces; no BOS, and
    /// the last id as EOS. For synthetic models ([`super::synthetic`]) when no real tokenizer
    /// is at hand.
    ///
    /// # Errors
    /// [`Error::Input`] for a `vocab_size` under 257.
    pub fn byte_level(vocab_size: usize) -> Result<Self> {
        if vocab_size < 257 {
            return Err(Error::input(format!(
                "a byte-level vocabulary needs at least 257 tokens, not {vocab_size}"
            )));
        }
        let mut vocab: Vocab = ByteLevel::alphabet()
            .into_iter()
            .map(|c| c.to_string())
            .collect::<std::collections::BTreeSet<_>>()
            .into_iter()
            .enumerate()
            .map(|(id, c)| (c, id as u32))
            .collect();
        for id in vocab.len()..vocab_size {
            vocab.insert(format!("<unused{id}>"), id as u32);
        }
        let bpe = BPE::builder()
            .vocab_and_merges(vocab, Vec::new())
            .build()
            .map_err(|e| Error::input(format!("the byte-level tokenizer: {e}")))?;
        let mut inner = tokenizers::Tokenizer::new(bpe);
        inner.with_pre_tokenizer(Some(ByteLevel::new(false, true, true)));
        inner.with_decoder(Some(ByteLevelDecoder::new(false, true, true)));
        Ok(Tokenizer {
            inner,
            bos_id: None,
            eos_id: Some(vocab_size as u32 - 1),
            add_bos: false,
        })
    }

    /// Reads a Hugging Face `tokenizer.json`; `path` only names it in errors.
    ///
    /// BOS/EOS are not part of `tokenizer.json`; the safetensors loader sets them from
    /// `config.json` with [`Tokenizer::with_special_ids`]. Whether a BOS is prepended is read off
    /// the post-processor: if it puts exactly one token in front of a plain encoding, that token
    /// is the BOS and `encode` prepends it; anything else the post-processor adds is ignored.
    ///
    /// Errors: [`Error::Format`] for a file that is not JSON or not a tokenizer;
    /// [`Error::Unsupported`] for a tokenizer model other than BPE (Llama-family tokenizers are
    /// BPE) or WordLevel, or a `Precompiled` normalizer (SentencePiece's; no Llama-family tokenizer uses it).
    pub fn from_json(json: &str, path: &str) -> Result<Self> {
        check_json(json, path)?;
        let inner: tokenizers::Tokenizer = json.parse().map_err(|e| {
            Error::format(
                path,
                format!("not a tokenizer.json the tokenizers library can read: {e}"),
            )
        })?;
        let mut tok = Tokenizer {
            inner,
            bos_id: None,
            eos_id: None,
            add_bos: false,
        };
        let plain = tok
            .inner
            .encode("a", false)
            .map_err(|e| Error::format(path, format!("cannot encode with it: {e}")))?;
        let with = tok
            .inner
            .encode("a", true)
            .map_err(|e| Error::format(path, format!("cannot encode with it: {e}")))?;
        if let [bos, rest @ ..] = with.get_ids()
            && rest == plain.get_ids()
        {
            tok.bos_id = Some(*bos);
            tok.add_bos = true;
        }
        Ok(tok)
    }

    /// Overrides the BOS and EOS ids (from `config.json`); `None` keeps the current one.
    pub fn with_special_ids(mut self, bos: Option<u32>, eos: Option<u32>) -> Self {
        self.bos_id = bos.or(self.bos_id);
        self.eos_id = eos.or(self.eos_id);
        self
    }

    /// Token ids of `text`, with the BOS prepended when [`Tokenizer::add_bos`] is set.
    ///
    /// Special-token text such as `<|im_end|>` in `text` maps to its special id (as in Hugging
    /// Face `transformers`), so chat templates encode as the model expects.
    pub fn encode(&self, text: &str) -> Result<Vec<u32>> {
        let ids = self.encode_continuation(text)?;
        let bos = self.bos_id.filter(|_| self.add_bos);
        Ok(bos.into_iter().chain(ids).collect())
    }

    /// Token ids of `text` as a continuation of earlier text: never with a BOS, whatever
    /// [`Tokenizer::add_bos`] says.
    pub fn encode_continuation(&self, text: &str) -> Result<Vec<u32>> {
        let enc = self
            .inner
            .encode(text, false)
            .map_err(|e| Error::input(format!("could not tokenize {text:?}: {e}")))?;
        Ok(enc.get_ids().to_vec())
    }

    /// Text of `ids`, special tokens included, spaces as they are.
    ///
    /// Errors: [`Error::Input`] for an id outside the vocabulary.
    pub fn decode(&self, ids: &[u32]) -> Result<String> {
        if let Some(&bad) = ids.iter().find(|&&id| self.inner.id_to_token(id).is_none()) {
            return Err(Error::input(format!(
                "token id {bad} is not in the vocabulary of {} tokens",
                self.vocab_size()
            )));
        }
        self.inner
            .decode(ids, false)
            .map_err(|e| Error::input(format!("could not decode {ids:?}: {e}")))
    }

    /// Text of one token (a token holding part of a UTF-8 character shows U+FFFD), `None` for an
    /// id outside the vocabulary.
    pub fn token_str(&self, id: u32) -> Option<String> {
        self.inner.id_to_token(id)?;
        self.inner.decode(&[id], false).ok()
    }

    /// The id of a vocabulary entry as stored (byte-level form: `"Ġthe"` for `" the"`).
    pub fn token_to_id(&self, token: &str) -> Option<u32> {
        self.inner.token_to_id(token)
    }

    /// Number of ids, added tokens included.
    pub fn vocab_size(&self) -> usize {
        self.inner.get_vocab_size(true)
    }

    /// The largest id the tokenizer can produce or decode (vocabulary and added tokens), `None`
    /// for an empty vocabulary.
    pub fn max_id(&self) -> Option<u32> {
        self.inner.get_vocab(true).into_values().max()
    }

    pub fn bos_id(&self) -> Option<u32> {
        self.bos_id
    }

    pub fn eos_id(&self) -> Option<u32> {
        self.eos_id
    }

    /// Whether [`Tokenizer::encode`] prepends the BOS.
    pub fn add_bos(&self) -> bool {
        self.add_bos
    }

    /// This tokenizer as a Hugging Face `tokenizer.json` (to export a GGUF model's tokenizer).
    pub fn to_json(&self) -> Result<String> {
        self.inner
            .to_string(false)
            .map_err(|e| Error::input(format!("could not serialise the tokenizer: {e}")))
    }
}

/// What the `tokenizers` library must never be given, because it panics on it instead of
/// returning an error (found by fuzzing, `tests/hostile/hf/`): malformed JSON inside the
/// `decoder` (`expect("Helper")`), and a `Precompiled` normalizer whose character map does not
/// parse (`expect("Precompiled")`). The model must be BPE, so that no other model's loader is
/// reached with hostile input.
fn check_json(json: &str, path: &str) -> Result<()> {
    let v: serde_json::Value = serde_json::from_str(json).map_err(|e| {
        Error::format(
            path,
            format!("not valid JSON, so not a tokenizer.json: {e}"),
        )
    })?;
    let unsupported = |msg: String| Error::Unsupported {
        path: path.to_string(),
        msg,
    };
    match v.pointer("/model/type").and_then(serde_json::Value::as_str) {
        // BPE is what Llama-family tokenizers use; WordLevel (a plain word → id table, what
        // small test tokenizers use) has nothing in it that can fail.
        Some("BPE" | "WordLevel") => {}
        other => {
            return Err(unsupported(format!(
                "tokenizer model type {}: nse reads BPE tokenizers (every Llama-family one) and \
                 WordLevel ones",
                other.map_or_else(|| "missing".into(), |t| format!("`{}`", escape(t)))
            )));
        }
    }
    fn has_precompiled(v: &serde_json::Value) -> bool {
        match v {
            serde_json::Value::Object(o) => {
                o.get("type").and_then(serde_json::Value::as_str) == Some("Precompiled")
                    || o.values().any(has_precompiled)
            }
            serde_json::Value::Array(a) => a.iter().any(has_precompiled),
            _ => false,
        }
    }
    if v.get("normalizer").is_some_and(has_precompiled) {
        return Err(unsupported(
            "a `Precompiled` normalizer (SentencePiece's); Llama-family tokenizers do not use it"
                .into(),
        ));
    }
    Ok(())
}

/// GGUF merges are `"left right"`; the split is at the first space after the first character,
/// as in llama.cpp (byte-level tokens never contain a raw space).
fn parse_merges(merges: &[&str]) -> std::result::Result<Merges, String> {
    merges
        .iter()
        .enumerate()
        .map(|(i, m)| {
            let split = m
                .char_indices()
                .skip(1)
                .find(|&(_, c)| c == ' ')
                .map(|(at, _)| at);
            match split {
                Some(at) => Ok((m[..at].to_string(), m[at + 1..].to_string())),
                None => Err(format!(
                    "tokenizer.ggml.merges entry #{i} ({m:?}) is not two tokens separated by a \
                     space: the file is corrupt"
                )),
            }
        })
        .collect()
}
