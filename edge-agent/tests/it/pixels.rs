//! Pixel checks on evidence images, shared by these tests and the end-to-end camera tests
//! (`tests/tests/camera.rs` includes this file by path), so both judge blur the same way.

use edge_agent::events::PixelRect;
use image::RgbImage;

/// Mean absolute difference per channel of `a` and `b` over `rect`.
pub(crate) fn mean_abs_diff(a: &RgbImage, b: &RgbImage, rect: PixelRect) -> f64 {
    let mut sum = 0u64;
    let mut n = 0u64;
    for y in rect.y..rect.y + rect.height {
        for x in rect.x..rect.x + rect.width {
            for c in 0..3 {
                sum += u64::from(a.get_pixel(x, y)[c].abs_diff(b.get_pixel(x, y)[c]));
                n += 1;
            }
        }
    }
    sum as f64 / n.max(1) as f64
}

/// Smaller rect inside `r` (away from the drawn outline); at least 1 × 1.
pub(crate) fn inner(r: PixelRect, by: u32) -> PixelRect {
    let by_x = by.min(r.width.saturating_sub(1) / 2);
    let by_y = by.min(r.height.saturating_sub(1) / 2);
    PixelRect {
        x: r.x + by_x,
        y: r.y + by_y,
        width: r.width - 2 * by_x,
        height: r.height - 2 * by_y,
    }
}

/// Asserts that `a` and `b` are equal pixel for pixel wherever a JPEG encoding of their
/// difference could not reach: in every 16 × 16 block (a 4:2:0 MCU) clear of `regions` grown
/// by one block (chroma up-sampling reads the neighbouring block). Returns the pixels compared.
///
/// # Panics
/// At the first differing pixel, naming it and `what`.
pub(crate) fn assert_equal_away_from(
    a: &RgbImage,
    b: &RgbImage,
    regions: &[PixelRect],
    what: &str,
) -> u64 {
    const BLOCK: u32 = 16;
    assert_eq!(a.dimensions(), b.dimensions(), "{what}: sizes differ");
    let near = |x: u32, y: u32| {
        let (bx, by) = (x / BLOCK * BLOCK, y / BLOCK * BLOCK);
        regions.iter().any(|r| {
            let (x0, y0) = (r.x.saturating_sub(BLOCK), r.y.saturating_sub(BLOCK));
            let (x1, y1) = (r.x + r.width + BLOCK, r.y + r.height + BLOCK);
            bx < x1 && bx + BLOCK > x0 && by < y1 && by + BLOCK > y0
        })
    };
    let mut compared = 0;
    for (x, y, p) in a.enumerate_pixels() {
        if !near(x, y) {
            assert_eq!(p, b.get_pixel(x, y), "{what}: ({x}, {y}) differs");
            compared += 1;
        }
    }
    compared
}
