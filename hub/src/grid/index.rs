//! The spatial index and the point → cell query.
//!
//! - Every cell's outline is *prepared*: all edges of its rings (exterior and holes of all its
//!   polygons) copied into one flat array, cell after cell. Containment is an even-odd crossing
//!   count over that slice (the same as "inside an exterior and outside its holes" for valid
//!   cells, which import guarantees) and edge distance a minimum over the same slice — no
//!   pointer chasing through polygons and rings on the hot path.
//! - Point lookups go through a *bucket directory*: a uniform grid over the cells' extent whose
//!   buckets are about the median cell's size, each listing the cells whose bounding box meets
//!   it (bounding box and edge slice inline). A lookup reads one to four buckets. Cells that
//!   would span more than [`BIG_CELL_BUCKETS`] buckets (a park, a lake) are kept out of the
//!   directory and found through a small R-tree instead, so odd sizes cost neither memory nor
//!   speed.
//! - Area queries (import's overlap check) go through the same directory and R-tree.
//!
//! Measured in `cargo bench -p hub --bench grid` against a scan. One envelope query per lookup:
//! the envelope is the point grown by the edge distance, so the entries it yields are exactly
//! the cells that may contain the point or have an edge near it; a point deep inside a cell
//! allocates nothing. This module only reads the grid; it must not change cells or know about
//! cases.

use rstar::primitives::{GeomWithData, Rectangle};
use rstar::{AABB, RTree};

use super::geometry::{METRES_PER_DEGREE, Position, crosses_odd, nearest_m2};
use super::{Cell, Grid, Located};

/// A cell spanning more buckets than this is found through the R-tree of big cells.
const BIG_CELL_BUCKETS: usize = 16;

/// An edge `[ax, ay, bx, by]` in degrees.
type Edge = [f64; 4];

/// A cell as the lookup sees it: bounding box, index, and its slice of [`Index::edges`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub(super) struct Entry {
    min: Position,
    max: Position,
    cell: u32,
    start: u32,
    end: u32,
}

/// The uniform bucket grid.
#[derive(Debug, Clone, Default)]
struct Directory {
    origin: Position,
    bucket: [f64; 2],
    nx: usize,
    ny: usize,
    /// Bucket `b` lists `items[offsets[b]..offsets[b + 1]]`.
    offsets: Vec<u32>,
    items: Vec<Entry>,
}

impl Directory {
    /// The bucket column and row holding `p`, clamped to the directory (None when empty).
    fn bucket_of(&self, p: Position) -> (usize, usize) {
        let col = ((p[0] - self.origin[0]) / self.bucket[0]).floor();
        let row = ((p[1] - self.origin[1]) / self.bucket[1]).floor();
        (
            col.clamp(0.0, (self.nx - 1) as f64) as usize,
            row.clamp(0.0, (self.ny - 1) as f64) as usize,
        )
    }

    /// The buckets meeting the box `min`–`max`, as column and row ranges; None when the box
    /// lies outside the directory.
    fn span(
        &self,
        min: Position,
        max: Position,
    ) -> Option<(
        std::ops::RangeInclusive<usize>,
        std::ops::RangeInclusive<usize>,
    )> {
        if self.nx == 0 {
            return None;
        }
        let end = [
            self.origin[0] + self.nx as f64 * self.bucket[0],
            self.origin[1] + self.ny as f64 * self.bucket[1],
        ];
        if max[0] < self.origin[0] || max[1] < self.origin[1] || min[0] > end[0] || min[1] > end[1]
        {
            return None;
        }
        let (c0, r0) = self.bucket_of(min);
        let (c1, r1) = self.bucket_of(max);
        Some((c0..=c1, r0..=r1))
    }

