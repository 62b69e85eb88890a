//! Replaying recorded files: the three sample data sets, ordering, repeats,
//! bad rows and configuration mistakes.

mod obu_sim_support;

use std::io::Write;

use obu_sim_support::{build, run};
use stages::telemetry::Telemetry;

const DATA: &str = "/work/shared/data";

/// Hof floating-car data (iisys-hof/map-matching-2, data of Map and Route GmbH
/// & Co. KG; Wöltche 2023, doi:10.1111/tgis.13107). Track ids stand in for OBUs.
fn hof() -> String {
    format!(
        "[replay]\npath = \"{DATA}/hof-fcd-oberfranken/points.csv\"\nformat = \"csv\"\n\
         obu_id_field = \"id\"\nobu_id_prefix = \"hof-\"\ntime_field = \"time\"\n\
         point_field = \"geometry\"\n"
    )
}

/// Vehicle positions collected by the CapMetrics project,
/// github.com/scascketta/CapMetrics, from Capital Metro open data.
fn capmetro(extra: &str) -> String {
    format!(
        "[replay]\npath = \"{DATA}/capmetro-austin-buses/2015-03-08.csv\"\nformat = \"csv\"\n\
         obu_id_field = \"vehicle_id\"\nobu_id_prefix = \"capmetro-\"\ntime_field = \"timestamp\"\n\
         lat_field = \"latitude\"\nlon_field = \"longitude\"\n{extra}"
    )
}

/// Barefoot Munich test drive, © BMW Car IT GmbH / the barefoot project (Apache 2.0).
fn munich(extra: &str) -> String {
    format!(
        "[replay]\npath = \"{DATA}/barefoot-munich-drive/x0001-001.json\"\nformat = \"json\"\n\
         obu_id = \"munich-x0001\"\ntime_field = \"time\"\npoint_field = \"point\"\n{extra}"
    )
}

#[tokio::test]
async fn hof_points_replay_every_row_with_263_tracks() {
    let r = run(&hof()).await;

    assert_eq!(r.fixes.len(), 14_651);
    assert_eq!(r.by_obu().len(), 263);
    assert_eq!(r.rejected("unparseable_row"), 0);
    // First row: `0,2019-03-11 08:33:24+00:00,POINT (11.925816 50.301888)`.
    let first = &r.fixes[0];
    assert_eq!(first.obu_id, "hof-0");
    assert_eq!(first.ts_ms, 1_552_293_204_000);
    assert_eq!((first.lat, first.lon), (50.301888, 11.925816));
}

#[tokio::test]
async fn capmetro_day_replays_140_vehicles_across_the_dst_switch() {
    let r = run(&capmetro("")).await;

    assert_eq!(r.fixes.len(), 12_354);
    assert_eq!(r.by_obu().len(), 140);
    // `8852,2015-03-08T01:40:54-06:00,...` is 07:40:54 UTC.
    assert_eq!(r.fixes[0].ts_ms, 1_425_800_454_000);
    assert_eq!((r.fixes[0].lat, r.fixes[0].lon), (30.296957, -97.74189));
    // The 174 CST rows are before 08:00 UTC (02:00 CST, when clocks jump to
    // 03:00 CDT); every CDT row is at or after it.
    let switch_ms = 1_425_801_600_000;
    assert_eq!(r.fixes.iter().filter(|f| f.ts_ms < switch_ms).count(), 174);
}

#[tokio::test]
async fn munich_drive_replays_1194_fixes_from_a_json_array() {
    let r = run(&munich("")).await;

    assert_eq!(r.fixes.len(), 1_194);
    assert_eq!(r.by_obu().len(), 1);
    // 06:54:07+0200 and 07:14:02+0200, i.e. 04:54:07 and 05:14:02 UTC.
    assert_eq!(r.fixes[0].ts_ms, 1_410_324_847_000);
    assert_eq!(r.fixes[1_193].ts_ms, 1_410_324_847_000 + (19 * 60 + 55) * 1_000);
    assert!((r.fixes[0].lat - 48.163_506_629).abs() < 1e-8);
    assert!((r.fixes[0].lon - 11.564_388_282).abs() < 1e-8);
}

#[tokio::test]
async fn file_order_keeps_rows_and_receive_time_is_the_replay_clock() {
    let r = run(&capmetro("order = \"file\"\n")).await;

    let backwards = r.fixes.windows(2).filter(|p| p[1].ts_ms < p[0].ts_ms).count();
    assert!(backwards > 0, "the file is grouped by trip, not sorted");
    let mut clock = i64::MIN;
    for fix in &r.fixes {
        clock = clock.max(fix.ts_ms);
        assert_eq!(fix.ctx.received_ms, clock);
    }
}

#[tokio::test]
async fn time_order_sorts_fixes_by_time() {
    let r = run(&capmetro("order = \"time\"\n")).await;

    assert_eq!(r.fixes.len(), 12_354);
    assert!(r.fixes.windows(2).all(|p| p[0].ts_ms <= p[1].ts_ms));
    assert!(r.fixes.iter().all(|f| f.ctx.received_ms == f.ts_ms));
}

