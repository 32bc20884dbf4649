//! The launcher of `shaders/unpack.wgsl`, and the backend's way of giving ops that take only
//! dense tensors a weight kept compact: [`GpuBackend::dense`] decodes it into a temporary,
//! [`GpuBackend::widen`] replaces it (the first edit of a matrix, as the cpu backend widens a
//! stored matrix at its first write).

use std::ops::Deref;

use crate::backend::{DType, TensorInfo};
use crate::gpu::buffer::Packing;
use crate::gpu::{Dispatch, GpuBackend, GpuTensor, u32_of};

/// Invocations per workgroup of `shaders/unpack.wgsl`.
pub const UNPACK_WG: u32 = 256;

/// A tensor as dense f32: the tensor itself, or a decoded copy of a packed one.
pub(crate) enum Dense<'a> {
    Borrowed(&'a GpuTensor),
    Owned(GpuTensor),
}

impl Deref for Dense<'_> {
    type Target = GpuTensor;
    fn deref(&self) -> &GpuTensor {
        match self {
            Dense::Borrowed(t) => t,
            Dense::Owned(t) => t,
        }
    }
}

impl GpuBackend {
    /// `t` as dense f32 (decoded into a new tensor when it is packed).
    ///
    /// # Errors
    /// [`crate::Error::BufferTooLarge`] when the decoded weight does not fit one binding;
    /// [`crate::Error::DeviceLost`].
    pub(crate) fn dense<'a>(&self, t: &'a GpuTensor) -> crate::Result<Dense<'a>> {
        let Some(packing) = t.packing() else {
            return Ok(Dense::Borrowed(t));
        };
        let out = self.empty("decoded weight", t.shape(), DType::F32)?;
        let len = u32_of(t.len());
        self.dispatch(&Dispatch {
            shader: self.variant("unpack", &[Some(packing)]),
            entry: "main",
            overrides: &Packing::constants(Some(packing), ("w_FMT", "w_GROUP")),
            params: &[len],
            bindings: &[(1, t.buffer()), (2, out.buffer())],
            workgroups: u64::from(len / 4).div_ceil(u64::from(UNPACK_WG)),
        })?;
        Ok(Dense::Owned(out))
    }

    /// Replaces a packed `t` by its dense f32 values (a no-op for a dense tensor).
    ///
    /// # Errors
    /// As [`GpuBackend::dense`]; `t` is unchanged then.
    pub(crate) fn widen(&self, t: &mut GpuTensor) -> crate::Result<()> {
        if let Dense::Owned(dense) = self.dense(t)? {
            *t = dense;
        }
        Ok(())
    }
}