    fn build(entries: &[Entry]) -> (Directory, Vec<Entry>) {
        if entries.is_empty() {
            return (Directory::default(), Vec::new());
        }
        let mut origin = [f64::INFINITY; 2];
        let mut end = [f64::NEG_INFINITY; 2];
        for e in entries {
            origin = [origin[0].min(e.min[0]), origin[1].min(e.min[1])];
            end = [end[0].max(e.max[0]), end[1].max(e.max[1])];
        }
        let median = |f: &dyn Fn(&Entry) -> f64| {
            let mut v: Vec<f64> = entries.iter().map(f).collect();
            v.sort_by(f64::total_cmp);
            v[v.len() / 2]
        };
        let extent = [
            (end[0] - origin[0]).max(1e-9),
            (end[1] - origin[1]).max(1e-9),
        ];
        let mut bucket = [
            median(&|e| e.max[0] - e.min[0]).clamp(extent[0] / 65_536.0, extent[0]),
            median(&|e| e.max[1] - e.min[1]).clamp(extent[1] / 65_536.0, extent[1]),
        ];
        // at most about four buckets per cell
        let limit = (entries.len() * 4 + 64) as f64;
        let count = (extent[0] / bucket[0]).ceil() * (extent[1] / bucket[1]).ceil();
        if count > limit {
            let grow = (count / limit).sqrt();
            bucket = [bucket[0] * grow, bucket[1] * grow];
        }
        let nx = ((extent[0] / bucket[0]).ceil() as usize).max(1);
        let ny = ((extent[1] / bucket[1]).ceil() as usize).max(1);
        let mut dir = Directory {
            origin,
            bucket,
            nx,
            ny,
            offsets: vec![0; nx * ny + 1],
            items: Vec::new(),
        };
        let mut big = Vec::new();
        let mut placed = Vec::with_capacity(entries.len());
        for e in entries {
            let (cols, rows) = dir.span(e.min, e.max).unwrap_or((0..=0, 0..=0));
            if cols.clone().count() * rows.clone().count() > BIG_CELL_BUCKETS {
                big.push(*e);
                continue;
            }
            for r in rows {
                for c in cols.clone() {
                    dir.offsets[r * nx + c + 1] += 1;
                    placed.push((r * nx + c, *e));
                }
            }
        }
        for b in 1..dir.offsets.len() {
            dir.offsets[b] += dir.offsets[b - 1];
        }
        placed.sort_by_key(|(b, _)| *b);
        dir.items = placed.into_iter().map(|(_, e)| e).collect();
        (dir, big)
    }
}

/// The prepared outlines, the bucket directory, and the R-tree of the big cells.
#[derive(Debug, Clone)]
pub(super) struct Index {
    edges: Vec<Edge>,
    directory: Directory,
    big: RTree<GeomWithData<Rectangle<Position>, Entry>>,
}

impl Index {
    /// The indices of the cells whose bounding boxes meet the box `min`–`max`, each once.
    pub(super) fn cells_meeting(&self, min: Position, max: Position) -> Vec<usize> {
        let mut cells = Vec::new();
        self.each_meeting(min, max, |e, _| cells.push(e.cell as usize));
        cells
    }

    /// Calls `f` once for each cell whose bounding box meets the box `min`–`max`, with its edges.
    fn each_meeting(&self, min: Position, max: Position, mut f: impl FnMut(&Entry, &[Edge])) {
        let meets = |e: &Entry| {
            e.min[0] <= max[0] && e.max[0] >= min[0] && e.min[1] <= max[1] && e.max[1] >= min[1]
        };
        let dir = &self.directory;
        if let Some((cols, rows)) = dir.span(min, max) {
            let single = cols.start() == cols.end() && rows.start() == rows.end();
            for r in rows {
                for c in cols.clone() {
                    let b = r * dir.nx + c;
                    let items = &dir.items[dir.offsets[b] as usize..dir.offsets[b + 1] as usize];
                    for e in items.iter().filter(|e| meets(e)) {
                        // a cell listed in several of these buckets is taken in the one holding
                        // the lower-left corner of its box's overlap with the query box
                        if !single {
                            let corner = [e.min[0].max(min[0]), e.min[1].max(min[1])];
                            if dir.bucket_of(corner) != (c, r) {
                                continue;
                            }
                        }
                        f(e, &self.edges[e.start as usize..e.end as usize]);
                    }
                }
            }
        }
        if self.big.size() > 0 {
            for g in self
                .big
                .locate_in_envelope_intersecting(&AABB::from_corners(min, max))
            {
                let e = &g.data;
                f(e, &self.edges[e.start as usize..e.end as usize]);
            }
        }
    }
}

