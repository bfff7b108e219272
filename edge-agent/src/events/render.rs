//! Evidence rendering: privacy blur, boxes and zone drawn on the snapshot, JPEG encoding.
//!
//! [`EvidenceRenderer::render`] takes the frame by value and blurs the private regions in place
//! before anything else happens to it, so the unblurred pixels never reach an encoder, a file or
//! the store. The blur is a three-pass separable box blur (close to a Gaussian) confined to each
//! region: pixels outside every region are left bit-for-bit unchanged.
//!
//! This module must not read or write files and must not decide which objects are persons (the
//! detector's labels do, through [`Mark::private`]).

use std::collections::HashSet;
use std::io::Cursor;

use image::codecs::jpeg::JpegEncoder;
use image::{Rgb, RgbImage};
use protocol::CategoryCode;

use super::EventsError;
use crate::store::EvidenceFile;

/// A rectangle in frame pixels.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PixelRect {
    /// Left edge.
    pub x: u32,
    /// Top edge.
    pub y: u32,
    /// Width.
    pub width: u32,
    /// Height.
    pub height: u32,
}

impl PixelRect {
    /// The rectangle clipped to a `width` × `height` frame (`None` when nothing is left).
    pub fn clip(&self, width: u32, height: u32) -> Option<PixelRect> {
        let x1 = self.x.saturating_add(self.width).min(width);
        let y1 = self.y.saturating_add(self.height).min(height);
        (self.x < x1 && self.y < y1).then(|| PixelRect {
            x: self.x,
            y: self.y,
            width: x1 - self.x,
            height: y1 - self.y,
        })
    }

    /// True when the pixel lies inside.
    pub fn contains(&self, x: u32, y: u32) -> bool {
        x >= self.x && y >= self.y && x - self.x < self.width && y - self.y < self.height
    }
}

/// An object drawn on the evidence.
#[derive(Debug, Clone, PartialEq)]
pub struct Mark {
    /// Where.
    pub rect: PixelRect,
    /// The detector's label (`person`, `car`, ...).
    pub label: String,
    /// Detection confidence, 0 to 1.
    pub score: f32,
    /// A person or a face: blurred unless the event's category needs it visible.
    pub private: bool,
}

/// What an observation saw, to become an evidence image.
#[derive(Debug, Clone)]
pub struct Snapshot {
    /// The frame (owned: rendering blurs it in place).
    pub frame: RgbImage,
    /// Detected objects.
    pub marks: Vec<Mark>,
    /// The rule's zone as a closed polygon in frame pixels (empty: no zone).
    pub zone: Vec<(u32, u32)>,
}

/// Turns snapshots into evidence files.
#[derive(Debug, Clone)]
pub struct EvidenceRenderer {
    jpeg_quality: u8,
    privacy_blur: bool,
    blur_radius_px: u32,
    unblurred: HashSet<CategoryCode>,
}

impl EvidenceRenderer {
    /// A renderer. `unblurred` lists categories whose evidence keeps persons visible.
    pub fn new(
        jpeg_quality: u8,
        privacy_blur: bool,
        blur_radius_px: u32,
        unblurred: HashSet<CategoryCode>,
    ) -> Self {
        EvidenceRenderer {
            jpeg_quality: jpeg_quality.clamp(1, 100),
            privacy_blur,
            blur_radius_px: blur_radius_px.max(1),
            unblurred,
        }
    }

    /// Whether evidence of `category` gets its private regions blurred.
    pub fn blurs(&self, category: &CategoryCode) -> bool {
        self.privacy_blur && !self.unblurred.contains(category)
    }

    /// Blurs private marks (per category policy), draws the zone and boxes, encodes a JPEG.
    ///
    /// # Errors
    /// [`EventsError::Encode`] when the JPEG encoder fails.
    pub fn render(
        &self,
        category: &CategoryCode,
        snapshot: Snapshot,
    ) -> Result<EvidenceFile, EventsError> {
        let Snapshot {
            mut frame,
            marks,
            zone,
        } = snapshot;
        if self.blurs(category) {
            let regions: Vec<PixelRect> =
                marks.iter().filter(|m| m.private).map(|m| m.rect).collect();
            blur_regions(&mut frame, &regions, self.blur_radius_px);
        }
        draw_polygon(&mut frame, &zone, ZONE_COLOUR);
        for mark in &marks {
            let colour = if mark.private {
                PRIVATE_COLOUR
            } else {
                OBJECT_COLOUR
            };
            draw_rect(&mut frame, mark.rect, colour);
        }
        let mut jpeg = Vec::new();
        JpegEncoder::new_with_quality(&mut Cursor::new(&mut jpeg), self.jpeg_quality)
            .encode_image(&frame)
            .map_err(|source| EventsError::Encode { source })?;
        Ok(EvidenceFile::new(jpeg, "image/jpeg"))
    }

