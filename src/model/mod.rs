//! Model loading (GGUF, Hugging Face safetensors), the tokenizer, typed weights and the forward
//! pass with the taps editing needs.

pub mod backward;
pub mod batch;
pub mod block;
pub mod config;
pub mod export;
pub mod forward;
pub mod generate;
pub mod gguf;
pub mod host;
pub mod kv;
pub mod load;
pub mod safetensors;
pub mod synthetic;
pub mod tokenizer;
pub mod weights;

pub use backward::BlockRows;
pub use batch::Packed;
pub use block::{BatchTensors, BlockActs};
pub use config::{Arch, ModelConfig, RopeScaling};
pub use forward::{ForwardOutput, ForwardSpec, Injection, KvCache, LogitRows, Model};
pub use generate::{Generation, Sampling, generate};
pub use host::HostTensor;
pub use kv::PartialKv;
pub use load::{LoadedModel, ModelSource};
pub use tokenizer::Tokenizer;
pub use weights::{LayerWeights, QkvBias, Weights};
