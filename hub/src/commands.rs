//! What the command-line subcommands do, as library functions returning the text to print, so
//! tests can drive them in-process. `main.rs` only parses arguments and prints.
//!
//! This module reads and writes the files it is given; it must not hold domain logic beyond
//! calling into [`crate::grid`] and friends.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use protocol::Crs;

use crate::grid::{Grid, GridError, GridWarning, ImportOptions, crs, sample};

/// A subcommand that failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CommandError {
    /// A file could not be read or written.
    #[error("failed to access `{}`", .path.display())]
    File {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The grid file is invalid.
    #[error("grid file `{}` is invalid", .path.display())]
    Grid {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: GridError,
    },
    /// Coordinates out of range.
    #[error("latitude {lat} / longitude {lon} are not valid coordinates")]
    BadPoint {
        /// Latitude given.
        lat: f64,
        /// Longitude given.
        lon: f64,
    },
}

/// Reads and imports a grid file, calling `progress` as features are read.
///
/// # Errors
/// [`CommandError::File`] or [`CommandError::Grid`].
pub fn load_grid(
    path: &Path,
    options: &ImportOptions,
    progress: &mut dyn FnMut(usize, usize),
) -> Result<(Grid, Vec<GridWarning>), CommandError> {
    let text = std::fs::read_to_string(path).map_err(|source| CommandError::File {
        path: path.to_owned(),
        source,
    })?;
    Grid::from_geojson(&text, options, progress).map_err(|source| CommandError::Grid {
        path: path.to_owned(),
        source,
    })
}

/// `hub grid sample --out FILE`: writes the sample city; returns a one-line summary.
///
/// # Errors
/// [`CommandError::File`] when the file cannot be written.
pub fn grid_sample(out: &Path) -> Result<String, CommandError> {
    let text = sample::sample_city_geojson();
    std::fs::write(out, &text).map_err(|source| CommandError::File {
        path: out.to_owned(),
        source,
    })?;
    Ok(format!(
        "wrote sample city (1 city, 2 districts, 4 streets, 8 communities, 32 cells) to {}\n",
        out.display()
    ))
}

/// `hub grid locate LAT LON`: the chain from city to cell, the worker and any edge candidates,
/// or a line saying the point is in no cell.
///
/// # Errors
/// [`CommandError::BadPoint`] for coordinates out of range.
pub fn grid_locate(grid: &Grid, lat: f64, lon: f64, from: Crs) -> Result<String, CommandError> {
    let point = protocol::Location {
        lat,
        lon,
        crs: from,
    };
    if !point.is_valid() {
        return Err(CommandError::BadPoint { lat, lon });
    }
    let (wlat, wlon) = crs::to_wgs84(lat, lon, from);
    let mut out = String::new();
    if from != Crs::Wgs84 {
        let _ = writeln!(out, "{:<11}{wlat:.6}, {wlon:.6} (WGS84)", "point");
    }
    let Some(found) = grid.locate(wlat, wlon) else {
        let _ = writeln!(out, "no cell contains {wlat:.6}, {wlon:.6}");
        return Ok(out);
    };
    for area in grid.chain(&found.cell.code) {
        let _ = writeln!(
            out,
            "{:<11}{:<15} {}",
            area.level.as_str(),
            area.code,
            area.name
        );
    }
    let _ = writeln!(
        out,
        "{:<11}{:<15} {}",
        "cell", found.cell.code, found.cell.name
    );
    let _ = writeln!(out, "{:<11}{}", "worker", found.cell.worker);
    if !found.inside {
        let _ = writeln!(
            out,
            "note       outside every cell; nearest cell within {} m",
            grid.edge_distance_m()
        );
    }
    if !found.candidates.is_empty() {
        let codes: Vec<String> = found
            .candidates
            .iter()
            .map(|c| c.code.to_string())
            .collect();
        let _ = writeln!(
            out,
            "{:<11}{} (within {} m of an edge)",
            "candidates",
            codes.join(", "),
            grid.edge_distance_m()
        );
    }
    Ok(out)
}
