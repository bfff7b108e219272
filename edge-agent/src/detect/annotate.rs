//! Drawing detections onto an image (for `edge-agent detect` and the event evidence): box outlines and a label ("person 0.65") on a filled tab,
//! with a built-in 5x7 bitmap font (upper case, digits, a few signs) so no font file is needed.
//!
//! Pure pixel work on an `image::RgbImage`; this module must not read or write files.

use image::{Rgb, RgbImage};
use models::Detection;

/// Distinct colours, picked by class index.
const PALETTE: [[u8; 3]; 8] = [
    [255, 56, 56],
    [255, 157, 151],
    [255, 112, 31],
    [255, 178, 29],
    [207, 210, 49],
    [72, 249, 10],
    [26, 147, 52],
    [0, 194, 255],
];

/// Glyph rows, 5 columns each (`#` = ink), 7 rows per glyph.
const GLYPHS: &[(char, &str)] = &[
    ('A', ".###.#...##...#######...##...##...#"),
    ('B', "####.#...##...#####.#...##...#####."),
    ('C', ".###.#...##....#....#....#...#.###."),
    ('D', "####.#...##...##...##...##...#####."),
    ('E', "######....#....####.#....#....#####"),
    ('F', "######....#....####.#....#....#...."),
    ('G', ".###.#...##....#.####...##...#.####"),
    ('H', "#...##...##...#######...##...##...#"),
    ('I', ".###...#....#....#....#....#...###."),
    ('J', "..###...#....#....#....#.#..#..##.."),
    ('K', "#...##..#.#.#..##...#.#..#..#.#...#"),
    ('L', "#....#....#....#....#....#....#####"),
    ('M', "#...###.###.#.##.#.##...##...##...#"),
    ('N', "#...##...###..##.#.##..###...##...#"),
    ('O', ".###.#...##...##...##...##...#.###."),
    ('P', "####.#...##...#####.#....#....#...."),
    ('Q', ".###.#...##...##...##.#.##..#..##.#"),
    ('R', "####.#...##...#####.#.#..#..#.#...#"),
    ('S', ".#####....#.....###.....#....#####."),
    ('T', "#####..#....#....#....#....#....#.."),
    ('U', "#...##...##...##...##...##...#.###."),
    ('V', "#...##...##...##...##...#.#.#...#.."),
    ('W', "#...##...##...##.#.##.#.##.#.#.#.#."),
    ('X', "#...##...#.#.#...#...#.#.#...##...#"),
    ('Y', "#...##...#.#.#...#....#....#....#.."),
    ('Z', "#####....#...#...#...#...#....#####"),
    ('0', ".###.#...##..###.#.###..##...#.###."),
    ('1', "..#...##....#....#....#....#...###."),
    ('2', ".###.#...#....#...#...#...#...#####"),
    ('3', "####.....#....#.###.....#....#####."),
    ('4', "...#...##..#.#.#..#.#####...#....#."),
    ('5', "######....####.....#....##...#.###."),
    ('6', "..##..#...#....####.#...##...#.###."),
    ('7', "#####....#...#...#...#....#....#..."),
    ('8', ".###.#...##...#.###.#...##...#.###."),
    ('9', ".###.#...##...#.####....#...#..##.."),
    ('.', ".........................##...##..."),
    ('-', "...............#####..............."),
    ('_', "..............................#####"),
    (':', ".....##...##..........##...##......"),
    (' ', "..................................."),
    ('?', ".###.#...#....#...#...#.........#.."),
];

/// Draws every detection's box and label onto `img`.
pub fn draw(img: &mut RgbImage, detections: &[Detection]) {
    let short_side = img.width().min(img.height());
    let thickness = (short_side / 300).max(2);
    let scale = (short_side / 400).max(1);
    for d in detections {
        let colour = Rgb(PALETTE[d.class % PALETTE.len()]);
        let (x1, y1) = (d.bbox.x1.round() as i64, d.bbox.y1.round() as i64);
        let (x2, y2) = (d.bbox.x2.round() as i64, d.bbox.y2.round() as i64);
        for t in 0..i64::from(thickness) {
            outline(img, x1 + t, y1 + t, x2 - t, y2 - t, colour);
        }
        label_tab(
            img,
            x1,
            y1,
            &format!("{} {:.2}", d.label, d.score),
            scale,
            colour,
        );
    }
}