pub(super) fn build(cells: &[Cell]) -> Index {
    let mut edges = Vec::new();
    let mut entries = Vec::with_capacity(cells.len());
    for (i, c) in cells.iter().enumerate() {
        let start = edges.len() as u32;
        for poly in &c.shape.polygons {
            for ring in std::iter::once(&poly.exterior).chain(&poly.holes) {
                edges.extend(
                    ring.windows(2)
                        .map(|w| [w[0][0], w[0][1], w[1][0], w[1][1]]),
                );
            }
        }
        entries.push(Entry {
            min: c.shape.min,
            max: c.shape.max,
            cell: i as u32,
            start,
            end: edges.len() as u32,
        });
    }
    let (directory, big) = Directory::build(&entries);
    let rect = |e: &Entry| Rectangle::from_corners(e.min, e.max);
    Index {
        big: RTree::bulk_load(big.iter().map(|e| GeomWithData::new(rect(e), *e)).collect()),
        directory,
        edges,
    }
}

/// A cell's edges as segments.
fn segments(edges: &[Edge]) -> impl Iterator<Item = (Position, Position)> + '_ {
    edges.iter().map(|&[ax, ay, bx, by]| ([ax, ay], [bx, by]))
}

/// Even-odd containment over all of a cell's edges.
fn contains(edges: &[Edge], p: Position) -> bool {
    crosses_odd(segments(edges), p)
}

/// The distance in metres from `p` to the nearest of `edges` when it is at most `limit`.
fn edge_within_m(edges: &[Edge], p: Position, kx: f64, limit: f64) -> Option<f64> {
    let best = nearest_m2(segments(edges), p, kx);
    (best <= limit * limit).then(|| best.sqrt())
}

