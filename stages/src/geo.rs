//! Distances on the WGS-84 ellipsoid.
//!
//! Consecutive fixes are close together, so most distances are short. For
//! those the ellipsoid is replaced by its tangent plane at the midpoint, scaled
//! by the meridional and prime-vertical radii of curvature there; the error
//! grows with the square of the length and stays below a millimetre per
//! kilometre up to [`SHORT_M`]. Longer lines use Karney's geodesic algorithm
//! (accurate to nanometres), which costs about twenty times more.

use geographiclib_rs::{Geodesic, InverseGeodesic};

/// WGS-84 semi-major axis, metres.
const A: f64 = 6_378_137.0;
/// WGS-84 flattening.
const F: f64 = 1.0 / 298.257_223_563;
/// First eccentricity squared.
const E2: f64 = F * (2.0 - F);
/// Lines longer than this (by the fast estimate) use the exact geodesic.
pub const SHORT_M: f64 = 10_000.0;

/// Geodesic distance in metres between two points given in degrees.
pub fn distance_m(lat1: f64, lon1: f64, lat2: f64, lon2: f64) -> f64 {
    let estimate = tangent_plane_m(lat1, lon1, lat2, lon2);
    if estimate < SHORT_M {
        estimate
    } else {
        exact_m(lat1, lon1, lat2, lon2)
    }
}

/// Karney's solution of the inverse geodesic problem on WGS-84.
pub fn exact_m(lat1: f64, lon1: f64, lat2: f64, lon2: f64) -> f64 {
    let s12: f64 = Geodesic::wgs84().inverse(lat1, lon1, lat2, lon2);
    s12
}

fn tangent_plane_m(lat1: f64, lon1: f64, lat2: f64, lon2: f64) -> f64 {
    let phi = ((lat1 + lat2) * 0.5).to_radians();
    let (sin_phi, cos_phi) = phi.sin_cos();
    let w2 = 1.0 - E2 * sin_phi * sin_phi;
    let w = w2.sqrt();
    let prime_vertical = A / w;
    let meridional = A * (1.0 - E2) / (w2 * w);
    let mut dlon = lon2 - lon1;
    if dlon > 180.0 {
        dlon -= 360.0;
    } else if dlon < -180.0 {
        dlon += 360.0;
    }
    let north = meridional * (lat2 - lat1).to_radians();
    let east = prime_vertical * cos_phi * dlon.to_radians();
    // `hypot` guards against overflow that cannot happen at these magnitudes,
    // and costs several times more.
    (north * north + east * east).sqrt()
}

/// Metres per degree around a fixed point, for cheap distance checks against
/// that point (a parked vehicle's position). Within a few hundred metres of
/// the point the error is far below GPS noise.
#[derive(Clone, Copy, Debug, Default)]
pub struct LocalFrame {
    lat: f64,
    lon: f64,
    m_per_deg_lat: f64,
    m_per_deg_lon: f64,
}

impl LocalFrame {
    pub fn at(lat: f64, lon: f64) -> Self {
        let phi = lat.to_radians();
        let (sin_phi, cos_phi) = phi.sin_cos();
        let w2 = 1.0 - E2 * sin_phi * sin_phi;
        let w = w2.sqrt();
        LocalFrame {
            lat,
            lon,
            m_per_deg_lat: (A * (1.0 - E2) / (w2 * w)).to_radians(),
            m_per_deg_lon: (A / w * cos_phi).to_radians(),
        }
    }

    /// Approximate distance in metres from the frame's point.
    pub fn distance_m(&self, lat: f64, lon: f64) -> f64 {
        let north = (lat - self.lat) * self.m_per_deg_lat;
        let mut dlon = lon - self.lon;
        if dlon > 180.0 {
            dlon -= 360.0;
        } else if dlon < -180.0 {
            dlon += 360.0;
        }
        let east = dlon * self.m_per_deg_lon;
        (north * north + east * east).sqrt()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{RngExt, SeedableRng};

    #[test]
    fn short_lines_agree_with_karney_within_a_millimetre_per_kilometre() {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(7);
        for _ in 0..20_000 {
            let lat: f64 = rng.random_range(-80.0..80.0);
            let lon: f64 = rng.random_range(-180.0..180.0);
            let dlat: f64 = rng.random_range(-0.08..0.08);
            let dlon: f64 = rng.random_range(-0.08..0.08);
            let exact = exact_m(lat, lon, lat + dlat, lon + dlon);
            let fast = distance_m(lat, lon, lat + dlat, lon + dlon);
            let tolerance = 1e-6 * exact + 1e-6;
            assert!(
                (fast - exact).abs() <= tolerance,
                "{lat},{lon} +{dlat},{dlon}: {fast} vs {exact}"
            );
        }
    }

    #[test]
    fn local_frame_matches_the_geodesic_near_its_point() {
        let frame = LocalFrame::at(50.3, 11.9);
        for (dlat, dlon) in [(0.0001, 0.0), (0.0, 0.0002), (-0.0003, 0.0004), (0.002, -0.001)] {
            let exact = exact_m(50.3, 11.9, 50.3 + dlat, 11.9 + dlon);
            let approx = frame.distance_m(50.3 + dlat, 11.9 + dlon);
            assert!((approx - exact).abs() < 0.01 + 1e-4 * exact, "{approx} vs {exact}");
        }
    }

    #[test]
    fn one_degree_of_latitude_at_the_equator_is_110574_metres() {
        // Length of the meridian arc from 0 to 1 degree on WGS-84.
        assert!((distance_m(0.0, 0.0, 1.0, 0.0) - 110_574.389).abs() < 0.01);
    }

    #[test]
    fn lines_across_the_antimeridian_are_short() {
        let d = distance_m(10.0, 179.9999, 10.0, -179.9999);
        assert!((d - exact_m(10.0, 179.9999, 10.0, -179.9999)).abs() < 1e-3);
        assert!(d < 30.0);
    }
}
