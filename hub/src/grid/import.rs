//! GeoJSON import: properties mapped to code, name, level, parent and worker; codes, parents and
//! geometry validated; overlaps and gaps reported as warnings.
//!
//! Every problem is collected and reported at once, each naming its feature (1-based position
//! and code), so a grid file can be fixed in one pass. This module parses text handed to it; it
//! never reads files.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt;

use protocol::{Crs, GridCode};
use serde::Deserialize;
use serde_json::Value;

use super::geometry::{Polygon, Position, Shape, ring_self_intersection};
use super::{Area, Cell, Grid, Level, WorkerId, crs};

/// Which GeoJSON feature properties hold what.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct GridMapping {
    /// Property holding the area's or cell's code. Default `code`.
    pub code_property: String,
    /// Property holding its name. Default `name`.
    pub name_property: String,
    /// Property holding the level (`city`, `district`, `street`, `community`, `cell`); when a
    /// feature lacks it the level follows from the code's length. Default `level`.
    pub level_property: String,
    /// Property holding the parent's code, checked against the code's prefix when present.
    /// Default `parent`.
    pub parent_property: String,
    /// Property holding a cell's grid worker (required on cells). Default `worker`.
    pub worker_property: String,
}

impl Default for GridMapping {
    fn default() -> Self {
        GridMapping {
            code_property: "code".into(),
            name_property: "name".into(),
            level_property: "level".into(),
            parent_property: "parent".into(),
            worker_property: "worker".into(),
        }
    }
}

/// How to read a grid file.
#[derive(Debug, Clone, PartialEq)]
pub struct ImportOptions {
    /// Property mapping.
    pub mapping: GridMapping,
    /// The coordinate system of the file; converted to WGS84 on import.
    pub crs: Crs,
    /// Within this distance of a cell edge, neighbouring cells become candidates.
    pub edge_distance_m: f64,
}

impl Default for ImportOptions {
    fn default() -> Self {
        ImportOptions {
            mapping: GridMapping::default(),
            crs: Crs::Wgs84,
            edge_distance_m: 15.0,
        }
    }
}

/// A grid file that could not be imported.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum GridError {
    /// Not JSON at all.
    #[error("grid file is not valid JSON")]
    Json(#[source] serde_json::Error),
    /// JSON, but not a FeatureCollection.
    #[error("grid file is not a GeoJSON FeatureCollection")]
    NotFeatureCollection,
    /// Features with problems; every one is listed.
    #[error("grid file has {} invalid feature(s): {}", .0.len(), Listed(.0))]
    Features(Vec<FeatureError>),
}

/// A problem with one feature.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("feature #{index}{}: {problem}", .code.as_ref().map(|c| format!(" (code {c})")).unwrap_or_default())]
pub struct FeatureError {
    /// 1-based position in the FeatureCollection.
    pub index: usize,
    /// Its code, when it has a readable one.
    pub code: Option<String>,
    /// What is wrong.
    pub problem: FeatureProblem,
}

/// What is wrong with a feature.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum FeatureProblem {
    /// A required property is absent or not a string.
    #[error("missing property `{0}`")]
    MissingProperty(String),
    /// The code is not a valid grid code for its level.
    #[error("invalid code: {0}")]
    BadCode(String),
    /// The level property names no known level.
    #[error("unknown level `{0}`")]
    UnknownLevel(String),
    /// The level property contradicts the code's length.
    #[error("level `{level}` does not match a code of {digits} digits")]
    LevelMismatch {
        /// The level written.
        level: String,
        /// The code's length.
        digits: usize,
    },
    /// The parent property is not the code's prefix.
    #[error("parent `{parent}` is not the prefix of the code (expected `{expected}`)")]
    WrongParent {
        /// The parent written.
        parent: String,
        /// The parent the code implies.
        expected: String,
    },
    /// Two features share a code.
    #[error("code is used by feature #{0} already")]
    DuplicateCode(usize),
    /// The worker id is malformed.
    #[error("invalid worker: {0}")]
    BadWorker(String),
    /// No geometry, or one that is not a Polygon or MultiPolygon.
    #[error("geometry must be a Polygon or MultiPolygon, found {0}")]
    UnsupportedGeometry(String),
    /// Coordinates that are not numbers in range.
    #[error("malformed coordinates: {0}")]
    BadCoordinates(String),
    /// A ring that is not closed or has fewer than four positions.
    #[error("ring {ring} of polygon {polygon} must be closed with at least 4 positions")]
    BadRing {
        /// Polygon index within the feature.
        polygon: usize,
        /// Ring index (0 = exterior).
        ring: usize,
    },
    /// A ring whose edges cross or touch.
    #[error("ring {ring} of polygon {polygon} intersects itself (edges {edge_a} and {edge_b})")]
    SelfIntersection {
        /// Polygon index within the feature.
        polygon: usize,
        /// Ring index (0 = exterior).
        ring: usize,
        /// First edge.
        edge_a: usize,
        /// Second edge.
        edge_b: usize,
    },
}

