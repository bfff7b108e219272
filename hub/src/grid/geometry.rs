//! Planar geometry on longitude/latitude polygons: containment, distance to a boundary in metres,
//! area, and ring self-intersection.
//!
//! Cells are small (tens to hundreds of metres), so distances and areas use a local
//! equirectangular projection around the point or polygon in question; the error is far below
//! GPS noise at that scale. Pure functions only: this module must not do I/O.

/// Metres per degree of latitude (and of longitude at the equator).
pub(crate) const METRES_PER_DEGREE: f64 = 111_320.0;

/// A position: `[lon, lat]` in WGS84 degrees (GeoJSON order).
pub type Position = [f64; 2];

/// A polygon: an exterior ring and holes, each closed (first position repeated last).
#[derive(Debug, Clone, PartialEq)]
pub struct Polygon {
    /// The outer ring.
    pub exterior: Vec<Position>,
    /// Holes.
    pub holes: Vec<Vec<Position>>,
}

/// One or more polygons making up an area, with their bounding box.
#[derive(Debug, Clone, PartialEq)]
pub struct Shape {
    /// The polygons.
    pub polygons: Vec<Polygon>,
    /// `[min_lon, min_lat]`.
    pub min: Position,
    /// `[max_lon, max_lat]`.
    pub max: Position,
}

impl Shape {
    /// A shape from polygons whose rings are closed and non-empty.
    pub fn new(polygons: Vec<Polygon>) -> Shape {
        let mut min = [f64::INFINITY; 2];
        let mut max = [f64::NEG_INFINITY; 2];
        for p in polygons.iter().flat_map(|p| p.exterior.iter()) {
            min = [min[0].min(p[0]), min[1].min(p[1])];
            max = [max[0].max(p[0]), max[1].max(p[1])];
        }
        Shape { polygons, min, max }
    }

    /// True when `p` lies inside (holes excluded). Points exactly on an edge may go either way.
    pub fn contains(&self, p: Position) -> bool {
        if p[0] < self.min[0] || p[0] > self.max[0] || p[1] < self.min[1] || p[1] > self.max[1] {
            return false;
        }
        self.polygons.iter().any(|poly| {
            ring_contains(&poly.exterior, p) && !poly.holes.iter().any(|h| ring_contains(h, p))
        })
    }

    /// Distance in metres from `p` to the nearest edge of any ring.
    pub fn boundary_distance_m(&self, p: Position) -> f64 {
        let kx = (p[1].to_radians().cos()) * METRES_PER_DEGREE;
        let edges = self
            .rings()
            .flat_map(|ring| ring.windows(2).map(|w| (w[0], w[1])));
        nearest_m2(edges, p, kx).sqrt()
    }

    /// Area in square metres (holes subtracted).
    pub fn area_m2(&self) -> f64 {
        let lat0 = (self.min[1] + self.max[1]) / 2.0;
        let kx = lat0.to_radians().cos() * METRES_PER_DEGREE;
        let ky = METRES_PER_DEGREE;
        let ring_area = |r: &[Position]| {
            let s: f64 = r
                .windows(2)
                .map(|w| w[0][0] * kx * w[1][1] * ky - w[1][0] * kx * w[0][1] * ky)
                .sum();
            (s / 2.0).abs()
        };
        self.polygons
            .iter()
            .map(|p| ring_area(&p.exterior) - p.holes.iter().map(|h| ring_area(h)).sum::<f64>())
            .sum()
    }

    /// True when the two shapes share interior (not merely an edge or a vertex).
    pub fn overlaps(&self, other: &Shape) -> bool {
        if self.max[0] <= other.min[0]
            || other.max[0] <= self.min[0]
            || self.max[1] <= other.min[1]
            || other.max[1] <= self.min[1]
        {
            return false;
        }
        for ra in self.rings() {
            for rb in other.rings() {
                for a in ra.windows(2) {
                    for b in rb.windows(2) {
                        if segments_cross_properly(a[0], a[1], b[0], b[1]) {
                            return true;
                        }
                    }
                }
            }
        }
        let strictly_inside = |s: &Shape, t: &Shape| {
            // vertices, edge midpoints and an interior point: enough for cells that share
            // or partly share edges
            s.rings()
                .flat_map(|r| {
                    r.windows(2).flat_map(|w| {
                        [w[0], [(w[0][0] + w[1][0]) / 2.0, (w[0][1] + w[1][1]) / 2.0]]
                    })
                })
                .chain(s.interior_point())
                .any(|p| t.contains(p) && t.boundary_distance_m(p) > 0.01)
        };
        strictly_inside(self, other) || strictly_inside(other, self)
    }

