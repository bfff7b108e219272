//! Conversion of GCJ-02 (Chinese web maps) and BD-09 (Baidu) coordinates to WGS84.
//!
//! GCJ-02 is WGS84 plus a published, deterministic offset; BD-09 is a further rotation of GCJ-02.
//! The forward transforms are the widely published ones; the GCJ-02 → WGS84 inverse is solved by
//! fixed-point iteration to well under a millimetre. Points outside China are left unchanged, as
//! every implementation does. This module is pure arithmetic: it must not do I/O.

use protocol::Crs;

const A: f64 = 6_378_245.0;
const EE: f64 = 0.006_693_421_622_965_943;
const X_PI: f64 = std::f64::consts::PI * 3000.0 / 180.0;

/// Converts `(lat, lon)` expressed in `crs` to WGS84.
pub fn to_wgs84(lat: f64, lon: f64, crs: Crs) -> (f64, f64) {
    match crs {
        Crs::Wgs84 => (lat, lon),
        Crs::Gcj02 => gcj02_to_wgs84(lat, lon),
        Crs::Bd09 => {
            let (glat, glon) = bd09_to_gcj02(lat, lon);
            gcj02_to_wgs84(glat, glon)
        }
    }
}

/// WGS84 → GCJ-02.
pub fn wgs84_to_gcj02(lat: f64, lon: f64) -> (f64, f64) {
    if out_of_china(lat, lon) {
        return (lat, lon);
    }
    let (dlat, dlon) = offset(lat, lon);
    (lat + dlat, lon + dlon)
}

/// GCJ-02 → WGS84, by iterating the forward transform until it reproduces the input.
pub fn gcj02_to_wgs84(lat: f64, lon: f64) -> (f64, f64) {
    if out_of_china(lat, lon) {
        return (lat, lon);
    }
    let (mut wlat, mut wlon) = (lat, lon);
    for _ in 0..30 {
        let (glat, glon) = wgs84_to_gcj02(wlat, wlon);
        let (elat, elon) = (glat - lat, glon - lon);
        wlat -= elat;
        wlon -= elon;
        if elat.abs() < 1e-12 && elon.abs() < 1e-12 {
            break;
        }
    }
    (wlat, wlon)
}

/// GCJ-02 → BD-09.
pub fn gcj02_to_bd09(lat: f64, lon: f64) -> (f64, f64) {
    let z = (lon * lon + lat * lat).sqrt() + 0.00002 * (lat * X_PI).sin();
    let theta = lat.atan2(lon) + 0.000003 * (lon * X_PI).cos();
    (z * theta.sin() + 0.006, z * theta.cos() + 0.0065)
}

/// BD-09 → GCJ-02.
pub fn bd09_to_gcj02(lat: f64, lon: f64) -> (f64, f64) {
    let x = lon - 0.0065;
    let y = lat - 0.006;
    let z = (x * x + y * y).sqrt() - 0.00002 * (y * X_PI).sin();
    let theta = y.atan2(x) - 0.000003 * (x * X_PI).cos();
    (z * theta.sin(), z * theta.cos())
}

fn out_of_china(lat: f64, lon: f64) -> bool {
    !(72.004..=137.8347).contains(&lon) || !(0.8293..=55.8271).contains(&lat)
}

fn offset(lat: f64, lon: f64) -> (f64, f64) {
    use std::f64::consts::PI;
    let x = lon - 105.0;
    let y = lat - 35.0;
    let mut dlat = -100.0 + 2.0 * x + 3.0 * y + 0.2 * y * y + 0.1 * x * y + 0.2 * x.abs().sqrt();
    dlat += (20.0 * (6.0 * x * PI).sin() + 20.0 * (2.0 * x * PI).sin()) * 2.0 / 3.0;
    dlat += (20.0 * (y * PI).sin() + 40.0 * (y / 3.0 * PI).sin()) * 2.0 / 3.0;
    dlat += (160.0 * (y / 12.0 * PI).sin() + 320.0 * (y * PI / 30.0).sin()) * 2.0 / 3.0;
    let mut dlon = 300.0 + x + 2.0 * y + 0.1 * x * x + 0.1 * x * y + 0.1 * x.abs().sqrt();
    dlon += (20.0 * (6.0 * x * PI).sin() + 20.0 * (2.0 * x * PI).sin()) * 2.0 / 3.0;
    dlon += (20.0 * (x * PI).sin() + 40.0 * (x / 3.0 * PI).sin()) * 2.0 / 3.0;
    dlon += (150.0 * (x / 12.0 * PI).sin() + 300.0 * (x / 30.0 * PI).sin()) * 2.0 / 3.0;
    let rad_lat = lat / 180.0 * PI;
    let magic = 1.0 - EE * rad_lat.sin() * rad_lat.sin();
    let sqrt_magic = magic.sqrt();
    (
        (dlat * 180.0) / ((A * (1.0 - EE)) / (magic * sqrt_magic) * PI),
        (dlon * 180.0) / (A / sqrt_magic * rad_lat.cos() * PI),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    // Reference values published with wandergis/coordtransform (test/app.js), input
    // (lon 116.404, lat 39.915), Tiananmen, Beijing.
    const LAT: f64 = 39.915;
    const LON: f64 = 116.404;

    fn close(a: (f64, f64), b: (f64, f64), eps: f64) -> bool {
        (a.0 - b.0).abs() < eps && (a.1 - b.1).abs() < eps
    }

    #[test]
    fn wgs84_to_gcj02_matches_the_published_reference_point() {
        let got = wgs84_to_gcj02(LAT, LON);
        assert!(
            close(got, (39.91640428150164, 116.41024449916938), 1e-9),
            "{got:?}"
        );
    }

    #[test]
    fn gcj02_and_bd09_convert_as_published() {
        let bd = gcj02_to_bd09(LAT, LON);
        assert!(
            close(bd, (39.92133699351021, 116.41036949371029), 1e-9),
            "{bd:?}"
        );
        let gcj = bd09_to_gcj02(LAT, LON);
        assert!(
            close(gcj, (39.90865673957631, 116.39762729119315), 1e-9),
            "{gcj:?}"
        );
    }

    #[test]
    fn gcj02_to_wgs84_inverts_the_forward_transform_exactly() {
        let (wlat, wlon) = gcj02_to_wgs84(LAT, LON);
        // the published one-step inverse is approximate (about a metre off); ours refines it
        assert!(close(
            (wlat, wlon),
            (39.91359571849836, 116.39775550083061),
            2e-5
        ));
        let back = wgs84_to_gcj02(wlat, wlon);
        assert!(close(back, (LAT, LON), 1e-10), "{back:?}");
    }

    #[test]
    fn points_outside_china_are_unchanged() {
        assert_eq!(to_wgs84(48.8566, 2.3522, Crs::Gcj02), (48.8566, 2.3522));
        assert_eq!(wgs84_to_gcj02(-33.9, 151.2), (-33.9, 151.2));
    }

    #[test]
    fn bd09_converts_to_wgs84_through_gcj02() {
        let (glat, glon) = wgs84_to_gcj02(31.30, 120.62);
        let (blat, blon) = gcj02_to_bd09(glat, glon);
        let (lat, lon) = to_wgs84(blat, blon, Crs::Bd09);
        // BD-09's published inverse is itself approximate to a few decimetres
        assert!(close((lat, lon), (31.30, 120.62), 1e-5), "{lat} {lon}");
    }
}
