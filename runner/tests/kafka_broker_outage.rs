//! The broker stops for ten seconds while OBUs send fixes over WebSocket to
//! a runner that puts them on Kafka. The WebSocket source applies
//! backpressure: acknowledgements stop while the broker is away, nothing is
//! refused or dropped, and once the broker is back every frame is
//! acknowledged, every fix is on the topic exactly once and billed once.
//!
//! The test starts a broker of its own (so stopping it disturbs no other
//! test) with `.ci/kafka.sh start DIR` on free ports, and restarts it with the
//! very command line the script started it with, keeping its data.

mod kafka_common;
mod support;

use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use futures::{SinkExt, StreamExt};
use geographiclib_rs::{Geodesic, InverseGeodesic};
use kafka_common::{Gatewayed, Topic};
use tokio_tungstenite::tungstenite::Message;

const OBUS: usize = 20;
const FRAMES_PER_OBU: usize = 300;
const FIXES_PER_FRAME: usize = 5;
/// Frames an OBU sends before it waits for acknowledgements.
const WINDOW: usize = 20;
/// Pause between two frames of one OBU.
const FRAME_EVERY: Duration = Duration::from_millis(50);
/// Metres an OBU moves north between fixes one second apart.
const STEP_M: f64 = 25.0;
const DEG_PER_M: f64 = 1.0 / 111_200.0;
const BROKER_DOWN: Duration = Duration::from_secs(10);
/// When, after the clients start, the broker is stopped.
const STOP_AFTER: Duration = Duration::from_secs(3);

/// A broker of this test's own; stopped (and its data dropped) when dropped.
struct Broker {
    dir: PathBuf,
    bootstrap: String,
    /// The broker once this test restarted it: reaped here, or it would
    /// linger as a zombie that `kafka.sh stop` takes for alive.
    restarted: Option<std::process::Child>,
}

impl Broker {
    fn start(dir: &Path) -> Broker {
        let (port, controller) = (support::free_port(), support::free_port());
        let out = Command::new("bash")
            .args([".ci/kafka.sh", "start", dir.to_str().unwrap()])
            .current_dir(support::repo_root())
            .env("KAFKA_PORT", port.to_string())
            .env("KAFKA_CONTROLLER_PORT", controller.to_string())
            .stderr(Stdio::inherit())
            .output()
            .expect("bash runs");
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success(), "private broker did not start: {stdout}");
        let bootstrap = stdout
            .lines()
            .find_map(|l| l.strip_prefix("KAFKA_BOOTSTRAP="))
            .expect("the script prints KAFKA_BOOTSTRAP")
            .trim()
            .to_owned();
        Broker { dir: dir.to_owned(), bootstrap, restarted: None }
    }

    fn pid(&self) -> u32 {
        let text = std::fs::read_to_string(self.dir.join("kafka.pid")).expect("kafka.pid");
        text.trim().parse().expect("pid is a number")
    }

    /// Stops the broker with SIGTERM (bounded; SIGKILL after 30 s) and
    /// returns its command line, to start it again later.
    fn stop_keeping_data(&self) -> Vec<String> {
        let pid = self.pid();
        let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).expect("broker cmdline");
        let argv: Vec<String> = cmdline
            .split(|&b| b == 0)
            .filter(|a| !a.is_empty())
            .map(|a| String::from_utf8_lossy(a).into_owned())
            .collect();
        signal("TERM", pid);
        let deadline = Instant::now() + Duration::from_secs(30);
        while Path::new(&format!("/proc/{pid}")).exists() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(100));
        }
        if Path::new(&format!("/proc/{pid}")).exists() {
            signal("KILL", pid);
        }
        argv
    }

    /// Starts the broker again with `argv`, on the data it left.
    fn resume(&mut self, argv: &[String]) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join("kafka.out"))
            .expect("kafka.out opens");
        let child = Command::new(&argv[0])
            .args(&argv[1..])
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log clones"))
            .stderr(log)
            .spawn()
            .expect("the broker starts again");
        std::fs::write(self.dir.join("kafka.pid"), child.id().to_string()).expect("pid written");
        self.restarted = Some(child);
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        // Its data is dropped anyway: no need for a clean shutdown.
        if let Some(mut child) = self.restarted.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        let _ = Command::new("bash")
            .args([".ci/kafka.sh", "stop", self.dir.to_str().unwrap()])
            .current_dir(support::repo_root())
            .status();
    }
}

