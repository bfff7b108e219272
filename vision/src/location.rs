//! Where an object is on the map: a 4-point homography from normalised image coordinates to
//! `(lat, lon)`, solved once from the installer's point pairs.
//!
//! Pure arithmetic: this module must not know about cameras or events.

/// A projective map from the image plane to the map plane.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Homography {
    /// Row-major 3x3 matrix with h[8] = 1.
    h: [f64; 9],
}

impl Homography {
    /// Solves the homography taking `image[i]` (x, y) to `map[i]` (lat, lon). `None` when the
    /// points are degenerate (repeated, or three on a line).
    pub fn from_points(image: &[[f64; 2]; 4], map: &[[f64; 2]; 4]) -> Option<Homography> {
        for i in 0..4 {
            for j in (i + 1)..4 {
                for k in (j + 1)..4 {
                    let (a, b, c) = (image[i], image[j], image[k]);
                    let cross = (b[0] - a[0]) * (c[1] - a[1]) - (b[1] - a[1]) * (c[0] - a[0]);
                    if cross.abs() < 1e-9 {
                        return None;
                    }
                }
            }
        }
        // Unknowns h0..h7; two equations per point pair.
        let mut m = [[0.0f64; 9]; 8];
        for i in 0..4 {
            let [x, y] = image[i];
            let [u, v] = map[i];
            m[2 * i] = [x, y, 1.0, 0.0, 0.0, 0.0, -u * x, -u * y, u];
            m[2 * i + 1] = [0.0, 0.0, 0.0, x, y, 1.0, -v * x, -v * y, v];
        }
        let solution = solve(m)?;
        let mut h = [1.0; 9];
        h[..8].copy_from_slice(&solution);
        let homography = Homography { h };
        homography
            .h
            .iter()
            .all(|v| v.is_finite())
            .then_some(homography)
    }

    /// The map point `(lat, lon)` of the image point `(x, y)`; `None` on the horizon line.
    pub fn apply(&self, x: f64, y: f64) -> Option<(f64, f64)> {
        let h = &self.h;
        let w = h[6] * x + h[7] * y + h[8];
        if w.abs() < 1e-12 {
            return None;
        }
        Some((
            (h[0] * x + h[1] * y + h[2]) / w,
            (h[3] * x + h[4] * y + h[5]) / w,
        ))
    }
}

/// Gauss-Jordan elimination with partial pivoting on an 8x9 augmented matrix.
fn solve(mut m: [[f64; 9]; 8]) -> Option<[f64; 8]> {
    for col in 0..8 {
        let pivot = (col..8).max_by(|&a, &b| m[a][col].abs().total_cmp(&m[b][col].abs()))?;
        if m[pivot][col].abs() < 1e-12 {
            return None;
        }
        m.swap(col, pivot);
        let p = m[col][col];
        for v in &mut m[col] {
            *v /= p;
        }
        let pivot_row = m[col];
        for (r, row) in m.iter_mut().enumerate() {
            let f = row[col];
            if r != col && f != 0.0 {
                for (v, p) in row.iter_mut().zip(pivot_row).skip(col) {
                    *v -= f * p;
                }
            }
        }
    }
    let mut out = [0.0; 8];
    for (i, o) in out.iter_mut().enumerate() {
        *o = m[i][8];
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_four_calibration_points_map_exactly_and_the_centre_lies_between() {
        let image = [[0.1, 0.9], [0.9, 0.9], [0.7, 0.4], [0.3, 0.4]];
        let map = [
            [39.90000, 116.40000],
            [39.90000, 116.40020],
            [39.90030, 116.40020],
            [39.90030, 116.40000],
        ];
        let h = Homography::from_points(&image, &map).unwrap();
        for (p, q) in image.iter().zip(&map) {
            let (lat, lon) = h.apply(p[0], p[1]).unwrap();
            assert!((lat - q[0]).abs() < 1e-9 && (lon - q[1]).abs() < 1e-9);
        }
        let (lat, lon) = h.apply(0.5, 0.65).unwrap();
        assert!(lat > 39.9 && lat < 39.9003, "{lat}");
        assert!((lon - 116.4001).abs() < 1e-6, "{lon}");
    }

    #[test]
    fn collinear_points_are_refused() {
        let image = [[0.1, 0.1], [0.2, 0.2], [0.3, 0.3], [0.9, 0.1]];
        let map = [[0.0, 0.0], [0.0, 1.0], [1.0, 1.0], [1.0, 0.0]];
        assert!(Homography::from_points(&image, &map).is_none());
    }
}
