//! Messages in the topic that are not fixes.

mod kafka_support;

use kafka_support::*;
use rdkafka::message::{Headers, Message};
use stages::queues::kafka::dead_letter::{
    ERROR_HEADER, SOURCE_OFFSET_HEADER, SOURCE_PARTITION_HEADER, SOURCE_TOPIC_HEADER,
};

const GOOD_1: &[u8] =
    br#"{"obu_id":"obu-p","ts":"2024-05-01T12:00:00.000Z","lat":50.1,"lon":11.9}"#;
const GOOD_2: &[u8] =
    br#"{"obu_id":"obu-p","ts":"2024-05-01T12:00:01.000Z","lat":50.2,"lon":11.8}"#;
const NOT_JSON: &[u8] = b"\x00\x01 not a fix";
const NOT_A_FIX: &[u8] = br#"{"obu_id":"obu-p","lat":50.1}"#;

fn header<'a>(message: &'a rdkafka::message::OwnedMessage, key: &str) -> &'a str {
    let headers = message.headers().expect("dead letter has headers");
    let found = headers.iter().find(|h| h.key == key).and_then(|h| h.value);
    std::str::from_utf8(found.unwrap_or_else(|| panic!("header {key}"))).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn poison_is_dead_lettered_and_the_fixes_behind_it_arrive() {
    let (topic, dlt, group) = (unique("poison"), unique("poison-dlt"), unique("group"));
    create_topic(&topic, 1, &[]).await;
    let messages =
        [("obu-p", GOOD_1), ("obu-p", NOT_JSON), ("obu-p", NOT_A_FIX), ("obu-p", GOOD_2)];
    produce_raw(&topic, &messages).await;
    let extra = format!("partitions = 1\ndead_letter_topic = \"{dlt}\"\ncommit_interval_ms = 50");
    let mut consuming = start_consuming(&config(&topic, &group, &extra));

    let batches = consuming.batches_with(2).await;
    let ts: Vec<i64> = batches.iter().flat_map(|b| fixes_of(b).iter().map(|f| f.ts_ms)).collect();
    assert_eq!(ts, vec![1_714_564_800_000, 1_714_564_801_000]);
    let rejected = &[("reason", "poison_message")];
    let rejected =
        consuming.telemetry.counter_sum("toll_component_rejected_events_total", rejected);
    assert_eq!(rejected, 2);

    let letters = read_raw(&dlt, 1, 2);
    let payloads: Vec<&[u8]> = letters.iter().map(|m| m.payload().unwrap()).collect();
    assert_eq!(payloads, vec![NOT_JSON, NOT_A_FIX]);
    assert_eq!(letters[0].key(), Some(&b"obu-p"[..]));
    assert_eq!(header(&letters[0], SOURCE_TOPIC_HEADER), topic);
    assert_eq!(header(&letters[0], SOURCE_PARTITION_HEADER), "0");
    assert_eq!(header(&letters[1], SOURCE_OFFSET_HEADER), "2");
    assert!(header(&letters[1], ERROR_HEADER).contains("ts"), "names the missing field");

    // The poison does not hold its partition back once the fixes are done.
    drop(batches);
    eventually("committed offsets", || committed(&topic, &group, 1), |c| *c == vec![Some(4)]).await;
    consuming.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn poison_without_a_dead_letter_topic_is_counted_and_skipped() {
    let (topic, group) = (unique("skip"), unique("group"));
    create_topic(&topic, 1, &[]).await;
    produce_raw(&topic, &[("k", NOT_JSON), ("k", GOOD_1)]).await;
    let mut consuming = start_consuming(&config(&topic, &group, "commit_interval_ms = 50"));

    let batch = consuming.next_batch().await;
    assert_eq!(fixes_of(&batch).len(), 1);
    drop(batch);
    eventually("committed offsets", || committed(&topic, &group, 1), |c| *c == vec![Some(2)]).await;
    let rejected = &[("reason", "poison_message")];
    assert_eq!(
        consuming.telemetry.counter_sum("toll_component_rejected_events_total", rejected),
        1
    );
    consuming.stop().await.unwrap();
}
