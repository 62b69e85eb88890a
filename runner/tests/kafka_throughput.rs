//! Load measurement, run by hand (not a test of behaviour): fixes per second
//! from WebSocket clients through a producing runner, Kafka, and a consuming
//! runner's distance and aggregate stages.
//!
//!   eval "$(bash .ci/kafka.sh start)"
//!   cargo test --release -p runner --test kafka_throughput -- --ignored --nocapture
//!
//! `KAFKA_LOAD_FIXES` (default 1,000,000) and `KAFKA_LOAD_CONNECTIONS`
//! (default 200) size the load; compare with `bash .ci/kafka.sh perf`.

mod kafka_common;
mod support;

use std::net::TcpStream;
use std::path::Path;
use std::time::{Duration, Instant};

use futures::{SinkExt, StreamExt};
use kafka_common::Topic;
use tokio_tungstenite::tungstenite::Message;

const FIXES_PER_FRAME: usize = 50;
/// Frames a connection sends before it waits for acknowledgements.
const WINDOW: usize = 8;

fn env_or(name: &str, default: usize) -> usize {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

fn start_producer(dir: &Path, topic: &Topic) -> (support::Background, u16) {
    let port = support::free_port();
    let text = format!(
        "[sources.obus]\ntype = \"websocket\"\nlisten = \"127.0.0.1:{port}\"\n\n{}",
        topic.queue_toml(Some("obus"))
    );
    let path = dir.join("load-producer.toml");
    std::fs::write(&path, text).unwrap();
    let mut runner = support::Background::spawn(&path, &[], dir, "load-producer");
    let deadline = Instant::now() + support::START_TIMEOUT;
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(runner.exited().is_none() && Instant::now() < deadline, "{}", runner.stderr());
        std::thread::sleep(Duration::from_millis(100));
    }
    (runner, port)
}

/// One connection = one OBU driving north, fixes one second apart.
async fn connection(url: String, i: usize, frames: usize, t0_ms: i64) -> Result<(), String> {
    let (ws, _) =
        tokio_tungstenite::connect_async(url.as_str()).await.map_err(|e| e.to_string())?;
    let (mut write, mut read) = ws.split();
    let (mut sent, mut acked) = (0, 0);
    let frame = |f: usize| {
        let fixes: Vec<String> = (0..FIXES_PER_FRAME)
            .map(|j| {
                let k = f * FIXES_PER_FRAME + j;
                let ts =
                    chrono::DateTime::<chrono::Utc>::from_timestamp_millis(t0_ms + k as i64 * 1000)
                        .expect("time in range")
                        .to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
                let lat = 48.0 + (i % 100) as f64 * 0.03 + k as f64 * 0.0002;
                let lon = 10.0 + (i / 100) as f64 * 0.05;
                format!(r#"{{"obu_id":"load-{i:05}","ts":"{ts}","lat":{lat},"lon":{lon}}}"#)
            })
            .collect();
        format!("[{}]", fixes.join(","))
    };
    while acked < frames {
        while sent < frames && sent - acked < WINDOW {
            write.send(Message::text(frame(sent))).await.map_err(|e| e.to_string())?;
            sent += 1;
        }
        match read.next().await {
            Some(Ok(Message::Text(text))) if text.contains("\"ack\"") => acked += 1,
            Some(Ok(Message::Text(text))) => return Err(format!("not an ack: {text}")),
            Some(Ok(_)) => {}
            Some(Err(e)) => return Err(e.to_string()),
            None => return Err("closed".to_owned()),
        }
    }
    Ok(())
}

#[test]
#[ignore = "load measurement, run by hand"]
fn websocket_to_kafka_to_billing_throughput() {
    let fixes = env_or("KAFKA_LOAD_FIXES", 1_000_000);
    let connections = env_or("KAFKA_LOAD_CONNECTIONS", 200);
    let frames = fixes.div_ceil(connections * FIXES_PER_FRAME);
    let fixes = frames * connections * FIXES_PER_FRAME;
    let topic = Topic::fresh("load", 12);
    kafka_common::create_topic(&topic.bootstrap, &topic.topic, topic.partitions);
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("load.db");
    let consumer = kafka_common::billing_consumer(dir.path(), "load-consumer", &topic, &store);
    let (mut producer, port) = start_producer(dir.path(), &topic);

    let t0_ms = chrono::Utc::now().timestamp_millis() - 2 * 86_400_000;
    let url = format!("ws://127.0.0.1:{port}/ws");
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap();
    let started = Instant::now();
    let results: Vec<_> = runtime.block_on(async {
        let tasks: Vec<_> = (0..connections)
            .map(|i| tokio::spawn(connection(url.clone(), i, frames, t0_ms)))
            .collect();
        futures::future::join_all(tasks).await
    });
    let ingested = started.elapsed();
    for result in results {
        result.expect("client task").expect("client run");
    }
    let deadline = Instant::now() + Duration::from_secs(600);
    while consumer.distance_received() < fixes as f64 {
        assert!(Instant::now() < deadline, "not consumed within 600 s");
        std::thread::sleep(Duration::from_millis(50));
    }
    let billed = started.elapsed();
    let rate = |d: Duration| fixes as f64 / d.as_secs_f64();
    println!(
        "throughput: {fixes} fixes over {connections} connections ({FIXES_PER_FRAME} a frame, \
         window {WINDOW}): all acked (on Kafka) after {:.1} s = {:.0} fixes/s; received by \
         distance after {:.1} s = {:.0} fixes/s end to end",
        ingested.as_secs_f64(),
        rate(ingested),
        billed.as_secs_f64(),
        rate(billed)
    );
    producer.kill();
}
