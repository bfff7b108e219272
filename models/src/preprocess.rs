//! Pre-processing: an RGB frame of any size becomes the model's input tensor (SIMD resize with
//! `fast_image_resize`, stretch or letterbox, channel order, layout, normalisation), and the
//! [`Transform`] that maps model coordinates back to the frame's pixels.
//!
//! Main types: [`RgbView`], [`Preprocessor`], [`Prepared`], [`Transform`]. Buffers are reused from
//! frame to frame. A frame that already has the size the model is fed at skips the resize. This
//! module must not decode files or run inference.

use fast_image_resize::images::{CroppedImageMut, Image, ImageRef};
use fast_image_resize::{FilterType, PixelType, ResizeAlg, ResizeOptions, Resizer};

use crate::manifest::{ColorOrder, InputSpec, InputType, Layout, Placement, ResizeMode};

/// A borrowed, tightly packed RGB8 frame (`width * height * 3` bytes, rows top to bottom).
#[derive(Debug, Clone, Copy)]
pub struct RgbView<'a> {
    width: u32,
    height: u32,
    data: &'a [u8],
}

/// Why a frame could not be prepared.
#[derive(Debug, thiserror::Error)]
pub enum PreprocessError {
    /// The buffer does not hold `width * height * 3` bytes, or a side is zero.
    #[error("frame buffer of {len} bytes does not hold a {width}x{height} RGB image")]
    BadFrame {
        /// Claimed width.
        width: u32,
        /// Claimed height.
        height: u32,
        /// Actual buffer length.
        len: usize,
    },
    /// The SIMD resize refused the images (a bug if it happens: sizes are checked before).
    #[error("failed to resize frame")]
    Resize(#[source] fast_image_resize::ResizeError),
    /// The model-size canvas could not be wrapped (a bug if it happens: sizes are checked before).
    #[error("failed to set up the model-size canvas")]
    Canvas(#[source] fast_image_resize::ImageBufferError),
    /// The letterbox region does not fit the canvas (a bug if it happens).
    #[error("failed to place the frame in the model-size canvas")]
    Region(#[source] fast_image_resize::CropBoxError),
}

/// The model input made from one frame, borrowed from the [`Preprocessor`]'s buffers.
#[derive(Debug)]
pub struct Prepared<'a> {
    /// Tensor elements in the manifest's layout.
    pub data: TensorData<'a>,
    /// Tensor shape, `[1, h, w, 3]` or `[1, 3, h, w]`.
    pub shape: [usize; 4],
    /// Maps model pixel coordinates back to the frame.
    pub transform: Transform,
}

/// Tensor elements of a prepared input.
#[derive(Debug)]
pub enum TensorData<'a> {
    /// For `dtype = "uint8"`.
    U8(&'a [u8]),
    /// For `dtype = "float32"`.
    F32(&'a [f32]),
}

/// Maps coordinates in the model input (pixels) back to the original frame (pixels).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Transform {
    /// Model pixels per frame pixel, horizontally.
    pub scale_x: f32,
    /// Model pixels per frame pixel, vertically.
    pub scale_y: f32,
    /// Left padding in model pixels (letterbox).
    pub pad_x: f32,
    /// Top padding in model pixels (letterbox).
    pub pad_y: f32,
    /// Frame width, for clipping.
    pub frame_width: u32,
    /// Frame height, for clipping.
    pub frame_height: u32,
}

/// Turns frames into input tensors for one model; owns the resize state and buffers.
pub struct Preprocessor {
    spec: InputSpec,
    resizer: Resizer,
    options: ResizeOptions,
    /// RGB8 canvas at the model size, in interleaved order.
    canvas: Vec<u8>,
    /// The tensor when it differs from the canvas (NCHW, BGR or float).
    bytes: Vec<u8>,
    floats: Vec<f32>,
}

impl<'a> RgbView<'a> {
    /// Wraps a packed RGB8 buffer.
    ///
    /// # Errors
    /// [`PreprocessError::BadFrame`] when a side is zero or the length is not `width*height*3`.
    pub fn new(width: u32, height: u32, data: &'a [u8]) -> Result<Self, PreprocessError> {
        let expected = width as usize * height as usize * 3;
        if width == 0 || height == 0 || data.len() != expected {
            return Err(PreprocessError::BadFrame {
                width,
                height,
                len: data.len(),
            });
        }
        Ok(Self {
            width,
            height,
            data,
        })
    }

    /// Width in pixels.
    pub fn width(&self) -> u32 {
        self.width
    }

    /// Height in pixels.
    pub fn height(&self) -> u32 {
        self.height
    }

    /// The packed RGB8 bytes.
    pub fn data(&self) -> &'a [u8] {
        self.data
    }
}

impl Preprocessor {
    /// A pre-processor for the model input `spec`.
    pub fn new(spec: &InputSpec) -> Self {
        let pixels = spec.width.get() as usize * spec.height.get() as usize;
        Self {
            spec: spec.clone(),
            resizer: Resizer::new(),
            // Bilinear (triangle) convolution, the same filter as Pillow's BILINEAR resize.
            options: ResizeOptions::new().resize_alg(ResizeAlg::Convolution(FilterType::Bilinear)),
            canvas: vec![0; pixels * 3],
            bytes: Vec::new(),
            floats: Vec::new(),
        }
    }

