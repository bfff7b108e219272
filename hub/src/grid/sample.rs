//! A realistic sample city for demos and tests, and large synthetic grids for benchmarks.
//!
//! The sample is a slice of Suzhou (苏州市, 320500): two districts, each with two streets of two
//! communities of four cells, 32 cells in all, each with a grid worker. The outlines are
//! rectangles that tile their parents exactly, so the sample imports without warnings.

use protocol::GridCode;
use serde_json::{Value, json};

use super::geometry::{Polygon, Shape};
use super::{Area, Cell, Grid, Level, WorkerId};

/// Width and height of a sample cell in degrees (about 190 m × 220 m).
pub const SAMPLE_CELL_DEG: f64 = 0.002;
/// The south-west corner of the sample city, `[lon, lat]`.
pub const SAMPLE_ORIGIN: [f64; 2] = [120.58, 31.28];

/// District code, name, its two streets, and each street's two communities.
type DistrictSpec = (
    &'static str,
    &'static str,
    [&'static str; 2],
    [[&'static str; 2]; 2],
);

const DISTRICTS: [DistrictSpec; 2] = [
    (
        "320508",
        "姑苏区",
        ["平江街道", "双塔街道"],
        [["钮家巷社区", "大儒社区"], ["锦帆社区", "沧浪亭社区"]],
    ),
    (
        "320505",
        "虎丘区",
        ["狮山街道", "枫桥街道"],
        [["金色社区", "长江社区"], ["白马涧社区", "马涧社区"]],
    ),
];

const WORKERS: [&str; 32] = [
    "zhang", "wang", "li", "zhao", "liu", "chen", "yang", "huang", "zhou", "wu", "xu", "sun", "ma",
    "zhu", "hu", "guo", "he", "lin", "gao", "luo", "zheng", "liang", "xie", "song", "tang", "han",
    "feng", "deng", "cao", "peng", "zeng", "xiao",
];

/// The sample city as GeoJSON text (WGS84), pretty-printed.
pub fn sample_city_geojson() -> String {
    let mut features = Vec::new();
    let rect = |x0: usize, y0: usize, w: usize, h: usize| {
        let x = |i: usize| round6(SAMPLE_ORIGIN[0] + i as f64 * SAMPLE_CELL_DEG);
        let y = |j: usize| round6(SAMPLE_ORIGIN[1] + j as f64 * SAMPLE_CELL_DEG);
        json!({"type": "Polygon", "coordinates": [[
            [x(x0), y(y0)], [x(x0 + w), y(y0)], [x(x0 + w), y(y0 + h)], [x(x0), y(y0 + h)], [x(x0), y(y0)]
        ]]})
    };
    let feature = |props: Value, geometry: Value| json!({"type": "Feature", "properties": props, "geometry": geometry});
    features.push(feature(
        json!({"code": "320500", "name": "苏州市", "level": "city"}),
        rect(0, 0, 8, 4),
    ));
    let mut worker = WORKERS.iter();
    for (d, (dcode, dname, streets, communities)) in DISTRICTS.iter().enumerate() {
        let dx = d * 4;
        features.push(feature(
            json!({"code": dcode, "name": dname, "level": "district", "parent": "320500"}),
            rect(dx, 0, 4, 4),
        ));
        for (s, sname) in streets.iter().enumerate() {
            let scode = format!("{dcode}{:03}", s + 1);
            let sx = dx + s * 2;
            features.push(feature(
                json!({"code": scode, "name": sname, "level": "street", "parent": dcode}),
                rect(sx, 0, 2, 4),
            ));
            for (c, cname) in communities[s].iter().enumerate() {
                let ccode = format!("{scode}{:03}", c + 1);
                let cy = c * 2;
                features.push(feature(
                    json!({"code": ccode, "name": cname, "level": "community", "parent": scode}),
                    rect(sx, cy, 2, 2),
                ));
                for k in 0..4 {
                    let code = format!("{ccode}{:02}", k + 1);
                    let w = worker.next().copied().unwrap_or("spare");
                    features.push(feature(
                        json!({
                            "code": code,
                            "name": format!("{cname}第{}网格", k + 1),
                            "level": "cell",
                            "parent": ccode,
                            "worker": format!("w-{w}"),
                        }),
                        rect(sx + k % 2, cy + k / 2, 1, 1),
                    ));
                }
            }
        }
    }
    let doc = json!({"type": "FeatureCollection", "name": "gridsense-sample-suzhou", "features": features});
    // invariant: a serde_json::Value always serialises.
    serde_json::to_string_pretty(&doc).unwrap_or_default()
}

/// A synthetic grid of `streets × 100 communities × 25 cells` square cells of `cell_deg` degrees,
/// for benchmarks (40 streets make 100 000 cells). Codes are valid and unique.
pub fn generated_grid(streets: usize, cell_deg: f64, edge_distance_m: f64) -> Grid {
    let square = |x: usize, y: usize| {
        let x0 = 120.0 + x as f64 * cell_deg;
        let y0 = 30.0 + y as f64 * cell_deg;
        let (x1, y1) = (
            120.0 + (x + 1) as f64 * cell_deg,
            30.0 + (y + 1) as f64 * cell_deg,
        );
        Shape::new(vec![Polygon {
            exterior: vec![[x0, y0], [x1, y0], [x1, y1], [x0, y1], [x0, y0]],
            holes: vec![],
        }])
    };
    let mut cells = Vec::with_capacity(streets * 2500);
    let mut areas = Vec::new();
    // streets side by side in rows of 8; a street is 10×10 communities; a community 5×5 cells
    for s in 0..streets {
        let (sx, sy) = ((s % 8) * 50, (s / 8) * 50);
        let scode = format!("320508{:03}", s + 1);
        for c in 0..100 {
            let (cx, cy) = (sx + (c % 10) * 5, sy + (c / 10) * 5);
            let ccode = format!("{scode}{:03}", c + 1);
            for k in 0..25 {
                let code = format!("{ccode}{:02}", k + 1);
                let Ok(code) = GridCode::parse(code) else {
                    continue;
                };
                let Ok(worker) = WorkerId::parse(format!("w-{}", cells.len())) else {
                    continue;
                };
                cells.push(Cell {
                    code,
                    name: String::new(),
                    worker,
                    shape: square(cx + k % 5, cy + k / 5),
                });
            }
        }
        areas.push(Area {
            code: scode,
            name: format!("street {}", s + 1),
            level: Level::Street,
            shape: square(sx, sy),
        });
    }
    Grid::new(None, areas, cells, edge_distance_m)
}

fn round6(v: f64) -> f64 {
    (v * 1e6).round() / 1e6
}
