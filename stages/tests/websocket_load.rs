//! Many OBUs at once: every fix of every connection arrives exactly once.

mod websocket_support;

use std::collections::{BTreeSet, HashMap};

use futures::StreamExt;
use serde_json::json;
use tokio::task::JoinSet;
use websocket_support::*;

const CLIENTS: usize = 1_000;
const BACKLOG_FIXES: usize = 3;
/// Go OBUs are numbered from here, so their ids never meet the native ones.
const GO_ID_BASE: usize = 100_000;

/// Each client and its server side hold one descriptor; the rest is headroom.
fn ensure_enough_file_descriptors() {
    let Ok(limits) = std::fs::read_to_string("/proc/self/limits") else { return };
    let soft = limits
        .lines()
        .find(|line| line.starts_with("Max open files"))
        .and_then(|line| line.split_whitespace().nth(3))
        .and_then(|value| value.parse::<usize>().ok());
    if let Some(soft) = soft {
        let needed = 2 * CLIENTS + 200;
        assert!(soft >= needed, "raise `ulimit -n` to at least {needed} (it is {soft})");
    }
}

async fn obu(addr: std::net::SocketAddr, i: usize) {
    let mut client = connect(addr).await;
    let backlog: Vec<String> = (0..BACKLOG_FIXES)
        .map(|s| {
            format!(r#"{{"obu_id":"obu-{i}","ts":"2024-05-01T12:00:0{s}Z","lat":50,"lon":12}}"#)
        })
        .collect();
    send(&mut client, &format!("[{}]", backlog.join(","))).await;
    send(&mut client, &format!(r#"{{"obuID":{},"lat":50.1,"long":12.1}}"#, GO_ID_BASE + i)).await;

    let mut confirmations = BTreeSet::new();
    for _ in 0..2 {
        confirmations.insert(next_json(&mut client).await.to_string());
    }
    let expected: BTreeSet<String> =
        [json!({"ack": 1, "fixes": BACKLOG_FIXES}), json!({"ack": 2, "fixes": 1})]
            .iter()
            .map(|v| v.to_string())
            .collect();
    assert_eq!(confirmations, expected, "client {i}");

    client.close(None).await.expect("client closes");
    while let Some(Ok(_)) = client.next().await {}
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn thousand_concurrent_clients_deliver_every_fix_exactly_once() {
    ensure_enough_file_descriptors();
    let mut server = start("", 64);
    let mut batches = std::mem::replace(&mut server.batches, tokio::sync::mpsc::channel(1).1);
    // Counts fixes per OBU and confirms each batch by dropping it.
    let collector = tokio::spawn(async move {
        let mut per_obu: HashMap<String, usize> = HashMap::new();
        while let Some(batch) = batches.recv().await {
            for fix in fixes(&batch) {
                *per_obu.entry(fix.obu_id.to_string()).or_default() += 1;
            }
        }
        per_obu
    });

    let mut clients = JoinSet::new();
    for i in 0..CLIENTS {
        clients.spawn(obu(server.addr, i));
    }
    while let Some(done) = clients.join_next().await {
        done.expect("client task succeeds");
    }
    server.stop.send(true).expect("source listens for shutdown");
    let stopped = tokio::time::timeout(PATIENCE, server.task).await.expect("stops in time");
    stopped.expect("task not panicked").expect("clean stop");
    let per_obu = collector.await.expect("collector finishes");

    let mut expected: HashMap<String, usize> = HashMap::new();
    for i in 0..CLIENTS {
        expected.insert(format!("obu-{i}"), BACKLOG_FIXES);
        expected.insert((GO_ID_BASE + i).to_string(), 1);
    }
    assert_eq!(per_obu, expected);
    let frames = server.telemetry.counter_sum("toll_websocket_frames_total", &[]);
    assert_eq!(frames, 2 * CLIENTS as u64);
    let gauge = server.telemetry.render_prometheus();
    assert!(gauge.contains("toll_websocket_connections{component=\"obus\"} 0"), "{gauge}");
}
