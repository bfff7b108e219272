//! Fuzzes the GeoJSON grid import: any text in any of the three coordinate systems must import or
//! fail with named problems, never panic; an imported grid must answer lookups at any point
//! (NaN and infinities included), and the index must agree with a scan about containment.
//!
//! Input: byte 0 picks the coordinate system, the last 16 bytes (when there are more than 16)
//! are a point to look up, and the rest is the file.
#![no_main]

use hub::grid::{Grid, ImportOptions};
use libfuzzer_sys::fuzz_target;
use protocol::Crs;

fuzz_target!(|data: &[u8]| {
    let [pick, rest @ ..] = data else {
        return;
    };
    let (text, point) = if rest.len() > 16 {
        let (t, p) = rest.split_at(rest.len() - 16);
        let lon = f64::from_le_bytes(p[..8].try_into().unwrap());
        let lat = f64::from_le_bytes(p[8..].try_into().unwrap());
        (t, Some((lat, lon)))
    } else {
        (rest, None)
    };
    let Ok(text) = std::str::from_utf8(text) else {
        return;
    };
    let options = ImportOptions {
        crs: [Crs::Wgs84, Crs::Gcj02, Crs::Bd09][*pick as usize % 3],
        ..ImportOptions::default()
    };
    let mut last = (0, 0);
    let Ok((grid, _warnings)) = Grid::from_geojson(text, &options, &mut |done, total| {
        assert!(done <= total);
        last = (done, total);
    }) else {
        return;
    };
    let mut points: Vec<(f64, f64)> = point.into_iter().collect();
    for cell in grid.cells().iter().take(4) {
        if let Some(p) = cell.shape.polygons.first().and_then(|p| p.exterior.first()) {
            points.push((p[1], p[0]));
        }
        let (min, max) = (cell.shape.min, cell.shape.max);
        points.push(((min[1] + max[1]) / 2.0, (min[0] + max[0]) / 2.0));
    }
    for (lat, lon) in points {
        let located = grid.locate(lat, lon);
        let scanned = grid.locate_by_scan(lat, lon);
        if let Some(found) = &located {
            if found.inside {
                assert!(found.cell.shape.contains([lon, lat]));
            }
            let _ = grid.chain(&found.cell.code);
        }
        if scanned.is_some() {
            assert!(
                located.as_ref().is_some_and(|l| l.inside),
                "the scan finds a cell containing ({lat}, {lon}) but the index does not"
            );
        }
    }
});
