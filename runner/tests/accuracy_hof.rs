//! Billing accuracy on real traces: the Hof floating-car data replayed through
//! the example pipeline, compared per track with the length of the track's
//! hand-corrected route (data: Map and Route GmbH & Co. KG via the
//! map-matching-2 project, routes © OpenStreetMap contributors; see
//! ../shared/data/hof-fcd-oberfranken/README.md).

mod support;

use std::collections::BTreeMap;

use geographiclib_rs::{Geodesic, InverseGeodesic};

/// Length of every route in `ground_truth.csv`, by track id, computed here
/// with Karney's geodesic, independently of the product's distance code.
fn reference_lengths() -> BTreeMap<String, f64> {
    let path = support::shared_data().join("hof-fcd-oberfranken/ground_truth.csv");
    let text = std::fs::read_to_string(&path).expect("ground_truth.csv is readable");
    let geodesic = Geodesic::wgs84();
    let mut lengths = BTreeMap::new();
    for line in text.lines().skip(1) {
        let (id, wkt) = line.split_once(',').expect("id,WKT");
        let body = wkt.trim_matches('"').trim_start_matches("MULTILINESTRING").trim();
        let mut length = 0.0;
        for part in body.split("),") {
            let coords: Vec<(f64, f64)> = part
                .trim_matches(|c: char| c == '(' || c == ')' || c.is_whitespace())
                .split(',')
                .map(|pair| {
                    let mut it = pair.split_whitespace().map(|v| v.parse::<f64>().unwrap());
                    (it.next().unwrap(), it.next().unwrap())
                })
                .collect();
            for w in coords.windows(2) {
                let s: f64 = geodesic.inverse(w[0].1, w[0].0, w[1].1, w[1].0);
                length += s;
            }
        }
        lengths.insert(format!("hof-{id}"), length);
    }
    lengths
}

#[test]
fn hof_tracks_are_billed_within_three_percent_of_their_true_routes() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("hof.db");
    let env = [("TOLL_STAGES__AGGREGATE__STORE", support::store_url(dir.path(), "hof.db"))];
    support::run_pipeline("pipelines/replay-hof.toml", &env);

    let reference = reference_lengths();
    assert_eq!(reference.len(), 263, "every track has a reference route");
    let billed = support::billed_m(&db);
    let (mut ratios, mut billed_sum, mut true_sum) = (Vec::new(), 0.0, 0.0);
    for (track, &true_m) in reference.iter().filter(|(_, &m)| m > 500.0) {
        let got = billed.get(track).copied().unwrap_or(0.0);
        ratios.push(got / true_m);
        billed_sum += got;
        true_sum += true_m;
    }
    let total = billed_sum / true_sum;
    let (p50, p95) = (support::quantile(&ratios, 0.5), support::quantile(&ratios, 0.95));
    let max = ratios.iter().copied().fold(f64::MIN, f64::max);
    println!(
        "hof: {} tracks over 500 m, billed/true p5 {:.4} p50 {p50:.4} p95 {p95:.4} max {max:.4}, \
         fleet total {:.2} %",
        ratios.len(),
        support::quantile(&ratios, 0.05),
        total * 100.0
    );
    assert!(p95 <= 1.03, "95th percentile of billed/true is {p95:.4}");
    assert!(max <= 1.10, "worst track billed/true is {max:.4}");
    assert!((0.98..=1.01).contains(&total), "fleet total is {:.2} % of the truth", total * 100.0);
}
