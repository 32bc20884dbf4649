//! The launcher of `shaders/z_adam.wgsl`, the WGSL kernel of `crate::ops::adam::z_adam`
//! (the CPU reference is the specification; tests/gpu_ops.rs checks the kernel against it).

use crate::backend::{DType, TensorInfo, ZAdamState, ZAdamStep};
use crate::gpu::{Dispatch, GpuBackend, GpuTensor, u32_of};

/// GPU [`crate::ops::adam::z_adam`]: a workgroup per row of `s.rows`.
pub(crate) fn launch_z_adam(
    gpu: &GpuBackend,
    state: &ZAdamState<GpuTensor>,
    s: &ZAdamStep<'_, GpuTensor>,
) -> crate::Result<()> {
    s.rows.expect_dtype(DType::U32, "z_adam rows");
    let d = state.delta.width();
    let n = state.delta.len() / d.max(1);
    for (t, what) in [(&state.m, "m"), (&state.v, "v"), (s.grad, "gradient")] {
        assert_eq!(t.shape(), state.delta.shape(), "z_adam: {what} shape");
    }
    assert_eq!(s.coef.len(), 2 * n, "z_adam: two constants per request");
    assert_eq!(state.norms.len(), n, "z_adam: one norm per request");
    let r = s.rows.len();
    gpu.dispatch(&Dispatch {
        shader: "z_adam",
        entry: "main",
        overrides: &[],
        params: &[u32_of(r), u32_of(d), s.step.to_bits(), s.bc2_sqrt.to_bits()],
        bindings: &[
            (1, state.delta.buffer()),
            (2, state.m.buffer()),
            (3, state.v.buffer()),
            (4, s.grad.buffer()),
            (5, s.rows.buffer()),
            (6, s.coef.buffer()),
            (7, state.norms.buffer()),
        ],
        workgroups: r as u64,
    })
}
