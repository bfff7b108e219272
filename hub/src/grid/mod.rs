//! The grid: city → district → street → community → unit grid cell, imported from GeoJSON, and
//! the spatial index that answers "which cell is this point in?".
//!
//! - [`Grid::from_geojson`] imports and validates a FeatureCollection ([`import`]);
//! - [`Grid::locate`] maps a WGS84 point to its cell, with the neighbouring cells as candidates
//!   when the point lies within the configured distance of an edge (`index`);
//! - [`crs`] converts GCJ-02 and BD-09 coordinates to WGS84;
//! - [`sample`] writes a realistic sample city and generates large synthetic grids.
//!
//! This module is pure: it parses text handed to it and never reads files, clocks or the
//! database. Coordinates inside a [`Grid`] are always WGS84 `[lon, lat]`.

use std::collections::HashMap;
use std::fmt;

use protocol::GridCode;
use serde::{Deserialize, Serialize};

pub mod crs;
pub mod geometry;
pub mod import;
mod index;
pub mod sample;

pub use geometry::{Polygon, Position, Shape};
pub use import::{
    FeatureError, FeatureProblem, GridError, GridMapping, GridWarning, ImportOptions,
};

/// The person responsible for a grid cell (网格员), as named in the grid file.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct WorkerId(String);

impl WorkerId {
    /// Validates a worker id: 1 to 64 characters, no whitespace or control characters.
    ///
    /// # Errors
    /// [`BadName`] naming the rule broken.
    pub fn parse(value: impl Into<String>) -> Result<WorkerId, BadName> {
        check_name(value.into()).map(WorkerId)
    }

    /// The id as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for WorkerId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A name (worker, department) that is empty, too long or has whitespace in it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`{0}` is not a valid id: 1 to 64 characters without spaces")]
pub struct BadName(pub String);

/// The levels of the hierarchy, top down.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Level {
    /// A city (6-digit administrative code ending in `00`).
    City,
    /// A county-level district (6 digits).
    District,
    /// A street (街道, 9 digits).
    Street,
    /// A community (社区, 12 digits).
    Community,
    /// A unit grid cell (14 digits).
    Cell,
}

impl Level {
    /// The level's name as written in grid files.
    pub fn as_str(self) -> &'static str {
        match self {
            Level::City => "city",
            Level::District => "district",
            Level::Street => "street",
            Level::Community => "community",
            Level::Cell => "cell",
        }
    }
}

/// An area above the cells: a city, district, street or community.
#[derive(Debug, Clone, PartialEq)]
pub struct Area {
    /// Its code (6, 9 or 12 digits).
    pub code: String,
    /// Its name.
    pub name: String,
    /// Its level.
    pub level: Level,
    /// Its outline.
    pub shape: Shape,
}

/// A unit grid cell.
#[derive(Debug, Clone, PartialEq)]
pub struct Cell {
    /// Its 14-digit code.
    pub code: GridCode,
    /// Its name.
    pub name: String,
    /// Its grid worker.
    pub worker: WorkerId,
    /// Its outline.
    pub shape: Shape,
}

/// A validated grid with its spatial index.
#[derive(Debug, Clone)]
pub struct Grid {
    city: Option<Area>,
    areas: HashMap<String, Area>,
    cells: Vec<Cell>,
    by_code: HashMap<GridCode, usize>,
    index: index::Index,
    edge_distance_m: f64,
}

/// Where a point fell: its cell, and the other cells within the edge distance.
#[derive(Debug, Clone, PartialEq)]
pub struct Located<'a> {
    /// The cell that contains the point or, for a point just outside every cell, the nearest
    /// cell within the edge distance.
    pub cell: &'a Cell,
    /// False when the point lies outside every cell and `cell` is merely the nearest.
    pub inside: bool,
    /// Other cells whose edge lies within the edge distance of the point.
    pub candidates: Vec<&'a Cell>,
}

impl Grid {
    /// Builds a grid from already validated parts.
    pub fn new(
        city: Option<Area>,
        areas: Vec<Area>,
        cells: Vec<Cell>,
        edge_distance_m: f64,
    ) -> Grid {
        let by_code = cells
            .iter()
            .enumerate()
            .map(|(i, c)| (c.code.clone(), i))
            .collect();
        let index = index::build(&cells);
        Grid {
            city,
            areas: areas.into_iter().map(|a| (a.code.clone(), a)).collect(),
            cells,
            by_code,
            index,
            edge_distance_m,
        }
    }

    /// The cells.
    pub fn cells(&self) -> &[Cell] {
        &self.cells
    }

    /// A cell by code.
    pub fn cell(&self, code: &GridCode) -> Option<&Cell> {
        self.by_code.get(code).map(|&i| &self.cells[i])
    }

    /// An area (district, street, community) by code.
    pub fn area(&self, code: &str) -> Option<&Area> {
        self.areas.get(code)
    }

    /// The city, when the grid file names one.
    pub fn city(&self) -> Option<&Area> {
        self.city.as_ref()
    }

    /// The distance from an edge within which neighbouring cells become candidates.
    pub fn edge_distance_m(&self) -> f64 {
        self.edge_distance_m
    }

    /// The areas above a cell, top down (city, district, street, community), as far as the grid
    /// file has them.
    pub fn chain(&self, cell: &GridCode) -> Vec<&Area> {
        let mut out = Vec::new();
        if let Some(city) = &self.city {
            out.push(city);
        }
        let mut parents = Vec::new();
        let mut code = cell.parent();
        while let Some(c) = code {
            parents.push(c.clone());
            code = c.parent();
        }
        out.extend(
            parents
                .iter()
                .rev()
                .filter_map(|c| self.areas.get(c.as_str())),
        );
        out
    }

    /// The cell of a WGS84 point (see [`crs::to_wgs84`] for other systems).
    pub fn locate(&self, lat: f64, lon: f64) -> Option<Located<'_>> {
        index::locate(self, [lon, lat])
    }

    /// The cell found by scanning every cell: the reference the index is measured against.
    pub fn locate_by_scan(&self, lat: f64, lon: f64) -> Option<&Cell> {
        self.cells.iter().find(|c| c.shape.contains([lon, lat]))
    }
}

pub(crate) fn check_name(value: String) -> Result<String, BadName> {
    let ok = !value.is_empty()
        && value.chars().count() <= 64
        && !value.chars().any(|c| c.is_whitespace() || c.is_control());
    if ok { Ok(value) } else { Err(BadName(value)) }
}
