//! Grid import, validation and point → cell matching.

use hub::grid::{
    FeatureProblem, Grid, GridError, GridWarning, ImportOptions, crs, sample::sample_city_geojson,
};
use protocol::{Crs, GridCode};
use serde_json::{Value, json};

use crate::helpers::{cell_centre, sample_grid};

fn import(doc: &Value) -> Result<(Grid, Vec<GridWarning>), GridError> {
    Grid::from_geojson(&doc.to_string(), &ImportOptions::default(), &mut |_, _| {})
}

fn square(lon: f64, lat: f64, side: f64) -> Value {
    json!({"type": "Polygon", "coordinates": [[
        [lon, lat], [lon + side, lat], [lon + side, lat + side], [lon, lat + side], [lon, lat]
    ]]})
}

fn cell(code: &str, geometry: Value) -> Value {
    json!({"type": "Feature", "properties": {"code": code, "name": code, "worker": "w-a"}, "geometry": geometry})
}

fn collection(features: Vec<Value>) -> Value {
    json!({"type": "FeatureCollection", "features": features})
}

fn problems(err: GridError) -> Vec<(usize, Option<String>, FeatureProblem)> {
    match err {
        GridError::Features(list) => list
            .into_iter()
            .map(|e| (e.index, e.code, e.problem))
            .collect(),
        other => panic!("expected feature errors, got {other:?}"),
    }
}

#[test]
fn the_sample_city_imports_with_four_levels_and_no_warnings() {
    let (grid, warnings) = import(&serde_json::from_str(&sample_city_geojson()).unwrap()).unwrap();
    assert!(warnings.is_empty(), "{warnings:?}");
    assert_eq!(grid.cells().len(), 32);
    assert_eq!(grid.city().unwrap().name, "苏州市");
    let code = GridCode::parse("32050800100101").unwrap();
    let chain: Vec<&str> = grid.chain(&code).iter().map(|a| a.code.as_str()).collect();
    assert_eq!(chain, ["320500", "320508", "320508001", "320508001001"]);
}

#[test]
fn a_point_inside_a_cell_finds_that_cell_and_its_worker() {
    let grid = sample_grid();
    for cell in grid.cells() {
        let (lat, lon) = cell_centre(cell);
        let found = grid.locate(lat, lon).unwrap();
        assert_eq!(found.cell.code, cell.code);
        assert!(found.inside);
        assert!(found.candidates.is_empty(), "centre is far from every edge");
        assert_eq!(grid.locate_by_scan(lat, lon).unwrap().code, cell.code);
    }
    assert!(
        grid.locate(39.9, 116.4).is_none(),
        "Beijing is not in the sample"
    );
}

#[test]
fn a_point_near_a_cell_edge_carries_the_neighbour_as_candidate() {
    let grid = sample_grid();
    let a = grid
        .cell(&GridCode::parse("32050800100101").unwrap())
        .unwrap();
    // 5 m west of the edge shared with cell 02 (to the east)
    let edge_lon = a.shape.max[0];
    let (lat, _) = cell_centre(a);
    let lon = edge_lon - 5.0 / (111_320.0 * lat.to_radians().cos());
    let found = grid.locate(lat, lon).unwrap();
    assert_eq!(found.cell.code, a.code);
    let candidates: Vec<&str> = found.candidates.iter().map(|c| c.code.as_str()).collect();
    assert_eq!(candidates, ["32050800100102"]);
}

#[test]
fn a_point_just_outside_the_grid_takes_the_nearest_cell_within_the_edge_distance() {
    let grid = sample_grid();
    let a = grid
        .cell(&GridCode::parse("32050800100101").unwrap())
        .unwrap();
    let (lat, _) = cell_centre(a);
    let lon = a.shape.min[0] - 3.0 / 111_320.0;
    let found = grid.locate(lat, lon).unwrap();
    assert_eq!(found.cell.code, a.code);
    assert!(!found.inside);
}

#[test]
fn a_self_intersecting_polygon_is_rejected_naming_its_feature() {
    let bowtie = json!({"type": "Polygon", "coordinates": [[
        [120.0, 30.0], [120.001, 30.001], [120.001, 30.0], [120.0, 30.001], [120.0, 30.0]
    ]]});
    let doc = collection(vec![
        cell("32050800100101", square(120.0, 30.0, 0.001)),
        cell("32050800100102", bowtie),
    ]);
    let p = problems(import(&doc).unwrap_err());
    assert_eq!(p.len(), 1);
    assert_eq!(p[0].0, 2);
    assert_eq!(p[0].1.as_deref(), Some("32050800100102"));
    assert!(matches!(
        p[0].2,
        FeatureProblem::SelfIntersection {
            polygon: 0,
            ring: 0,
            ..
        }
    ));
}