    /// A point well inside the first polygon, when its vertex average is inside it.
    fn interior_point(&self) -> Option<Position> {
        let ring = &self.polygons.first()?.exterior;
        let n = ring.len().saturating_sub(1).max(1) as f64;
        let c = ring
            .iter()
            .take(ring.len().saturating_sub(1))
            .fold([0.0, 0.0], |acc, p| [acc[0] + p[0] / n, acc[1] + p[1] / n]);
        self.contains(c).then_some(c)
    }

    fn rings(&self) -> impl Iterator<Item = &Vec<Position>> {
        self.polygons
            .iter()
            .flat_map(|p| std::iter::once(&p.exterior).chain(p.holes.iter()))
    }
}

/// The first pair of edges of a closed ring that cross or touch (other than neighbours sharing
/// their common vertex), as edge indices.
pub fn ring_self_intersection(ring: &[Position]) -> Option<(usize, usize)> {
    let n = ring.len().saturating_sub(1);
    for i in 0..n {
        let (a, b) = (ring[i], ring[i + 1]);
        for j in (i + 1)..n {
            let adjacent = j == i + 1 || (i == 0 && j == n - 1);
            let (c, d) = (ring[j], ring[j + 1]);
            if adjacent {
                // neighbours may only share their common vertex: folding back on itself counts
                if collinear_overlap(a, b, c, d) {
                    return Some((i, j));
                }
                continue;
            }
            if segments_intersect(a, b, c, d) {
                return Some((i, j));
            }
        }
    }
    None
}

/// Ray-crossing containment test for one closed ring.
pub(crate) fn ring_contains(ring: &[Position], p: Position) -> bool {
    crosses_odd(ring.windows(2).map(|w| (w[0], w[1])), p)
}

/// Whether a ray from `p` crosses `edges` an odd number of times: inside the area they bound
/// (a polygon's rings together: holes excluded).
pub(crate) fn crosses_odd(
    edges: impl IntoIterator<Item = (Position, Position)>,
    p: Position,
) -> bool {
    let mut inside = false;
    for (a, b) in edges {
        if (a[1] > p[1]) != (b[1] > p[1])
            && p[0] < a[0] + (p[1] - a[1]) / (b[1] - a[1]) * (b[0] - a[0])
        {
            inside = !inside;
        }
    }
    inside
}

/// The squared distance in m² from `p` to the nearest of `edges` (longitude scaled by `kx`
/// metres per degree at `p`, latitude by [`METRES_PER_DEGREE`]).
pub(crate) fn nearest_m2(
    edges: impl IntoIterator<Item = (Position, Position)>,
    p: Position,
    kx: f64,
) -> f64 {
    let ky = METRES_PER_DEGREE;
    edges
        .into_iter()
        .map(|(a, b)| {
            origin_to_segment2(
                [(a[0] - p[0]) * kx, (a[1] - p[1]) * ky],
                [(b[0] - p[0]) * kx, (b[1] - p[1]) * ky],
            )
        })
        .fold(f64::INFINITY, f64::min)
}

/// The squared distance from the origin to the segment a–b.
fn origin_to_segment2(a: Position, b: Position) -> f64 {
    let d = [b[0] - a[0], b[1] - a[1]];
    let len2 = d[0] * d[0] + d[1] * d[1];
    let t = if len2 == 0.0 {
        0.0
    } else {
        (-(a[0] * d[0] + a[1] * d[1]) / len2).clamp(0.0, 1.0)
    };
    let q = [a[0] + t * d[0], a[1] + t * d[1]];
    q[0] * q[0] + q[1] * q[1]
}