    /// The status page's thumbnail of a live frame: private marks blurred whenever privacy blur
    /// is on (no category decides here), every zone and mark drawn, JPEG encoded.
    ///
    /// # Errors
    /// [`EventsError::Encode`] when the JPEG encoder fails.
    pub fn render_overview(
        &self,
        mut frame: RgbImage,
        zones: &[Vec<(u32, u32)>],
        marks: &[Mark],
    ) -> Result<Vec<u8>, EventsError> {
        if self.privacy_blur {
            let regions: Vec<PixelRect> =
                marks.iter().filter(|m| m.private).map(|m| m.rect).collect();
            blur_regions(&mut frame, &regions, self.blur_radius_px);
        }
        for zone in zones {
            draw_polygon(&mut frame, zone, ZONE_COLOUR);
        }
        for mark in marks {
            let colour = if mark.private {
                PRIVATE_COLOUR
            } else {
                OBJECT_COLOUR
            };
            draw_rect(&mut frame, mark.rect, colour);
        }
        let mut jpeg = Vec::new();
        JpegEncoder::new_with_quality(&mut Cursor::new(&mut jpeg), self.jpeg_quality)
            .encode_image(&frame)
            .map_err(|source| EventsError::Encode { source })?;
        Ok(jpeg)
    }
}

/// Blurs each region of `frame` in place with a three-pass box blur of `radius` pixels, reading
/// and writing only pixels inside the region (edges clamp), so nothing outside changes.
pub fn blur_regions(frame: &mut RgbImage, regions: &[PixelRect], radius: u32) {
    let (width, height) = frame.dimensions();
    for region in regions.iter().filter_map(|r| r.clip(width, height)) {
        let (w, h) = (region.width as usize, region.height as usize);
        let mut buf: Vec<[u16; 3]> = Vec::with_capacity(w * h);
        for y in region.y..region.y + region.height {
            for x in region.x..region.x + region.width {
                let p = frame.get_pixel(x, y).0;
                buf.push([u16::from(p[0]), u16::from(p[1]), u16::from(p[2])]);
            }
        }
        let r = radius as usize;
        let mut line = Vec::with_capacity(w.max(h));
        for _ in 0..3 {
            for row in 0..h {
                line.clear();
                line.extend((0..w).map(|i| buf[row * w + i]));
                box_line(&line, r, |i, v| buf[row * w + i] = v);
            }
            for col in 0..w {
                line.clear();
                line.extend((0..h).map(|i| buf[i * w + col]));
                box_line(&line, r, |i, v| buf[i * w + col] = v);
            }
        }
        for (i, v) in buf.iter().enumerate() {
            let x = region.x + (i % w) as u32;
            let y = region.y + (i / w) as u32;
            frame.put_pixel(x, y, Rgb([v[0] as u8, v[1] as u8, v[2] as u8]));
        }
    }
}

/// One pass of a moving-average of width `2r + 1` along a line, edges clamped.
fn box_line(line: &[[u16; 3]], r: usize, mut out: impl FnMut(usize, [u16; 3])) {
    let n = line.len();
    if n == 0 {
        return;
    }
    let at = |i: isize| line[i.clamp(0, n as isize - 1) as usize];
    let window = (2 * r + 1) as u32;
    let mut sum = [0u32; 3];
    for i in -(r as isize)..=(r as isize) {
        let p = at(i);
        for c in 0..3 {
            sum[c] += u32::from(p[c]);
        }
    }
    for i in 0..n {
        out(
            i,
            [
                ((sum[0] + window / 2) / window) as u16,
                ((sum[1] + window / 2) / window) as u16,
                ((sum[2] + window / 2) / window) as u16,
            ],
        );
        let add = at(i as isize + r as isize + 1);
        let sub = at(i as isize - r as isize);
        for c in 0..3 {
            sum[c] = sum[c] + u32::from(add[c]) - u32::from(sub[c]);
        }
    }
}

