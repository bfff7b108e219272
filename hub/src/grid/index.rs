//! The R-tree over cell bounding boxes and the point → cell query.
//!
//! One envelope query per lookup: the envelope is the point grown by the edge distance, so the
//! cells it returns are exactly those that may contain the point or have an edge near it. A
//! point deep inside a cell touches one bounding box, costs one containment test and one pass
//! over that cell's edges, and allocates nothing. This module only reads the grid; it must not
//! change cells or know about cases.

use rstar::primitives::{GeomWithData, Rectangle};
use rstar::{AABB, RTree};

use super::geometry::{METRES_PER_DEGREE, Position};
use super::{Cell, Grid, Located};

pub(super) fn build(cells: &[Cell]) -> RTree<GeomWithData<Rectangle<Position>, u32>> {
    let items = cells
        .iter()
        .enumerate()
        .map(|(i, c)| {
            GeomWithData::new(Rectangle::from_corners(c.shape.min, c.shape.max), i as u32)
        })
        .collect();
    RTree::bulk_load(items)
}

pub(super) fn locate(grid: &Grid, p: Position) -> Option<Located<'_>> {
    let edge = grid.edge_distance_m.max(0.0);
    let kx = METRES_PER_DEGREE * p[1].to_radians().cos().max(1e-6);
    let (dlon, dlat) = (edge / kx, edge / METRES_PER_DEGREE);
    let envelope = AABB::from_corners([p[0] - dlon, p[1] - dlat], [p[0] + dlon, p[1] + dlat]);

    let mut inside: Option<&Cell> = None;
    let mut inside_near_edge = false;
    // cells (other than the containing one) with an edge within `edge` metres, and how far
    let mut near: Vec<(&Cell, f64)> = Vec::new();
    for g in grid.tree.locate_in_envelope_intersecting(&envelope) {
        let cell = &grid.cells[g.data as usize];
        if inside.is_none() && cell.shape.contains(p) {
            inside = Some(cell);
            inside_near_edge = edge > 0.0 && cell.shape.boundary_within_m(p, kx, edge).is_some();
            continue;
        }
        if edge > 0.0
            && let Some(d) = cell.shape.boundary_within_m(p, kx, edge)
        {
            near.push((cell, d));
        }
    }
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

    /// The one-query lookup against the definition: the containing cell by scan, and every other
    /// cell whose boundary lies within the edge distance, nearest first.
    #[test]
    fn the_index_agrees_with_a_scan_for_cell_and_candidates() {
        let cell_deg = 0.0005;
        let grid = generated_grid(2, cell_deg, 5.0);
        let mut rng = fastrand::Rng::with_seed(11);
        let (mut near_edges, mut outside) = (0, 0);
        for _ in 0..2000 {
            // a little beyond the grid too, so "nearest cell outside" is exercised
            let lat = 30.0 - 0.0002 + rng.f64() * (50.0 * cell_deg + 0.0004);
            let lon = 120.0 - 0.0002 + rng.f64() * (100.0 * cell_deg + 0.0004);
            let p = [lon, lat];
            let found = grid.locate(lat, lon);
            let mut near: Vec<(&str, f64)> = grid
                .cells()
                .iter()
                .map(|c| (c.code.as_str(), c.shape.boundary_distance_m(p)))
                .filter(|(_, d)| *d <= 5.0)
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
        assert!(near_edges > 50 && outside > 5, "{near_edges} {outside}");
    }
}