/// Something odd about a grid that does not stop it from being used.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum GridWarning {
    /// Two cells share interior.
    Overlap {
        /// One cell.
        a: GridCode,
        /// The other.
        b: GridCode,
    },
    /// The children of an area cover noticeably less than its area.
    Gap {
        /// The area.
        parent: String,
        /// Children's area as a percentage of the parent's.
        coverage_pct: f64,
        /// The children's codes.
        children: Vec<String>,
    },
    /// A feature's parent is not in the file.
    MissingParent {
        /// The feature's code.
        code: String,
        /// Its parent's code.
        parent: String,
    },
}

impl fmt::Display for GridWarning {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            GridWarning::Overlap { a, b } => write!(f, "cells {a} and {b} overlap"),
            GridWarning::Gap {
                parent,
                coverage_pct,
                children,
            } => write!(
                f,
                "gap in {parent}: its children ({}) cover {coverage_pct:.1}% of it",
                children.join(", ")
            ),
            GridWarning::MissingParent { code, parent } => {
                write!(f, "{code}: parent {parent} is not in the file")
            }
        }
    }
}

impl Grid {
    /// Imports a GeoJSON FeatureCollection. `progress` is called with (done, total) every 1000
    /// features and at the end.
    ///
    /// # Errors
    /// [`GridError`] listing every invalid feature.
    pub fn from_geojson(
        text: &str,
        options: &ImportOptions,
        progress: &mut dyn FnMut(usize, usize),
    ) -> Result<(Grid, Vec<GridWarning>), GridError> {
        let root: Value = serde_json::from_str(text).map_err(GridError::Json)?;
        let features = match (
            root.get("type").and_then(Value::as_str),
            root.get("features"),
        ) {
            (Some("FeatureCollection"), Some(Value::Array(f))) => f,
            _ => return Err(GridError::NotFeatureCollection),
        };
        let total = features.len();
        let mut problems = Vec::new();
        let mut seen: HashMap<String, usize> = HashMap::new();
        let mut city = None;
        let mut areas = Vec::new();
        let mut cells = Vec::new();
        for (i, feature) in features.iter().enumerate() {
            let index = i + 1;
            match read_feature(feature, options) {
                Ok(parsed) => {
                    if let Some(&first) = seen.get(parsed.code()) {
                        problems.push(FeatureError {
                            index,
                            code: Some(parsed.code().to_owned()),
                            problem: FeatureProblem::DuplicateCode(first),
                        });
                        continue;
                    }
                    seen.insert(parsed.code().to_owned(), index);
                    match parsed {
                        Parsed::Area(a) if a.level == Level::City => city = Some(a),
                        Parsed::Area(a) => areas.push(a),
                        Parsed::Cell(c) => cells.push(c),
                    }
                }
                Err((code, problem)) => problems.push(FeatureError {
                    index,
                    code,
                    problem,
                }),
            }
            if index % 1000 == 0 {
                progress(index, total);
            }
        }
        progress(total, total);
        if !problems.is_empty() {
            return Err(GridError::Features(problems));
        }
        let warnings = check_hierarchy(city.as_ref(), &areas, &cells);
        let grid = Grid::new(city, areas, cells, options.edge_distance_m);
        let mut warnings = warnings;
        warnings.extend(overlaps(&grid));
        Ok((grid, warnings))
    }
}

enum Parsed {
    Area(Area),
    Cell(Cell),
}

impl Parsed {
    fn code(&self) -> &str {
        match self {
            Parsed::Area(a) => &a.code,
            Parsed::Cell(c) => c.code.as_str(),
        }
    }
}

type Failure = (Option<String>, FeatureProblem);

