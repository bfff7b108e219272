//! Shared test set-up.

use hub::grid::{Cell, Grid, ImportOptions, sample::sample_city_geojson};

/// The sample city, imported with default options (15 m edge distance).
pub(crate) fn sample_grid() -> Grid {
    Grid::from_geojson(
        &sample_city_geojson(),
        &ImportOptions::default(),
        &mut |_, _| {},
    )
    .expect("sample imports")
    .0
}

/// The centre of a rectangular cell, as (lat, lon).
pub(crate) fn cell_centre(cell: &Cell) -> (f64, f64) {
    (
        (cell.shape.min[1] + cell.shape.max[1]) / 2.0,
        (cell.shape.min[0] + cell.shape.max[0]) / 2.0,
    )
}
