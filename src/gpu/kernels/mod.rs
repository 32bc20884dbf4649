//! One launcher file per op family: bind the tensors, set the override constants, dispatch the
//! kernel of `shaders/`. Called from the `Backend` implementation (`super::ops`) only.

pub mod adam;
pub mod attention;
pub mod elementwise;
pub mod embedding;
pub mod fused;
pub mod layer_norm;
pub mod matmul;
pub mod rms_norm;
pub mod rope;
pub mod rows;
pub mod softmax;
pub mod unpack;