fn read_feature(feature: &Value, options: &ImportOptions) -> Result<Parsed, Failure> {
    let m = &options.mapping;
    let props = feature.get("properties");
    let prop = |name: &str| -> Option<String> {
        match props?.get(name)? {
            Value::String(s) => Some(s.trim().to_owned()),
            Value::Number(n) => Some(n.to_string()),
            _ => None,
        }
    };
    let code = prop(&m.code_property).ok_or_else(|| {
        (
            None,
            FeatureProblem::MissingProperty(m.code_property.clone()),
        )
    })?;
    let fail = |p: FeatureProblem| (Some(code.clone()), p);
    let name = prop(&m.name_property)
        .ok_or_else(|| fail(FeatureProblem::MissingProperty(m.name_property.clone())))?;
    let level = match prop(&m.level_property) {
        Some(l) => {
            let level =
                parse_level(&l).ok_or_else(|| fail(FeatureProblem::UnknownLevel(l.clone())))?;
            let expected = match level {
                Level::City | Level::District => 6,
                Level::Street => 9,
                Level::Community => 12,
                Level::Cell => 14,
            };
            if code.len() != expected {
                return Err(fail(FeatureProblem::LevelMismatch {
                    level: l,
                    digits: code.len(),
                }));
            }
            level
        }
        None => match code.len() {
            6 => Level::District,
            9 => Level::Street,
            12 => Level::Community,
            _ => Level::Cell,
        },
    };
    let grid_code = if level == Level::City {
        if code.len() != 6 || !code.bytes().all(|b| b.is_ascii_digit()) || !code.ends_with("00") {
            return Err(fail(FeatureProblem::BadCode(
                "a city code has 6 digits ending in 00".into(),
            )));
        }
        None
    } else {
        Some(
            GridCode::parse(code.clone())
                .map_err(|e| fail(FeatureProblem::BadCode(e.to_string())))?,
        )
    };
    if let (Some(parent), Some(gc)) = (prop(&m.parent_property), &grid_code) {
        let expected = gc.parent().map(|p| p.to_string()).unwrap_or_default();
        let ok = if gc.parent().is_some() {
            parent == expected
        } else {
            // a district's parent is its city: same first four digits, ending in 00
            parent.len() == 6 && parent.ends_with("00") && parent[..4] == code[..4]
        };
        if !ok {
            return Err(fail(FeatureProblem::WrongParent {
                parent,
                expected: if expected.is_empty() {
                    format!("{}00", &code[..4])
                } else {
                    expected
                },
            }));
        }
    }
    let shape = read_geometry(feature.get("geometry"), options.crs).map_err(&fail)?;
    match grid_code {
        Some(code) if level == Level::Cell => {
            let worker = prop(&m.worker_property)
                .ok_or_else(|| fail(FeatureProblem::MissingProperty(m.worker_property.clone())))?;
            let worker = WorkerId::parse(worker)
                .map_err(|e| fail(FeatureProblem::BadWorker(e.to_string())))?;
            Ok(Parsed::Cell(Cell {
                code,
                name,
                worker,
                shape,
            }))
        }
        _ => Ok(Parsed::Area(Area {
            code,
            name,
            level,
            shape,
        })),
    }
}

fn parse_level(text: &str) -> Option<Level> {
    Some(match text.to_ascii_lowercase().as_str() {
        "city" | "市" => Level::City,
        "district" | "county" | "区" | "县" => Level::District,
        "street" | "街道" | "乡镇" => Level::Street,
        "community" | "社区" => Level::Community,
        "cell" | "grid" | "网格" => Level::Cell,
        _ => return None,
    })
}

fn read_geometry(geometry: Option<&Value>, crs: Crs) -> Result<Shape, FeatureProblem> {
    let geometry = geometry.filter(|g| !g.is_null());
    let kind = geometry
        .and_then(|g| g.get("type"))
        .and_then(Value::as_str)
        .unwrap_or("nothing");
    let coords = geometry.and_then(|g| g.get("coordinates"));
    let polygons_json: Vec<&Value> = match (kind, coords) {
        ("Polygon", Some(c)) => vec![c],
        ("MultiPolygon", Some(Value::Array(ps))) => ps.iter().collect(),
        _ => return Err(FeatureProblem::UnsupportedGeometry(kind.to_owned())),
    };
    let mut polygons = Vec::with_capacity(polygons_json.len());
    for (pi, p) in polygons_json.into_iter().enumerate() {
        let rings = p
            .as_array()
            .filter(|r| !r.is_empty())
            .ok_or_else(|| FeatureProblem::BadCoordinates(format!("polygon {pi} has no rings")))?;
        let mut parsed = Vec::with_capacity(rings.len());
        for (ri, ring) in rings.iter().enumerate() {
            let ring = read_ring(ring, crs).map_err(|msg| {
                FeatureProblem::BadCoordinates(format!("ring {ri} of polygon {pi}: {msg}"))
            })?;
            if ring.len() < 4 || ring.first() != ring.last() {
                return Err(FeatureProblem::BadRing {
                    polygon: pi,
                    ring: ri,
                });
            }
            if let Some((edge_a, edge_b)) = ring_self_intersection(&ring) {
                return Err(FeatureProblem::SelfIntersection {
                    polygon: pi,
                    ring: ri,
                    edge_a,
                    edge_b,
                });
            }
            parsed.push(ring);
        }
        let mut it = parsed.into_iter();
        let exterior = it.next().unwrap_or_default();
        polygons.push(Polygon {
            exterior,
            holes: it.collect(),
        });
    }
    Ok(Shape::new(polygons))
}