    /// Resizes `frame` to the model size and lays it out as the model's input tensor.
    ///
    /// # Errors
    /// [`PreprocessError::Resize`] only on an internal inconsistency.
    pub fn prepare(&mut self, frame: RgbView<'_>) -> Result<Prepared<'_>, PreprocessError> {
        let (w, h) = (self.spec.width.get(), self.spec.height.get());
        let transform = self.fill_canvas(frame)?;
        let shape = match self.spec.layout {
            Layout::Nhwc => [1, h as usize, w as usize, 3],
            Layout::Nchw => [1, 3, h as usize, w as usize],
        };
        let order: [usize; 3] = match self.spec.color {
            ColorOrder::Rgb => [0, 1, 2],
            ColorOrder::Bgr => [2, 1, 0],
        };
        let data = match (self.spec.dtype, self.spec.layout, self.spec.color) {
            (InputType::Uint8, Layout::Nhwc, ColorOrder::Rgb) => TensorData::U8(&self.canvas),
            (InputType::Uint8, layout, _) => {
                self.bytes.resize(self.canvas.len(), 0);
                write_tensor(&self.canvas, &mut self.bytes, layout, order);
                TensorData::U8(&self.bytes)
            }
            (InputType::Float32, layout, _) => {
                let n = self.spec.normalize.unwrap_or_default();
                // One lookup table per channel: 256 entries beat a multiply-add per element.
                let luts: [[f32; 256]; 3] = std::array::from_fn(|c| {
                    std::array::from_fn(|v| (v as f32 * n.scale - n.mean[c]) / n.std[c])
                });
                self.floats.resize(self.canvas.len(), 0.0);
                write_tensor_lut(&self.canvas, &mut self.floats, layout, order, &luts);
                TensorData::F32(&self.floats)
            }
        };
        Ok(Prepared {
            data,
            shape,
            transform,
        })
    }

    /// Resizes (or copies) the frame into the RGB canvas and says where it landed.
    fn fill_canvas(&mut self, frame: RgbView<'_>) -> Result<Transform, PreprocessError> {
        let (w, h) = (self.spec.width.get(), self.spec.height.get());
        let (fw, fh) = (frame.width, frame.height);
        let (left, top, nw, nh, scale_x, scale_y) = match self.spec.resize {
            ResizeMode::Stretch => (0, 0, w, h, w as f32 / fw as f32, h as f32 / fh as f32),
            ResizeMode::Letterbox { pad, placement } => {
                let r = (w as f32 / fw as f32).min(h as f32 / fh as f32);
                let nw = ((fw as f32 * r).round() as u32).clamp(1, w);
                let nh = ((fh as f32 * r).round() as u32).clamp(1, h);
                let (left, top) = match placement {
                    Placement::Center => ((w - nw) / 2, (h - nh) / 2),
                    Placement::TopLeft => (0, 0),
                };
                if nw < w || nh < h {
                    self.canvas.fill(pad);
                }
                (left, top, nw, nh, r, r)
            }
        };
        if (fw, fh) == (nw, nh) {
            let row = nw as usize * 3;
            let stride = w as usize * 3;
            for (y, src) in frame.data.chunks_exact(row).enumerate() {
                let start = (top as usize + y) * stride + left as usize * 3;
                self.canvas[start..start + row].copy_from_slice(src);
            }
        } else {
            let src = ImageRef::new(fw, fh, frame.data, PixelType::U8x3).map_err(|_| {
                PreprocessError::BadFrame {
                    width: fw,
                    height: fh,
                    len: frame.data.len(),
                }
            })?;
            let mut dst = Image::from_slice_u8(w, h, &mut self.canvas, PixelType::U8x3)
                .map_err(PreprocessError::Canvas)?;
            let mut region = CroppedImageMut::new(&mut dst, left, top, nw, nh)
                .map_err(PreprocessError::Region)?;
            self.resizer
                .resize(&src, &mut region, &self.options)
                .map_err(PreprocessError::Resize)?;
        }
        Ok(Transform {
            scale_x,
            scale_y,
            pad_x: left as f32,
            pad_y: top as f32,
            frame_width: fw,
            frame_height: fh,
        })
    }
}

impl std::fmt::Debug for Preprocessor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Preprocessor")
            .field("spec", &self.spec)
            .finish_non_exhaustive()
    }
}

