//! Board profiles: which GStreamer decoder and which ONNX Runtime execution provider a kind of
//! edge box uses.
//!
//! Main types: [`Board`] (the `board = "…"` name in the agent config) and [`BoardProfile`] (its
//! data). A profile names hardware decoders and the software decoder to fall back to when an
//! element is missing at run time; [`crate::camera`] renders pipelines from it.
//!
//! This module is data only: it must not probe devices or load GStreamer.

use std::fmt;

use serde::{Deserialize, Serialize};

/// A supported kind of edge box.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Board {
    /// Any x86-64 mini-PC: software decode (libav), ONNX Runtime on the CPU.
    #[default]
    GenericX86,
    /// Intel with VA-API: `vaapih264dec`/`vaapih265dec`, OpenVINO.
    IntelVaapi,
    /// NVIDIA Jetson: `nvv4l2decoder` + `nvvidconv`, TensorRT (CUDA as its fallback).
    Jetson,
    /// Rockchip RK3588: `mppvideodec`, ONNX Runtime on the CPU (the NPU needs RKNN models).
    Rk3588,
}

/// Which video codec a stream carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Codec {
    /// H.264 / AVC.
    #[default]
    H264,
    /// H.265 / HEVC.
    H265,
}

/// What a board decodes with and infers on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BoardProfile {
    /// The board.
    pub board: Board,
    /// H.264 decoder element followed by whatever it needs to reach system-memory raw video
    /// (e.g. `nvv4l2decoder ! nvvidconv`).
    pub h264_decoder: &'static str,
    /// H.265 decoder chain, as for H.264.
    pub h265_decoder: &'static str,
    /// Execution provider name as the `models` crate spells it (`cpu`, `openvino`, `tensorrt`,
    /// `cuda`).
    pub execution_provider: &'static str,
}

impl Board {
    /// Every board, for listings and tests.
    pub const ALL: [Board; 4] = [
        Board::GenericX86,
        Board::IntelVaapi,
        Board::Jetson,
        Board::Rk3588,
    ];

    /// The board's name as written in config.
    pub fn name(self) -> &'static str {
        match self {
            Board::GenericX86 => "generic-x86",
            Board::IntelVaapi => "intel-vaapi",
            Board::Jetson => "jetson",
            Board::Rk3588 => "rk3588",
        }
    }

    /// The board's profile.
    pub fn profile(self) -> BoardProfile {
        let (h264_decoder, h265_decoder, execution_provider) = match self {
            Board::GenericX86 => (SOFTWARE_H264, SOFTWARE_H265, "cpu"),
            Board::IntelVaapi => ("vaapih264dec", "vaapih265dec", "openvino"),
            Board::Jetson => (
                "nvv4l2decoder ! nvvidconv ! video/x-raw,format=I420",
                "nvv4l2decoder ! nvvidconv ! video/x-raw,format=I420",
                "tensorrt",
            ),
            Board::Rk3588 => ("mppvideodec", "mppvideodec", "cpu"),
        };
        BoardProfile {
            board: self,
            h264_decoder,
            h265_decoder,
            execution_provider,
        }
    }
}

impl BoardProfile {
    /// The decoder chain for `codec`.
    pub fn decoder(&self, codec: Codec) -> &'static str {
        match codec {
            Codec::H264 => self.h264_decoder,
            Codec::H265 => self.h265_decoder,
        }
    }
}

impl fmt::Display for Board {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// The software H.264 decoder every board can fall back to (libav; ~2x faster than openh264).
pub const SOFTWARE_H264: &str = "avdec_h264";
/// The software H.265 decoder every board can fall back to.
pub const SOFTWARE_H265: &str = "avdec_h265";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn board_names_round_trip_through_config_spelling() {
        for board in Board::ALL {
            let text = format!("board = \"{}\"", board.name());
            #[derive(Deserialize)]
            struct T {
                board: Board,
            }
            let parsed: T = toml_like(&text);
            assert_eq!(parsed.board, board);
        }
    }

    #[test]
    fn each_board_names_its_decoders_and_execution_provider() {
        assert_eq!(
            Board::GenericX86.profile().decoder(Codec::H264),
            "avdec_h264"
        );
        assert_eq!(
            Board::IntelVaapi.profile().decoder(Codec::H265),
            "vaapih265dec"
        );
        assert_eq!(Board::IntelVaapi.profile().execution_provider, "openvino");
        assert!(
            Board::Jetson
                .profile()
                .h264_decoder
                .starts_with("nvv4l2decoder")
        );
        assert_eq!(Board::Jetson.profile().execution_provider, "tensorrt");
        assert_eq!(Board::Rk3588.profile().decoder(Codec::H264), "mppvideodec");
    }

    /// Parses `key = "value"` through serde_json (this crate has no TOML dependency).
    fn toml_like<T: serde::de::DeserializeOwned>(line: &str) -> T {
        let (k, v) = line.split_once(" = ").unwrap();
        serde_json::from_str(&format!("{{\"{k}\": {v}}}")).unwrap()
    }
}
