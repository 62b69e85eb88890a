//! Invoices do not depend on the order fixes arrive in, nor on duplicates:
//! one day of the CapMetro bus fleet (vehicle positions collected by the
//! CapMetrics project, github.com/scascketta/CapMetrics, from Capital Metro
//! open data) replayed in file order, in time order, and with every row twice.

mod support;

use std::path::Path;

fn replay(
    dir: &Path,
    name: &str,
    overrides: &[(&str, &str)],
) -> std::collections::BTreeMap<(String, String), i64> {
    let mut env = vec![("TOLL_STAGES__AGGREGATE__STORE", support::store_url(dir, name))];
    env.extend(overrides.iter().map(|(k, v)| (*k, (*v).to_owned())));
    support::run_pipeline("pipelines/replay-capmetro.toml", &env);
    support::totals(&dir.join(name))
}

#[test]
fn invoices_are_identical_in_file_order_time_order_and_with_every_row_twice() {
    let dir = tempfile::tempdir().unwrap();
    let file_order = replay(dir.path(), "file.db", &[]);
    let time_order =
        replay(dir.path(), "time.db", &[("TOLL_SOURCES__CAPMETRO__REPLAY__ORDER", "time")]);
    let twice =
        replay(dir.path(), "twice.db", &[("TOLL_SOURCES__CAPMETRO__REPLAY__REPEAT_EACH", "2")]);

    let km: f64 = file_order.values().map(|&mm| mm as f64 / 1e6).sum();
    let buses = file_order.keys().map(|(obu, _)| obu).collect::<std::collections::BTreeSet<_>>();
    println!("capmetro: {} buses billed, {km:.1} km in total", buses.len());
    // 140 buses report; bus 2374 reports one position all day and bills nothing.
    assert!(buses.len() >= 135, "only {} of 140 buses billed", buses.len());
    assert!(km > 6_000.0 && km < 7_000.0, "the fleet drove about 6,600 km, billed {km:.1}");
    assert_eq!(file_order, time_order, "file order and time order bill the same");
    assert_eq!(file_order, twice, "rows sent twice are billed once");
}
