//! Integration tests of the `models` crate through its public API, on the real ONNX Runtime
//! library, the shipped COCO-SSD and the yolov12n test model fetched by `scripts/setup`.

// Test code: a panic is how a helper reports a broken set-up.
#![allow(clippy::unwrap_used)]

mod helpers;
mod load_errors;
mod reference;
mod runtime_errors;