impl Transform {
    /// Maps a point in model pixels to frame pixels, clipped to the frame.
    pub fn to_frame(&self, x: f32, y: f32) -> (f32, f32) {
        (
            ((x - self.pad_x) / self.scale_x).clamp(0.0, self.frame_width as f32),
            ((y - self.pad_y) / self.scale_y).clamp(0.0, self.frame_height as f32),
        )
    }
}

/// Interleaved RGB canvas -> tensor bytes in `layout`, channels picked by `order`.
fn write_tensor(canvas: &[u8], out: &mut [u8], layout: Layout, order: [usize; 3]) {
    let plane = canvas.len() / 3;
    for (i, px) in canvas.chunks_exact(3).enumerate() {
        for (c, &src) in order.iter().enumerate() {
            let dst = match layout {
                Layout::Nhwc => i * 3 + c,
                Layout::Nchw => c * plane + i,
            };
            out[dst] = px[src];
        }
    }
}

/// Interleaved RGB canvas -> normalised floats in `layout` through per-channel lookup tables.
fn write_tensor_lut(
    canvas: &[u8],
    out: &mut [f32],
    layout: Layout,
    order: [usize; 3],
    luts: &[[f32; 256]; 3],
) {
    let plane = canvas.len() / 3;
    match layout {
        Layout::Nchw => {
            let (p0, rest) = out.split_at_mut(plane);
            let (p1, p2) = rest.split_at_mut(plane);
            for (i, px) in canvas.chunks_exact(3).enumerate() {
                p0[i] = luts[0][px[order[0]] as usize];
                p1[i] = luts[1][px[order[1]] as usize];
                p2[i] = luts[2][px[order[2]] as usize];
            }
        }
        Layout::Nhwc => {
            for (px, o) in canvas.chunks_exact(3).zip(out.chunks_exact_mut(3)) {
                for c in 0..3 {
                    o[c] = luts[c][px[order[c]] as usize];
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::num::NonZeroU32;

    use super::*;
    use crate::manifest::Normalize;

    fn spec(w: u32, h: u32, layout: Layout, dtype: InputType, resize: ResizeMode) -> InputSpec {
        InputSpec {
            name: "in".into(),
            width: NonZeroU32::new(w).unwrap(),
            height: NonZeroU32::new(h).unwrap(),
            layout,
            dtype,
            color: ColorOrder::Rgb,
            resize,
            normalize: None,
        }
    }

    fn solid(w: u32, h: u32, rgb: [u8; 3]) -> Vec<u8> {
        rgb.iter()
            .copied()
            .cycle()
            .take((w * h * 3) as usize)
            .collect()
    }

    #[test]
    fn a_frame_of_the_wrong_length_is_refused() {
        assert!(matches!(
            RgbView::new(2, 2, &[0; 11]),
            Err(PreprocessError::BadFrame { len: 11, .. })
        ));
        assert!(RgbView::new(0, 2, &[]).is_err());
    }

    #[test]
    fn stretch_resize_fills_the_input_and_maps_corners_back() {
        let data = solid(1280, 720, [10, 20, 30]);
        let mut p = Preprocessor::new(&spec(
            300,
            300,
            Layout::Nhwc,
            InputType::Uint8,
            ResizeMode::Stretch,
        ));
        let prepared = p.prepare(RgbView::new(1280, 720, &data).unwrap()).unwrap();
        assert_eq!(prepared.shape, [1, 300, 300, 3]);
        let TensorData::U8(bytes) = prepared.data else {
            panic!("uint8 expected")
        };
        assert!(bytes.chunks_exact(3).all(|px| px == [10, 20, 30]));
        assert_eq!(prepared.transform.to_frame(300.0, 300.0), (1280.0, 720.0));
        assert_eq!(prepared.transform.to_frame(150.0, 150.0), (640.0, 360.0));
    }

    #[test]
    fn letterbox_pads_centred_and_maps_back_through_the_padding() {
        let data = solid(1280, 720, [255, 0, 0]);
        let resize = ResizeMode::Letterbox {
            pad: 114,
            placement: Placement::Center,
        };
        let mut p = Preprocessor::new(&spec(640, 640, Layout::Nchw, InputType::Float32, resize));
        let prepared = p.prepare(RgbView::new(1280, 720, &data).unwrap()).unwrap();
        assert_eq!(prepared.shape, [1, 3, 640, 640]);
        // 1280x720 * 0.5 = 640x360, centred: 140 rows of padding above.
        assert_eq!(prepared.transform.pad_y, 140.0);
        assert_eq!(prepared.transform.pad_x, 0.0);
        let TensorData::F32(f) = prepared.data else {
            panic!("float expected")
        };
        let plane = 640 * 640;
        assert!((f[0] - 114.0 / 255.0).abs() < 1e-6); // top-left is padding
        assert_eq!(f[320 * 640], 1.0); // red plane inside the picture
        assert_eq!(f[plane + 320 * 640], 0.0); // green plane inside the picture
        assert_eq!(prepared.transform.to_frame(320.0, 320.0), (640.0, 360.0));
        assert_eq!(prepared.transform.to_frame(0.0, 0.0), (0.0, 0.0));
    }

    #[test]
    fn a_frame_already_at_model_size_is_copied_exactly() {
        let data: Vec<u8> = (0..4 * 4 * 3).map(|v| v as u8).collect();
        let mut s = spec(4, 4, Layout::Nhwc, InputType::Uint8, ResizeMode::Stretch);
        s.color = ColorOrder::Bgr;
        let mut p = Preprocessor::new(&s);
        let prepared = p.prepare(RgbView::new(4, 4, &data).unwrap()).unwrap();
        let TensorData::U8(bytes) = prepared.data else {
            panic!("uint8 expected")
        };
        assert_eq!(&bytes[..6], &[2, 1, 0, 5, 4, 3]);
    }

    #[test]
    fn normalisation_applies_scale_mean_and_std_per_channel() {
        let data = solid(2, 2, [255, 0, 51]);
        let mut s = spec(2, 2, Layout::Nhwc, InputType::Float32, ResizeMode::Stretch);
        s.normalize = Some(Normalize {
            scale: 1.0 / 255.0,
            mean: [0.5, 0.0, 0.0],
            std: [0.5, 1.0, 0.1],
        });
        let mut p = Preprocessor::new(&s);
        let prepared = p.prepare(RgbView::new(2, 2, &data).unwrap()).unwrap();
        let TensorData::F32(f) = prepared.data else {
            panic!("float expected")
        };
        assert!((f[0] - 1.0).abs() < 1e-6);
        assert!(f[1].abs() < 1e-6);
        assert!((f[2] - 2.0).abs() < 1e-5);
    }
}
