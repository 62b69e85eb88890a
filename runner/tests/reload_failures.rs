//! Reloads that cannot be applied leave the pipeline running on what worked:
//! a token file that is deleted is waited for, and a change whose component
//! cannot be built (its port is taken) is reported as failed, keeps the
//! previous settings, and is tried again when the file is saved again.

mod support;

use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::Value;

const OLD_TOKEN: &str = "reload-old-token";
const NEW_TOKEN: &str = "reload-new-token";

fn pipeline(dir: &Path, ws: u16, gateway: u16) -> String {
    format!(
        r#"[sources.obus]
type = "websocket"
listen = "127.0.0.1:{ws}"

[stages.distance]
type = "distance"
inputs = ["obus"]

[stages.aggregate]
type = "aggregate"
inputs = ["distance"]
price_per_km = 0.2
store = "sqlite://{store}"

[sinks.gateway]
type = "gateway"
inputs = ["aggregate"]
listen = "127.0.0.1:{gateway}"
tokens_file = "{tokens}"
"#,
        store = dir.join("toll.db").display(),
        tokens = dir.join("tokens").display(),
    )
}

/// The latest reload record once its attempt passes `after`.
fn next_reload(client: &reqwest::blocking::Client, base: &str, after: u64) -> Value {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let (_, body) = support::get(client, &format!("{base}/health"), None);
        let health: Value = serde_json::from_str(&body).expect("health is json");
        if health["reload"]["attempt"].as_u64().unwrap_or(0) > after {
            return health["reload"].clone();
        }
        assert!(Instant::now() < deadline, "no reload after attempt {after}: {health}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn attempts(client: &reqwest::blocking::Client, base: &str) -> u64 {
    let (_, body) = support::get(client, &format!("{base}/health"), None);
    let health: Value = serde_json::from_str(&body).expect("health is json");
    health["reload"]["attempt"].as_u64().unwrap_or(0)
}

#[test]
fn failed_reloads_keep_the_pipeline_running_on_what_worked() {
    let dir = tempfile::tempdir().unwrap();
    let tokens = dir.path().join("tokens");
    std::fs::write(&tokens, format!("{OLD_TOKEN}\n")).unwrap();
    let (mut runner, ports, path) = support::start_pipeline(
        dir.path(),
        "failures",
        2,
        |p| pipeline(dir.path(), p[0], p[1]),
        |p| p[1],
        &[],
    );
    let base = format!("http://127.0.0.1:{}", ports[1]);
    let client = support::http();
    let invoice = format!("{base}/invoice/obu-1");

    // A token file deleted to be written again: nothing is reloaded until it
    // is back, and the gateway keeps its tokens meanwhile.
    std::fs::remove_file(&tokens).unwrap();
    std::thread::sleep(Duration::from_millis(800));
    assert_eq!(attempts(&client, &base), 0, "a missing token file is waited for");
    assert_eq!(support::get(&client, &invoice, Some(OLD_TOKEN)).0, 404, "old token still works");
    std::fs::write(&tokens, format!("{NEW_TOKEN}\n")).unwrap();
    let record = next_reload(&client, &base, 0);
    assert_eq!(record["outcome"], "applied", "{record}");
    assert_eq!(record["changed"], serde_json::json!(["gateway"]), "{record}");
    assert_eq!(support::get(&client, &invoice, Some(NEW_TOKEN)).0, 404, "new token works");
    assert_eq!(support::get(&client, &invoice, Some(OLD_TOKEN)).0, 401, "old token refused");

    // A new port that another process holds: the change fails and the
    // source runs on with its previous settings.
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let taken_port = taken.local_addr().unwrap().port();
    let moved = pipeline(dir.path(), taken_port, ports[1]);
    std::fs::write(&path, &moved).unwrap();
    let record = next_reload(&client, &base, 1);
    assert_eq!(record["outcome"], "failed", "{record}");
    let error = record["error"].as_str().expect("a failed reload says why");
    assert!(error.contains("cannot listen"), "{error}");
    std::net::TcpStream::connect(("127.0.0.1", ports[0])).expect("the old port still serves");

    // Saving the same file again tries the change again; once the port is
    // free it goes through.
    drop(taken);
    std::fs::write(&path, &moved).unwrap();
    let record = next_reload(&client, &base, 2);
    assert_eq!(record["outcome"], "applied", "{record}");
    assert_eq!(record["changed"], serde_json::json!(["obus"]), "{record}");
    std::net::TcpStream::connect(("127.0.0.1", taken_port)).expect("the new port serves");

    let (_, health) = support::get(&client, &format!("{base}/health"), None);
    assert!(health.contains("\"status\":\"ok\""), "{health}");
    let status = runner.terminate(Duration::from_secs(30));
    assert!(status.is_some_and(|s| s.success()), "{}", runner.stderr());
}
