//! ONNX object detection for Gridsense: image in, detections out.
//!
//! Model manifests, pre-processing, output decoders (SSD and YOLO families), NMS and the ONNX
//! Runtime session, so that a model can be tested and benchmarked on its own. `zoo/` holds the
//! shipped models (COCO-SSD).
//!
//! This crate must not touch the network, GStreamer or MQTT: frames are handed to it.
#![warn(missing_docs)]