#[test]
fn wrong_codes_wrong_parents_and_missing_properties_are_each_reported_by_feature() {
    let mut missing_worker = cell("32050800100103", square(120.002, 30.0, 0.001));
    missing_worker["properties"]
        .as_object_mut()
        .unwrap()
        .remove("worker");
    let mut wrong_parent = cell("32050800100104", square(120.003, 30.0, 0.001));
    wrong_parent["properties"]["parent"] = json!("320508001002");
    let doc = collection(vec![
        cell("3205080010010", square(120.0, 30.0, 0.001)),
        json!({"type": "Feature", "properties": {"name": "nameless"}, "geometry": square(120.001, 30.0, 0.001)}),
        missing_worker,
        wrong_parent,
        cell(
            "32050800100105",
            json!({"type": "Point", "coordinates": [120.0, 30.0]}),
        ),
    ]);
    let err = import(&doc).unwrap_err();
    let text = err.to_string();
    assert!(text.contains("feature #1 (code 3205080010010)"), "{text}");
    let p = problems(err);
    assert_eq!(p.len(), 5, "{p:?}");
    assert!(matches!(p[0].2, FeatureProblem::BadCode(_)));
    assert!(matches!(&p[1].2, FeatureProblem::MissingProperty(k) if k == "code"));
    assert!(matches!(&p[2].2, FeatureProblem::MissingProperty(k) if k == "worker"));
    assert!(
        matches!(&p[3].2, FeatureProblem::WrongParent { expected, .. } if expected == "320508001001")
    );
    assert!(matches!(&p[4].2, FeatureProblem::UnsupportedGeometry(k) if k == "Point"));
    assert_eq!(p.iter().map(|x| x.0).collect::<Vec<_>>(), [1, 2, 3, 4, 5]);
}

#[test]
fn overlapping_cells_and_gaps_are_warnings_with_their_codes() {
    let community = json!({"type": "Feature",
        "properties": {"code": "320508001001", "name": "c", "level": "community"},
        "geometry": square(120.0, 30.0, 0.003)});
    let doc = collection(vec![
        community,
        cell("32050800100101", square(120.0, 30.0, 0.001)),
        cell("32050800100102", square(120.0005, 30.0, 0.001)),
    ]);
    let (_, warnings) = import(&doc).unwrap();
    assert!(warnings.contains(&GridWarning::Overlap {
        a: GridCode::parse("32050800100101").unwrap(),
        b: GridCode::parse("32050800100102").unwrap(),
    }));
    assert!(warnings.iter().any(|w| matches!(w,
        GridWarning::Gap { parent, children, .. } if parent == "320508001001" && children.len() == 2)));
    // the community's street and district are absent: reported, not fatal
    assert!(
        warnings
            .iter()
            .any(|w| matches!(w, GridWarning::MissingParent { .. }))
    );
}

#[test]
fn polygons_with_holes_and_multipolygons_are_supported() {
    let holed = json!({"type": "MultiPolygon", "coordinates": [
        [[[120.0, 30.0], [120.003, 30.0], [120.003, 30.003], [120.0, 30.003], [120.0, 30.0]],
         [[120.001, 30.001], [120.002, 30.001], [120.002, 30.002], [120.001, 30.002], [120.001, 30.001]]],
        [[[121.0, 30.0], [121.001, 30.0], [121.001, 30.001], [121.0, 30.001], [121.0, 30.0]]]
    ]});
    let doc = collection(vec![cell("32050800100101", holed)]);
    let (grid, _) = import(&doc).unwrap();
    assert!(grid.locate(30.0005, 120.0005).is_some());
    assert!(grid.locate(30.0015, 120.0015).is_none(), "inside the hole");
    assert!(grid.locate(30.0005, 121.0005).is_some(), "second polygon");
}

#[test]
fn a_gcj02_grid_file_is_converted_to_wgs84_on_import() {
    let (glat, glon) = crs::wgs84_to_gcj02(31.3, 120.6);
    let doc = collection(vec![cell(
        "32050800100101",
        square(glon - 0.0005, glat - 0.0005, 0.001),
    )]);
    let options = ImportOptions {
        crs: Crs::Gcj02,
        ..ImportOptions::default()
    };
    let (grid, _) = Grid::from_geojson(&doc.to_string(), &options, &mut |_, _| {}).unwrap();
    // the WGS84 point is in the cell; the raw GCJ-02 point (about 500 m off) is not
    assert!(grid.locate(31.3, 120.6).is_some());
    assert!(grid.locate(glat, glon).is_none());
}