#[tokio::test]
async fn repeat_each_sends_every_row_twice_in_a_row() {
    let r = run(&munich("repeat_each = 2\n")).await;

    assert_eq!(r.fixes.len(), 2 * 1_194);
    assert!(r.fixes.chunks(2).all(|pair| pair[0] == pair[1]));
}

#[tokio::test]
async fn paced_replay_sends_everything_in_time_order() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("paced.csv");
    std::fs::write(
        &path,
        "obu,t,lat,lon\na,2024-01-01T00:00:00Z,1,2\nb,2024-01-01T00:00:01Z,1,2\n\
         a,2024-01-01T00:00:02Z,1,2\n",
    )
    .unwrap();
    let r = run(&format!(
        "speedup = 100\n[replay]\npath = {path:?}\nformat = \"csv\"\nobu_id_field = \"obu\"\n\
         time_field = \"t\"\nlat_field = \"lat\"\nlon_field = \"lon\"\n"
    ))
    .await;

    let ids: Vec<&str> = r.fixes.iter().map(|f| f.obu_id.as_str()).collect();
    assert_eq!(ids, ["a", "b", "a"]);
}

#[tokio::test]
async fn broken_rows_are_skipped_and_counted() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("broken.csv");
    let mut file = std::fs::File::create(&path).unwrap();
    writeln!(file, "vehicle,when,lat,lon").unwrap();
    writeln!(file, "7,2024-01-01T00:00:00Z,48.1,11.5").unwrap();
    writeln!(file, "7,yesterday,48.1,11.5").unwrap(); // unparseable time
    writeln!(file, "7,2024-01-01T00:00:10Z,north,11.5").unwrap(); // bad coordinate text
    writeln!(file, "7,2024-01-01T00:00:20Z,48.1").unwrap(); // missing field
    writeln!(file, "7,2024-01-01T00:00:30Z,95.0,11.5").unwrap(); // off the globe
    writeln!(file, "7,2024-01-01T00:00:40+01:00,48.2,11.6").unwrap();
    drop(file);

    let r = run(&format!(
        "[replay]\npath = {path:?}\nformat = \"csv\"\nobu_id_field = \"vehicle\"\n\
         time_field = \"when\"\nlat_field = \"lat\"\nlon_field = \"lon\"\n"
    ))
    .await;

    assert_eq!(r.fixes.len(), 2);
    assert_eq!(r.rejected("unparseable_row"), 4);
    // 00:00:40+01:00 is 23:00:40 UTC the day before.
    assert_eq!(r.fixes[1].ts_ms, 1_704_067_200_000 - 3_600_000 + 40_000);
}

#[tokio::test]
async fn json_lines_skip_broken_lines() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("fixes.jsonl");
    std::fs::write(
        &path,
        concat!(
            r#"{"id": 12, "ts": "2024-01-01 00:00:00+0000", "pos": {"lat": 1.5, "lon": 2.5}}"#,
            "\n",
            r#"{"id": 12, "ts": "2024-01-01 00:00:01+0000", "pos": {"lat": "1.6", "lon": 2.5}}"#,
            "\n",
        ),
    )
    .unwrap();
    let mut rest = std::fs::OpenOptions::new().append(true).open(&path).unwrap();
    rest.write_all(
        b"{not json}\n\
         \n\
         {\"id\": 12, \"ts\": 1704067202, \"pos\": {\"lat\": 1.7, \"lon\": 2.5}}\n",
    )
    .unwrap();

    let r = run(&format!(
        "[replay]\npath = {path:?}\nformat = \"json\"\nobu_id_field = \"id\"\n\
         time_field = \"ts\"\nlat_field = \"/pos/lat\"\nlon_field = \"/pos/lon\"\n"
    ))
    .await;

    let lats: Vec<f64> = r.fixes.iter().map(|f| f.lat).collect();
    assert_eq!(lats, [1.5, 1.6]);
    assert!(r.fixes.iter().all(|f| f.obu_id == "12"));
    assert_eq!(r.rejected("unparseable_row"), 2);
}

#[test]
fn missing_column_is_a_build_error_naming_it_and_the_available_ones() {
    let declaration = hof().replace("point_field = \"geometry\"", "point_field = \"geom\"");
    let error = build(&declaration, &Telemetry::new()).err().expect("build fails");

    let message = error.to_string();
    assert!(message.contains("\"geom\""), "{message}");
    assert!(message.contains("id, time, geometry"), "{message}");
}

#[test]
fn missing_file_is_a_build_error_naming_the_path() {
    let declaration = munich("").replace("x0001-001.json", "no-such-file.json");
    let error = build(&declaration, &Telemetry::new()).err().expect("build fails");

    assert!(error.to_string().contains("no-such-file.json"), "{error}");
    assert!(std::error::Error::source(&error).is_some(), "the io error is chained");
}

#[test]
fn incomplete_mapping_is_refused_when_parsed() {
    let declaration = munich("").replace("point_field = \"point\"\n", "");
    let error = build(&declaration, &Telemetry::new()).err().expect("parse fails");

    assert!(error.to_string().contains("point_field"), "{error}");
}