fn draw_rect(frame: &mut RgbImage, rect: PixelRect, colour: Rgb<u8>) {
    let (width, height) = frame.dimensions();
    let Some(r) = rect.clip(width, height) else {
        return;
    };
    let t = LINE_WIDTH_PX.min(r.width).min(r.height);
    for y in r.y..r.y + r.height {
        for x in r.x..r.x + r.width {
            let edge =
                x < r.x + t || x >= r.x + r.width - t || y < r.y + t || y >= r.y + r.height - t;
            if edge {
                frame.put_pixel(x, y, colour);
            }
        }
    }
}

fn draw_polygon(frame: &mut RgbImage, points: &[(u32, u32)], colour: Rgb<u8>) {
    if points.len() < 2 {
        return;
    }
    for (i, &a) in points.iter().enumerate() {
        let b = points[(i + 1) % points.len()];
        draw_line(frame, a, b, colour);
    }
}

/// Bresenham, `LINE_WIDTH_PX` thick, clipped to the frame.
fn draw_line(frame: &mut RgbImage, a: (u32, u32), b: (u32, u32), colour: Rgb<u8>) {
    let (width, height) = frame.dimensions();
    let (mut x, mut y) = (i64::from(a.0), i64::from(a.1));
    let (x1, y1) = (i64::from(b.0), i64::from(b.1));
    let dx = (x1 - x).abs();
    let dy = -(y1 - y).abs();
    let sx = if x < x1 { 1 } else { -1 };
    let sy = if y < y1 { 1 } else { -1 };
    let mut err = dx + dy;
    loop {
        for oy in 0..i64::from(LINE_WIDTH_PX) {
            for ox in 0..i64::from(LINE_WIDTH_PX) {
                let (px, py) = (x + ox, y + oy);
                if px >= 0 && py >= 0 && px < i64::from(width) && py < i64::from(height) {
                    frame.put_pixel(px as u32, py as u32, colour);
                }
            }
        }
        if x == x1 && y == y1 {
            break;
        }
        let e2 = 2 * err;
        if e2 >= dy {
            err += dy;
            x += sx;
        }
        if e2 <= dx {
            err += dx;
            y += sy;
        }
    }
}

const LINE_WIDTH_PX: u32 = 2;
const ZONE_COLOUR: Rgb<u8> = Rgb([0, 200, 255]);
const OBJECT_COLOUR: Rgb<u8> = Rgb([255, 48, 48]);
const PRIVATE_COLOUR: Rgb<u8> = Rgb([255, 210, 0]);

#[cfg(test)]
mod tests {
    use super::*;

    fn gradient(w: u32, h: u32) -> RgbImage {
        RgbImage::from_fn(w, h, |x, y| {
            Rgb([
                (x * 7 % 256) as u8,
                (y * 13 % 256) as u8,
                ((x ^ y) % 256) as u8,
            ])
        })
    }

    #[test]
    fn blur_changes_only_pixels_inside_the_region() {
        let original = gradient(64, 48);
        let mut frame = original.clone();
        let region = PixelRect {
            x: 10,
            y: 8,
            width: 20,
            height: 16,
        };
        blur_regions(&mut frame, &[region], 3);
        let mut changed = 0;
        for (x, y, p) in frame.enumerate_pixels() {
            if region.contains(x, y) {
                changed += usize::from(p != original.get_pixel(x, y));
            } else {
                assert_eq!(
                    p,
                    original.get_pixel(x, y),
                    "pixel ({x}, {y}) outside changed"
                );
            }
        }
        assert!(changed > 20 * 16 / 2, "only {changed} pixels blurred");
    }

    #[test]
    fn regions_beyond_the_frame_are_clipped() {
        let mut frame = gradient(16, 16);
        let far = PixelRect {
            x: 100,
            y: 100,
            width: 5,
            height: 5,
        };
        let edge = PixelRect {
            x: 12,
            y: 12,
            width: 50,
            height: 50,
        };
        blur_regions(&mut frame, &[far, edge], 2);
        assert_eq!(far.clip(16, 16), None);
        assert_eq!(edge.clip(16, 16).map(|r| (r.width, r.height)), Some((4, 4)));
    }

    #[test]
    fn a_flat_region_stays_flat() {
        let mut frame = RgbImage::from_pixel(20, 20, Rgb([90, 120, 200]));
        blur_regions(
            &mut frame,
            &[PixelRect {
                x: 0,
                y: 0,
                width: 20,
                height: 20,
            }],
            4,
        );
        assert!(frame.pixels().all(|p| *p == Rgb([90, 120, 200])));
    }
}
