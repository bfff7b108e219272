//! The R-tree over cell bounding boxes and the point → cell query.

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
    let inside = grid
        .tree
        .locate_all_at_point(&p)
        .map(|g| &grid.cells[g.data as usize])
        .find(|c| c.shape.contains(p));
    let edge = grid.edge_distance_m;
    match inside {
        Some(cell) => {
            if edge <= 0.0 || cell.shape.boundary_distance_m(p) > edge {
                return Some(Located {
                    cell,
                    inside: true,
                    candidates: Vec::new(),
                });
            }
            let candidates = near(grid, p, edge)
                .filter(|(c, _)| c.code != cell.code)
                .map(|(c, _)| c)
                .collect();
            Some(Located {
                cell,
                inside: true,
                candidates,
            })
        }
        None => {
            let mut near: Vec<(&Cell, f64)> = near(grid, p, edge).collect();
            near.sort_by(|a, b| a.1.total_cmp(&b.1));
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

/// Cells whose boundary lies within `edge` metres of `p`, with that distance.
fn near(grid: &Grid, p: Position, edge: f64) -> impl Iterator<Item = (&Cell, f64)> {
    let dlat = edge / METRES_PER_DEGREE;
    let dlon = edge / (METRES_PER_DEGREE * p[1].to_radians().cos().max(1e-6));
    let envelope = AABB::from_corners([p[0] - dlon, p[1] - dlat], [p[0] + dlon, p[1] + dlat]);
    grid.tree
        .locate_in_envelope_intersecting(&envelope)
        .map(|g| &grid.cells[g.data as usize])
        .filter_map(move |c| {
            let d = c.shape.boundary_distance_m(p);
            (d <= edge).then_some((c, d))
        })
}