fn orient(a: Position, b: Position, c: Position) -> f64 {
    (b[0] - a[0]) * (c[1] - a[1]) - (b[1] - a[1]) * (c[0] - a[0])
}

fn sign(v: f64) -> i8 {
    // degrees: 1e-18 in squared degrees is far below a millimetre
    if v > 1e-18 {
        1
    } else if v < -1e-18 {
        -1
    } else {
        0
    }
}

fn on_segment(a: Position, b: Position, p: Position) -> bool {
    p[0] >= a[0].min(b[0])
        && p[0] <= a[0].max(b[0])
        && p[1] >= a[1].min(b[1])
        && p[1] <= a[1].max(b[1])
}

fn segments_intersect(a: Position, b: Position, c: Position, d: Position) -> bool {
    let (o1, o2) = (sign(orient(a, b, c)), sign(orient(a, b, d)));
    let (o3, o4) = (sign(orient(c, d, a)), sign(orient(c, d, b)));
    if o1 * o2 < 0 && o3 * o4 < 0 {
        return true;
    }
    (o1 == 0 && on_segment(a, b, c))
        || (o2 == 0 && on_segment(a, b, d))
        || (o3 == 0 && on_segment(c, d, a))
        || (o4 == 0 && on_segment(c, d, b))
}

fn segments_cross_properly(a: Position, b: Position, c: Position, d: Position) -> bool {
    let (o1, o2) = (sign(orient(a, b, c)), sign(orient(a, b, d)));
    let (o3, o4) = (sign(orient(c, d, a)), sign(orient(c, d, b)));
    o1 * o2 < 0 && o3 * o4 < 0
}

fn collinear_overlap(a: Position, b: Position, c: Position, d: Position) -> bool {
    // adjacent edges a-b, c-d sharing one vertex: they fold back when collinear and pointing
    // back over each other
    if sign(orient(a, b, c)) != 0 || sign(orient(a, b, d)) != 0 {
        return false;
    }
    let ab = [b[0] - a[0], b[1] - a[1]];
    let cd = [d[0] - c[0], d[1] - c[1]];
    ab[0] * cd[0] + ab[1] * cd[1] < 0.0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn square(x0: f64, y0: f64, s: f64) -> Shape {
        Shape::new(vec![Polygon {
            exterior: vec![
                [x0, y0],
                [x0 + s, y0],
                [x0 + s, y0 + s],
                [x0, y0 + s],
                [x0, y0],
            ],
            holes: vec![],
        }])
    }

    #[test]
    fn containment_excludes_holes() {
        let mut s = square(0.0, 0.0, 1.0);
        s.polygons[0].holes.push(vec![
            [0.4, 0.4],
            [0.6, 0.4],
            [0.6, 0.6],
            [0.4, 0.6],
            [0.4, 0.4],
        ]);
        assert!(s.contains([0.2, 0.2]));
        assert!(!s.contains([0.5, 0.5]));
        assert!(!s.contains([1.5, 0.5]));
    }

    #[test]
    fn a_bowtie_ring_is_self_intersecting_and_a_square_is_not() {
        let bowtie = vec![[0.0, 0.0], [1.0, 1.0], [1.0, 0.0], [0.0, 1.0], [0.0, 0.0]];
        assert!(ring_self_intersection(&bowtie).is_some());
        assert!(ring_self_intersection(&square(0.0, 0.0, 1.0).polygons[0].exterior).is_none());
    }

    #[test]
    fn neighbours_sharing_an_edge_do_not_overlap_but_shifted_ones_do() {
        let a = square(120.0, 30.0, 0.001);
        assert!(!a.overlaps(&square(120.001, 30.0, 0.001)));
        assert!(a.overlaps(&square(120.0005, 30.0, 0.001)));
        assert!(
            a.overlaps(&square(120.0, 30.0, 0.001)),
            "identical cells overlap"
        );
    }

    #[test]
    fn boundary_distance_and_area_are_in_metres() {
        let s = square(120.0, 0.0, 0.001);
        let d = s.boundary_distance_m([120.0005, 0.0001]);
        assert!((d - 11.132).abs() < 0.01, "{d}");
        let area = s.area_m2();
        assert!((area - 111.32 * 111.32).abs() < 1.0, "{area}");
    }
}
