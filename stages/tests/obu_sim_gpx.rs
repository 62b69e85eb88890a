//! Replaying GPX tracks: one OBU per track, named or numbered, or one fixed id.

mod obu_sim_support;

use obu_sim_support::{build, run};
use stages::telemetry::Telemetry;

const GPX: &str = r#"<?xml version="1.0" encoding="UTF-8"?>
<gpx version="1.1" creator="test" xmlns="http://www.topografix.com/GPX/1/1">
  <metadata><name>not a track</name><time>2024-01-01T00:00:00Z</time></metadata>
  <trk>
    <name>Truck &amp; Trailer 7</name>
    <trkseg>
      <trkpt lat="50.30" lon="11.90"><ele>500</ele><time>2024-06-01T10:00:00Z</time></trkpt>
      <trkpt lat="50.31" lon="11.91"><time>2024-06-01T12:00:05+02:00</time></trkpt>
    </trkseg>
    <trkseg>
      <trkpt lat="50.32" lon="11.92"><time>2024-06-01T10:00:10.500Z</time></trkpt>
      <trkpt lat="50.33" lon="11.93"/>
      <trkpt lat="north" lon="11.93"><time>2024-06-01T10:00:20Z</time></trkpt>
    </trkseg>
  </trk>
  <trk>
    <trkseg>
      <trkpt lat="-33.5" lon="151.25"><time>2024-06-01 10:00:00+1000</time></trkpt>
    </trkseg>
  </trk>
</gpx>
"#;

fn declaration(dir: &tempfile::TempDir, extra: &str) -> String {
    let path = dir.path().join("tracks.gpx");
    std::fs::write(&path, GPX).unwrap();
    format!("[replay]\npath = {path:?}\nformat = \"gpx\"\n{extra}")
}

#[tokio::test]
async fn tracks_become_obus_named_after_the_track_or_its_number() {
    let dir = tempfile::tempdir().unwrap();
    let r = run(&declaration(&dir, "obu_id_prefix = \"gpx-\"\n")).await;

    let ids: Vec<&str> = r.fixes.iter().map(|f| f.obu_id.as_str()).collect();
    assert_eq!(
        ids,
        ["gpx-Truck & Trailer 7", "gpx-Truck & Trailer 7", "gpx-Truck & Trailer 7", "gpx-track-2"]
    );
    // 2024-06-01T10:00:00Z by hand: 19875 days * 86400 s + 10 h.
    let ten_utc = 19_875 * 86_400_000 + 10 * 3_600_000;
    let times: Vec<i64> = r.fixes.iter().map(|f| f.ts_ms).collect();
    assert_eq!(times, [ten_utc, ten_utc + 5_000, ten_utc + 10_500, ten_utc - 10 * 3_600_000]);
    assert_eq!((r.fixes[3].lat, r.fixes[3].lon), (-33.5, 151.25));
    // The point without a time and the one with a bad latitude.
    assert_eq!(r.rejected("unparseable_row"), 2);
}

#[tokio::test]
async fn a_fixed_id_replaces_track_names() {
    let dir = tempfile::tempdir().unwrap();
    let r = run(&declaration(&dir, "obu_id = \"obu-gpx\"\n")).await;

    assert_eq!(r.fixes.len(), 4);
    assert!(r.fixes.iter().all(|f| f.obu_id == "obu-gpx"));
}

#[test]
fn malformed_gpx_is_a_build_error_with_the_line() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad.gpx");
    std::fs::write(&path, "<gpx>\n<trk>\n<trkseg></trk>\n</gpx>\n").unwrap();
    let declaration = format!("[replay]\npath = {path:?}\nformat = \"gpx\"\n");

    let error = build(&declaration, &Telemetry::new()).err().expect("build fails");
    let message = error.to_string();
    assert!(message.contains("bad.gpx") && message.contains("line 3"), "{message}");
}

#[test]
fn field_mappings_are_refused_for_gpx() {
    let dir = tempfile::tempdir().unwrap();
    let error = build(&declaration(&dir, "time_field = \"time\"\n"), &Telemetry::new())
        .err()
        .expect("parse fails");

    assert!(error.to_string().contains("time_field"), "{error}");
}