fn read_ring(ring: &Value, crs: Crs) -> Result<Vec<Position>, String> {
    let positions = ring.as_array().ok_or("not an array of positions")?;
    positions
        .iter()
        .enumerate()
        .map(|(i, p)| {
            let lon = p.get(0).and_then(Value::as_f64);
            let lat = p.get(1).and_then(Value::as_f64);
            match (lon, lat) {
                (Some(lon), Some(lat))
                    if (-180.0..=180.0).contains(&lon) && (-90.0..=90.0).contains(&lat) =>
                {
                    let (lat, lon) = crs::to_wgs84(lat, lon, crs);
                    Ok([lon, lat])
                }
                _ => Err(format!("position {i} is not [lon, lat] in range")),
            }
        })
        .collect()
}

fn check_hierarchy(city: Option<&Area>, areas: &[Area], cells: &[Cell]) -> Vec<GridWarning> {
    let mut warnings = Vec::new();
    let known: HashSet<&str> = areas.iter().map(|a| a.code.as_str()).collect();
    let mut children: BTreeMap<String, Vec<(String, f64)>> = BTreeMap::new();
    let mut note =
        |code: &str, parent: Option<GridCode>, area: f64, warnings: &mut Vec<GridWarning>| {
            let Some(parent) = parent else { return };
            if known.contains(parent.as_str()) {
                children
                    .entry(parent.to_string())
                    .or_default()
                    .push((code.to_owned(), area));
            } else {
                warnings.push(GridWarning::MissingParent {
                    code: code.to_owned(),
                    parent: parent.to_string(),
                });
            }
        };
    for a in areas {
        if let Ok(gc) = GridCode::parse(a.code.clone()) {
            if gc.parent().is_none() {
                if let Some(city) = city
                    && city.code[..4] != a.code[..4]
                {
                    warnings.push(GridWarning::MissingParent {
                        code: a.code.clone(),
                        parent: format!("{}00", &a.code[..4]),
                    });
                }
                continue;
            }
            note(&a.code, gc.parent(), a.shape.area_m2(), &mut warnings);
        }
    }
    for c in cells {
        note(
            c.code.as_str(),
            c.code.parent(),
            c.shape.area_m2(),
            &mut warnings,
        );
    }
    let by_code: HashMap<&str, &Area> = areas.iter().map(|a| (a.code.as_str(), a)).collect();
    for (parent, kids) in children {
        let Some(area) = by_code.get(parent.as_str()) else {
            continue;
        };
        let total = area.shape.area_m2();
        let covered: f64 = kids.iter().map(|(_, a)| a).sum();
        if total > 0.0 && covered < total * 0.995 {
            warnings.push(GridWarning::Gap {
                parent,
                coverage_pct: covered / total * 100.0,
                children: kids.into_iter().map(|(c, _)| c).collect(),
            });
        }
    }
    warnings
}

fn overlaps(grid: &Grid) -> Vec<GridWarning> {
    let mut out = Vec::new();
    for (i, cell) in grid.cells.iter().enumerate() {
        for j in grid.index.cells_meeting(cell.shape.min, cell.shape.max) {
            if j <= i {
                continue;
            }
            let other = &grid.cells[j];
            if cell.shape.overlaps(&other.shape) {
                out.push(GridWarning::Overlap {
                    a: cell.code.clone(),
                    b: other.code.clone(),
                });
            }
        }
    }
    out
}

struct Listed<'a>(&'a [FeatureError]);

impl fmt::Display for Listed<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str("; ")?;
            }
            write!(f, "{e}")?;
        }
        Ok(())
    }
}