fn signal(name: &str, pid: u32) {
    let _ = Command::new("kill").args([format!("-{name}"), pid.to_string()]).status();
}

/// The websocket -> kafka half; ready once its WebSocket port accepts.
fn start_producer(dir: &Path, topic: &Topic) -> (support::Background, u16) {
    for _attempt in 0..5 {
        let port = support::free_port();
        let text = format!(
            "[sources.obus]\ntype = \"websocket\"\nlisten = \"127.0.0.1:{port}\"\n\
             path = \"/ws\"\n\n{}",
            topic.queue_toml(Some("obus"))
        );
        let path = dir.join("outage-producer.toml");
        std::fs::write(&path, text).unwrap();
        let mut runner = support::Background::spawn(&path, &[], dir, "outage-producer");
        let deadline = Instant::now() + support::START_TIMEOUT;
        while runner.exited().is_none() && Instant::now() < deadline {
            if TcpStream::connect(("127.0.0.1", port)).is_ok() {
                return (runner, port);
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        assert!(runner.stderr().contains("cannot listen on"), "producer:\n{}", runner.stderr());
    }
    panic!("no free port for the producer after five attempts");
}

fn rfc3339(ms: i64) -> String {
    let time = chrono::DateTime::<chrono::Utc>::from_timestamp_millis(ms).expect("time in range");
    time.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

fn obu_id(i: usize) -> String {
    format!("outage-{i:02}")
}

fn lat(i: usize, k: usize) -> f64 {
    50.0 + i as f64 * 0.02 + k as f64 * STEP_M * DEG_PER_M
}

fn frame(i: usize, f: usize, t0_ms: i64) -> String {
    let fixes: Vec<serde_json::Value> = (0..FIXES_PER_FRAME)
        .map(|j| {
            let k = f * FIXES_PER_FRAME + j;
            let ts = rfc3339(t0_ms + k as i64 * 1000);
            serde_json::json!({"obu_id": obu_id(i), "ts": ts, "lat": lat(i, k), "lon": 11.9})
        })
        .collect();
    serde_json::Value::Array(fixes).to_string()
}

/// One OBU: sends its frames paced and windowed; returns when each was acknowledged.
async fn obu(url: String, i: usize, t0_ms: i64) -> Result<Vec<Instant>, String> {
    let (ws, _) =
        tokio_tungstenite::connect_async(url.as_str()).await.map_err(|e| e.to_string())?;
    let (mut write, mut read) = ws.split();
    let mut acked: Vec<Option<Instant>> = vec![None; FRAMES_PER_OBU];
    let (mut sent, mut done) = (0, 0);
    let mut pace = tokio::time::interval(FRAME_EVERY);
    while done < FRAMES_PER_OBU {
        tokio::select! {
            _ = pace.tick(), if sent < FRAMES_PER_OBU && sent - done < WINDOW => {
                write.send(Message::text(frame(i, sent, t0_ms))).await.map_err(|e| e.to_string())?;
                sent += 1;
            }
            message = read.next() => {
                let text = match message {
                    Some(Ok(Message::Text(text))) => text,
                    Some(Ok(_)) => continue,
                    Some(Err(e)) => return Err(format!("read: {e}")),
                    None => return Err(format!("closed after {done} acks")),
                };
                let reply: serde_json::Value =
                    serde_json::from_str(&text).map_err(|e| e.to_string())?;
                let n = reply["ack"].as_u64().ok_or_else(|| format!("not an ack: {text}"))?;
                let slot = acked
                    .get_mut((n as usize).wrapping_sub(1))
                    .ok_or_else(|| format!("unknown: {text}"))?;
                if slot.is_some() || reply["fixes"] != FIXES_PER_FRAME {
                    return Err(format!("repeated or wrong ack: {text}"));
                }
                *slot = Some(Instant::now());
                done += 1;
            }
        }
    }
    Ok(acked.into_iter().flatten().collect())
}

fn expected_m(i: usize) -> f64 {
    let geodesic = Geodesic::wgs84();
    (1..FRAMES_PER_OBU * FIXES_PER_FRAME)
        .map(|k| -> f64 { geodesic.inverse(lat(i, k - 1), 11.9, lat(i, k), 11.9) })
        .sum()
}

#[test]
fn a_broker_outage_holds_websocket_clients_back_and_loses_nothing() {
    kafka_common::bootstrap();
    let started = Instant::now();
    let dir = tempfile::tempdir().unwrap();
    let mut broker = Broker::start(&dir.path().join("broker"));
    let mut topic = Topic::fresh("outage", 4);
    topic.bootstrap = broker.bootstrap.clone();
    kafka_common::create_topic(&topic.bootstrap, &topic.topic, topic.partitions);

    let store = dir.path().join("outage.db");
    let mut consumer: Gatewayed =
        kafka_common::billing_consumer(dir.path(), "outage-consumer", &topic, &store);
    let (mut producer, ws_port) = start_producer(dir.path(), &topic);

    let t0_ms = chrono::Utc::now().timestamp_millis() - 3_600_000;
    let url = format!("ws://127.0.0.1:{ws_port}/ws");
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap();
    let clients: Vec<_> = (0..OBUS)
        .map(|i| {
            let task = obu(url.clone(), i, t0_ms);
            runtime.spawn(async move { tokio::time::timeout(Duration::from_secs(90), task).await })
        })
        .collect();
    let clients_since = Instant::now();
    std::thread::sleep(STOP_AFTER);
    let stopping = Instant::now();
    let argv = broker.stop_keeping_data();
    let stopped = Instant::now();
    println!("outage: the broker took {:.1} s to stop", (stopped - stopping).as_secs_f64());
    std::thread::sleep(BROKER_DOWN);
    let resumed = Instant::now();
    broker.resume(&argv);

    let results: Vec<_> = runtime.block_on(futures::future::join_all(clients));
    let mut acks = Vec::new();
    for (i, result) in results.into_iter().enumerate() {
        match result {
            Ok(Ok(Ok(times))) => acks.extend(times),
            other => panic!(
                "OBU {i} failed: {other:?}\nproducer:\n{}",
                kafka_common::tail(&producer.stderr())
            ),
        }
    }
    let all_acked = clients_since.elapsed();
    // Frames already with librdkafka when the broker stopped may still be
    // confirmed at once; two seconds later nothing can be.
    let quiet_from = stopped + Duration::from_secs(2);
    let during = acks.iter().filter(|t| **t > quiet_from && **t < resumed).count();
    let before = acks.iter().filter(|t| **t <= stopped).count();
    let fixes = (OBUS * FRAMES_PER_OBU * FIXES_PER_FRAME) as i64;

    producer.terminate(Duration::from_secs(30)).expect("producer ends on SIGTERM");
    assert_eq!(topic.messages(), fixes, "every fix is on the topic exactly once");
    let quiet = Duration::from_secs(3);
    kafka_common::wait_quiet(&mut consumer, fixes as f64, quiet, Duration::from_secs(60));
    let page = consumer.metrics().expect("consumer metrics");
    kafka_common::drain(&mut consumer, &topic, 0, Duration::from_secs(5));

    let billed = support::billed_m(&store);
    for i in 0..OBUS {
        let metres = billed.get(&obu_id(i)).copied().unwrap_or(0.0);
        let want = expected_m(i);
        let tolerance = 0.001 * (FRAMES_PER_OBU * FIXES_PER_FRAME) as f64;
        assert!(
            (metres - want).abs() < tolerance,
            "{} billed {metres} m, expected {want:.3} m",
            obu_id(i)
        );
    }
    println!(
        "outage: {fixes} fixes in {} frames, {before} acked before the broker stopped, {during} \
         in the outage, all acked after {:.1} s; consumer received {}; test {:.1} s",
        acks.len(),
        all_acked.as_secs_f64(),
        support::sample_sum(
            &page,
            "toll_component_received_events_total",
            &[("component", "distance")]
        ),
        started.elapsed().as_secs_f64()
    );
    assert!(before > 0, "frames were acknowledged before the outage");
    assert_eq!(during, 0, "no frame is acknowledged while the broker is away");
    assert_eq!(acks.len(), OBUS * FRAMES_PER_OBU, "every frame is acknowledged once");
}
