//! Host-side tensors as loaded from a checkpoint, before they go to a backend.

/// A dense f32 tensor in host memory with its checkpoint name.
#[derive(Clone, Debug, PartialEq)]
pub struct HostTensor {
    /// Checkpoint name (Hugging Face naming, e.g. `model.layers.3.mlp.down_proj.weight`).
    pub name: String,
    /// Row-major shape, `[out][in]` for linear weights.
    pub shape: Vec<usize>,
    /// Values, `shape.iter().product()` of them.
    pub data: Vec<f32>,
}

impl HostTensor {
    /// A tensor; panics if `data` does not match `shape` (a loader bug).
    pub fn new(name: impl Into<String>, shape: Vec<usize>, data: Vec<f32>) -> Self {
        let name = name.into();
        assert_eq!(
            shape.iter().product::<usize>(),
            data.len(),
            "tensor {name}: shape/data mismatch"
        );
        HostTensor { name, shape, data }
    }
}