/// Draws `text` in black on a tab of `colour` whose left edge is `x1`: above `y1`, or just below
/// it when there is no room above (a box touching the top edge). `scale` is pixels per glyph dot.
pub(crate) fn label_tab(
    img: &mut RgbImage,
    x1: i64,
    y1: i64,
    text: &str,
    scale: u32,
    colour: Rgb<u8>,
) {
    let (tw, th) = text_size(text, scale);
    let ty = if y1 >= i64::from(th) {
        y1 - i64::from(th)
    } else {
        y1
    };
    fill(img, x1, ty, x1 + i64::from(tw), ty + i64::from(th), colour);
    text_at(
        img,
        x1 + i64::from(scale),
        ty + i64::from(scale),
        text,
        scale,
        Rgb([0, 0, 0]),
    );
}

/// Width and height of `text` with its 1-glyph-pixel margin, in image pixels.
fn text_size(text: &str, scale: u32) -> (u32, u32) {
    let chars = text.chars().count() as u32;
    ((chars * 6 + 1) * scale, 9 * scale)
}

fn glyph(c: char) -> &'static str {
    let c = c.to_ascii_uppercase();
    GLYPHS
        .iter()
        .find(|(g, _)| *g == c)
        .or_else(|| GLYPHS.iter().find(|(g, _)| *g == '?'))
        .map_or("", |(_, rows)| rows)
}

fn text_at(img: &mut RgbImage, x: i64, y: i64, text: &str, scale: u32, colour: Rgb<u8>) {
    let s = i64::from(scale);
    for (i, c) in text.chars().enumerate() {
        let gx = x + i as i64 * 6 * s;
        for (k, ink) in glyph(c).bytes().enumerate() {
            if ink == b'#' {
                let (col, row) = ((k % 5) as i64, (k / 5) as i64);
                fill(
                    img,
                    gx + col * s,
                    y + row * s,
                    gx + (col + 1) * s,
                    y + (row + 1) * s,
                    colour,
                );
            }
        }
    }
}

/// One-pixel rectangle outline, clipped to the image.
fn outline(img: &mut RgbImage, x1: i64, y1: i64, x2: i64, y2: i64, colour: Rgb<u8>) {
    if x2 < x1 || y2 < y1 {
        return;
    }
    fill(img, x1, y1, x2 + 1, y1 + 1, colour);
    fill(img, x1, y2, x2 + 1, y2 + 1, colour);
    fill(img, x1, y1, x1 + 1, y2 + 1, colour);
    fill(img, x2, y1, x2 + 1, y2 + 1, colour);
}

/// Fills `[x1, x2) x [y1, y2)`, clipped to the image.
fn fill(img: &mut RgbImage, x1: i64, y1: i64, x2: i64, y2: i64, colour: Rgb<u8>) {
    let (w, h) = (i64::from(img.width()), i64::from(img.height()));
    for y in y1.max(0)..y2.min(h) {
        for x in x1.max(0)..x2.min(w) {
            // Clipped to the image bounds above, so the casts are exact.
            img.put_pixel(x as u32, y as u32, colour);
        }
    }
}

#[cfg(test)]
mod tests {
    use models::BBox;

    use super::*;

    #[test]
    fn every_glyph_has_seven_rows_of_five() {
        for (c, rows) in GLYPHS {
            assert_eq!(rows.len(), 35, "glyph {c:?}");
        }
    }

    #[test]
    fn a_detection_draws_its_outline_and_label_and_nothing_elsewhere() {
        let mut img = RgbImage::new(200, 200);
        let d = Detection {
            class: 0,
            label: "cup".into(),
            score: 0.5,
            bbox: BBox {
                x1: 50.0,
                y1: 60.0,
                x2: 150.0,
                y2: 160.0,
            },
        };
        draw(&mut img, &[d]);
        let red = Rgb(PALETTE[0]);
        assert_eq!(*img.get_pixel(50, 100), red); // left edge
        assert_eq!(*img.get_pixel(150, 100), red); // right edge
        assert_eq!(*img.get_pixel(100, 100), Rgb([0, 0, 0])); // inside untouched
        assert_eq!(*img.get_pixel(10, 10), Rgb([0, 0, 0])); // far away untouched
        assert_eq!(*img.get_pixel(50, 55), red); // label tab above the box, left of its text
    }

    #[test]
    fn boxes_beyond_the_image_are_clipped_without_panicking() {
        let mut img = RgbImage::new(10, 10);
        let d = Detection {
            class: 9,
            label: "person".into(),
            score: 0.9,
            bbox: BBox {
                x1: -5.0,
                y1: -5.0,
                x2: 50.0,
                y2: 50.0,
            },
        };
        draw(&mut img, &[d]);
    }
}