pub(super) fn locate(grid: &Grid, p: Position) -> Option<Located<'_>> {
    let edge = grid.edge_distance_m.max(0.0);
    let kx = METRES_PER_DEGREE * p[1].to_radians().cos().max(1e-6);
    let (dlon, dlat) = (edge / kx, edge / METRES_PER_DEGREE);

    let mut inside: Option<&Cell> = None;
    let mut inside_near_edge = false;
    // cells (other than the containing one) with an edge within `edge` metres, and how far
    let mut near: Vec<(&Cell, f64)> = Vec::new();
    grid.index.each_meeting(
        [p[0] - dlon, p[1] - dlat],
        [p[0] + dlon, p[1] + dlat],
        |entry, edges| {
            let cell = &grid.cells[entry.cell as usize];
            let in_box = p[0] >= entry.min[0]
                && p[0] <= entry.max[0]
                && p[1] >= entry.min[1]
                && p[1] <= entry.max[1];
            if inside.is_none() && in_box && contains(edges, p) {
                inside = Some(cell);
                inside_near_edge = edge > 0.0 && edge_within_m(edges, p, kx, edge).is_some();
                return;
            }
            if edge > 0.0
                && let Some(d) = edge_within_m(edges, p, kx, edge)
            {
                near.push((cell, d));
            }
        },
    );
    near.sort_by(|a, b| a.1.total_cmp(&b.1));
    match inside {
        Some(cell) => Some(Located {
            cell,
            inside: true,
            // the neighbours count only when the point is near its own cell's edge too (with
            // cells that do not overlap, that is always so when a neighbour's edge is near)
            candidates: if inside_near_edge {
                near.into_iter().map(|(c, _)| c).collect()
            } else {
                Vec::new()
            },
        }),
        None => {
            let mut it = near.into_iter().map(|(c, _)| c);
            let cell = it.next()?;
            Some(Located {
                cell,
                inside: false,
                candidates: it.collect(),
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::sample::generated_grid;
    use super::super::{Cell, Grid, Polygon, Shape, WorkerId};

    fn ring(x0: f64, y0: f64, s: f64) -> Vec<[f64; 2]> {
        vec![
            [x0, y0],
            [x0 + s, y0],
            [x0 + s, y0 + s],
            [x0, y0 + s],
            [x0, y0],
        ]
    }

    #[test]
    fn a_point_in_a_hole_belongs_to_the_cell_filling_it() {
        let cell = |code: &str, polygons| Cell {
            code: protocol::GridCode::parse(code).unwrap(),
            name: String::new(),
            worker: WorkerId::parse(format!("w-{code}")).unwrap(),
            shape: Shape::new(polygons),
        };
        let outer = cell(
            "32050800100101",
            vec![Polygon {
                exterior: ring(120.0, 30.0, 0.003),
                holes: vec![ring(120.001, 30.001, 0.001)],
            }],
        );
        let inner = cell(
            "32050800100102",
            vec![Polygon {
                exterior: ring(120.001, 30.001, 0.001),
                holes: vec![],
            }],
        );
        let grid = Grid::new(None, vec![], vec![outer, inner], 0.0);
        let at = |lat, lon| {
            grid.locate(lat, lon)
                .map(|l| l.cell.code.as_str().to_owned())
        };
        assert_eq!(at(30.0015, 120.0015).as_deref(), Some("32050800100102"));
        assert_eq!(at(30.0005, 120.0005).as_deref(), Some("32050800100101"));
        assert_eq!(at(30.0035, 120.0005), None);
    }

    /// Checks `n` random points in `[lon0, lat0]`–`[lon1, lat1]` against the definition: the
    /// containing cell by scan, and every other cell whose boundary lies within the edge
    /// distance, nearest first. Returns how many points had candidates and how many lay outside.
    fn agrees_with_scan(
        grid: &Grid,
        n: usize,
        [lon0, lat0]: [f64; 2],
        [lon1, lat1]: [f64; 2],
    ) -> (usize, usize) {
        let edge = grid.edge_distance_m();
        let mut rng = fastrand::Rng::with_seed(11);
        let (mut near_edges, mut outside) = (0, 0);
        for _ in 0..n {
            let lat = lat0 + rng.f64() * (lat1 - lat0);
            let lon = lon0 + rng.f64() * (lon1 - lon0);
            let p = [lon, lat];
            let found = grid.locate(lat, lon);
            let mut near: Vec<(&str, f64)> = grid
                .cells()
                .iter()
                .map(|c| (c.code.as_str(), c.shape.boundary_distance_m(p)))
                .filter(|(_, d)| *d <= edge)
                .collect();
            near.sort_by(|a, b| a.1.total_cmp(&b.1));
            match grid.locate_by_scan(lat, lon) {
                Some(cell) => {
                    let found = found.expect("a point inside a cell is found");
                    assert!(found.inside);
                    assert_eq!(found.cell.code, cell.code, "at {p:?}");
                    let want: Vec<&str> = near
                        .iter()
                        .map(|(c, _)| *c)
                        .filter(|c| *c != cell.code.as_str())
                        .collect();
                    let got: Vec<&str> = found.candidates.iter().map(|c| c.code.as_str()).collect();
                    assert_eq!(got, want, "candidates at {p:?}");
                    near_edges += usize::from(!want.is_empty());
                }
                None => {
                    let want: Vec<&str> = near.iter().map(|(c, _)| *c).collect();
                    let got: Vec<&str> = found
                        .iter()
                        .flat_map(|f| std::iter::once(f.cell).chain(f.candidates.iter().copied()))
                        .map(|c| c.code.as_str())
                        .collect();
                    assert_eq!(got, want, "outside at {p:?}");
                    outside += 1;
                }
            }
        }
        (near_edges, outside)
    }

    #[test]
    fn the_index_agrees_with_a_scan_for_cell_and_candidates() {
        let cell_deg = 0.0005;
        let grid = generated_grid(2, cell_deg, 5.0);
        // a little beyond the grid too, so "nearest cell outside" is exercised
        let (near_edges, outside) = agrees_with_scan(
            &grid,
            2000,
            [120.0 - 0.0002, 30.0 - 0.0002],
            [
                120.0 + 100.0 * cell_deg + 0.0002,
                30.0 + 50.0 * cell_deg + 0.0002,
            ],
        );
        assert!(near_edges > 50 && outside > 5, "{near_edges} {outside}");
    }

    #[test]
    fn a_cell_far_larger_than_the_others_is_found_beside_them() {
        // a row of twenty 0.001° cells along the top of one 0.02° park
        let cell = |k: usize, exterior| Cell {
            code: protocol::GridCode::parse(format!("320508001001{k:02}")).unwrap(),
            name: String::new(),
            worker: WorkerId::parse(format!("w-{k}")).unwrap(),
            shape: Shape::new(vec![Polygon {
                exterior,
                holes: vec![],
            }]),
        };
        let mut cells: Vec<Cell> = (0..20)
            .map(|k| cell(k + 1, ring(120.0 + k as f64 * 0.001, 30.02, 0.001)))
            .collect();
        cells.push(cell(21, ring(120.0, 30.0, 0.02)));
        let grid = Grid::new(None, vec![], cells, 15.0);
        assert_eq!(
            grid.index.big.size(),
            1,
            "the park is kept out of the directory"
        );
        let (near_edges, outside) =
            agrees_with_scan(&grid, 3000, [119.9995, 29.9995], [120.0205, 30.0215]);
        assert!(near_edges > 50 && outside > 5, "{near_edges} {outside}");
    }
}
