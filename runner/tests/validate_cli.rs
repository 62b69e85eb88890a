//! `runner validate` and `runner graph` on good and broken pipeline files:
//! every refusal names the file, line and column of the offending text.

mod support;

use std::path::Path;

const GOOD: &str = r#"[sources.fleet]
type = "obu_sim"
trucks = 2

[queues.fixes]
type = "memory"
inputs = ["fleet"]

[stages.distance]
type = "distance"
inputs = ["fixes"]

[stages.aggregate]
type = "aggregate"
inputs = ["distance"]
price_per_km = 0.19
store = "sqlite://var/validate-test.db"
"#;

/// Writes `text` as a pipeline file and runs `runner <command> --pipeline` on it.
fn validate(dir: &Path, text: &str, env: &[(&str, String)]) -> (bool, String, String) {
    let path = dir.join("pipeline.toml");
    std::fs::write(&path, text).unwrap();
    let path = path.to_str().unwrap();
    let output = support::runner(&["validate", "--pipeline", path], env).output().unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    (output.status.success(), stdout, stderr)
}

#[test]
fn a_good_file_validates_and_prints_its_graph() {
    let dir = tempfile::tempdir().unwrap();
    let (ok, stdout, stderr) = validate(dir.path(), GOOD, &[]);
    assert!(ok, "{stderr}");
    assert!(stdout.contains("stage  distance"), "{stdout}");
    assert!(stdout.contains("inputs=[fixes]"), "{stdout}");
}

#[test]
fn a_misspelled_key_is_named_at_its_line_and_column() {
    let dir = tempfile::tempdir().unwrap();
    let text = GOOD.replace("price_per_km = 0.19", "pric_per_km = 0.19");
    let (ok, _, stderr) = validate(dir.path(), &text, &[]);
    assert!(!ok);
    assert!(stderr.contains("pipeline.toml:16:1: unknown field `pric_per_km`"), "{stderr}");
}

#[test]
fn an_unknown_input_is_named_at_its_line_with_a_suggestion() {
    let dir = tempfile::tempdir().unwrap();
    let text = GOOD.replace(r#"inputs = ["fixes"]"#, r#"inputs = ["fixs"]"#);
    let (ok, _, stderr) = validate(dir.path(), &text, &[]);
    assert!(!ok);
    assert!(
        stderr.contains("pipeline.toml:11:11: `distance` takes unknown input `fixs`"),
        "{stderr}"
    );
    assert!(stderr.contains("did you mean `fixes`?"), "{stderr}");
}

#[test]
fn a_cycle_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let text = GOOD.replace(r#"inputs = ["fleet"]"#, r#"inputs = ["fleet", "again"]"#)
        + "\n[queues.again]\ntype = \"memory\"\ninputs = [\"fixes\"]\n";
    let (ok, _, stderr) = validate(dir.path(), &text, &[]);
    assert!(!ok);
    assert!(stderr.contains("form a cycle"), "{stderr}");
    assert!(stderr.contains("pipeline.toml:"), "{stderr}");
}

#[test]
fn an_input_of_the_wrong_event_kind_is_refused_where_it_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let text = GOOD.replace(r#"inputs = ["distance"]"#, r#"inputs = ["fixes"]"#);
    let (ok, _, stderr) = validate(dir.path(), &text, &[]);
    assert!(!ok);
    assert!(
        stderr.contains(
            "pipeline.toml:15:11: `fixes` emits fix events, \
             but `aggregate` (aggregate) takes only segment"
        ),
        "{stderr}"
    );
}

#[test]
fn unknown_types_and_tables_are_refused_with_what_is_known() {
    let dir = tempfile::tempdir().unwrap();
    let text =
        GOOD.replace(r#"type = "memory""#, r#"type = "kafkaa""#) + "\n[stage.x]\ntype = \"y\"\n";
    let (ok, _, stderr) = validate(dir.path(), &text, &[]);
    assert!(!ok);
    assert!(
        stderr.contains("pipeline.toml:6:1: unknown queue type `kafkaa`; known types: memory"),
        "{stderr}"
    );
    assert!(stderr.contains("pipeline.toml:19:2: unknown table `stage`"), "{stderr}");
}

#[test]
fn broken_toml_is_reported_at_the_error() {
    let dir = tempfile::tempdir().unwrap();
    let text = GOOD.replace("trucks = 2", "trucks = = 2");
    let (ok, _, stderr) = validate(dir.path(), &text, &[]);
    assert!(!ok);
    assert!(stderr.contains("pipeline.toml:3:"), "{stderr}");
    assert!(stderr.contains("invalid TOML"), "{stderr}");
}

#[test]
fn a_missing_file_is_a_clear_error() {
    let output =
        support::runner(&["validate", "--pipeline", "/nonexistent/p.toml"], &[]).output().unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("cannot read pipeline file /nonexistent/p.toml"), "{stderr}");
}

#[test]
fn values_can_be_overridden_from_the_environment_and_bad_ones_name_the_variable() {
    let dir = tempfile::tempdir().unwrap();
    let env = [("TOLL_STAGES__AGGREGATE__PRICE_PER_KM", "-1".to_owned())];
    let (ok, _, stderr) = validate(dir.path(), GOOD, &env);
    assert!(!ok);
    assert!(
        stderr.contains("set by environment variable TOLL_STAGES__AGGREGATE__PRICE_PER_KM"),
        "{stderr}"
    );

    let env = [("TOLL_STAGES__AGGREGATE__PRICE_PER_KM", "0.25".to_owned())];
    let (ok, _, stderr) = validate(dir.path(), GOOD, &env);
    assert!(ok, "{stderr}");
}

#[test]
fn other_toll_variables_are_not_taken_for_pipeline_keys() {
    let dir = tempfile::tempdir().unwrap();
    let env = [("TOLL_CI_CACHE", "/tmp/x".to_owned()), ("TOLL_SOURCESX", "1".to_owned())];
    let (ok, _, stderr) = validate(dir.path(), GOOD, &env);
    assert!(ok, "{stderr}");
}

#[test]
fn graph_prints_dot_with_event_kinds_on_edges() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("pipeline.toml");
    std::fs::write(&path, GOOD).unwrap();
    let output =
        support::runner(&["graph", "--pipeline", path.to_str().unwrap()], &[]).output().unwrap();
    assert!(output.status.success());
    let dot = String::from_utf8_lossy(&output.stdout);
    assert!(dot.starts_with("digraph pipeline {"), "{dot}");
    assert!(dot.contains("\"distance\" -> \"aggregate\" [label=\"segment\"];"), "{dot}");
}

#[test]
fn the_telemetry_table_is_checked_with_the_components() {
    let dir = tempfile::tempdir().unwrap();
    let good = format!("{GOOD}\n[telemetry]\nservice_name = \"v\"\nalways_trace = [\"obu-1\"]\n");
    let (ok, _, stderr) = validate(dir.path(), &good, &[]);
    assert!(ok, "{stderr}");

    let bad = good.replace("service_name = \"v\"", "sampling_ratio = 1.5\nexport_every = 3");
    let (ok, _, stderr) = validate(dir.path(), &bad, &[]);
    assert!(!ok);
    assert!(stderr.contains("pipeline.toml:21:1: unknown field `export_every`"), "{stderr}");
}
