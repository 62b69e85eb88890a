use super::*;
use crate::ack::AckStatus;
use crate::sources::websocket::wire;

#[test]
fn ws_url_gives_host_port_and_keeps_the_path_in_the_url() {
    let endpoint = Endpoint::parse("ws://127.0.0.1:30000/ws").expect("valid");

    assert_eq!(endpoint.host, "127.0.0.1");
    assert_eq!(endpoint.port, 30000);
    assert_eq!(endpoint.url, "ws://127.0.0.1:30000/ws");
}

#[test]
fn port_defaults_to_80_and_ipv6_loses_its_brackets() {
    let endpoint = Endpoint::parse("ws://[::1]/ingest").expect("valid");

    assert_eq!((endpoint.host.as_str(), endpoint.port), ("::1", 80));
}

#[test]
fn other_schemes_and_missing_hosts_are_refused_with_the_reason() {
    let cases = [
        ("wss://example.org/ws", "not supported yet"),
        ("http://127.0.0.1/ws", "must start with ws://"),
        ("127.0.0.1:30000", "must start with ws://"),
        ("ws://", "not a URL"),
        ("not a url at all", "not a URL"),
    ];
    for (url, expected) in cases {
        let error = Endpoint::parse(url).expect_err(url);

        assert!(error.contains(expected), "{url}: {error}");
    }
}

#[test]
fn source_replies_are_read_back() {
    let refusal = wire::parse_frame(b"nope", 0, 1, &mut Vec::new()).expect_err("not json");

    assert_eq!(
        Reply::parse(&wire::ack_reply(3, 10, AckStatus::Delivered)),
        Reply::Ack { frame: 3, fixes: 10 }
    );
    assert_eq!(Reply::parse(&wire::ack_reply(4, 1, AckStatus::Failed)), Reply::Nack { frame: 4 });
    let Reply::Error { frame, error, detail } = Reply::parse(&wire::error_reply(5, &refusal))
    else {
        panic!("an error reply");
    };
    assert_eq!((frame, error.as_str()), (Some(5), "malformed frame"));
    assert_eq!(detail, refusal.to_string());
}

#[test]
fn unexpected_replies_are_kept_as_text() {
    for text in ["hello", "{}", r#"{"ack":1,"nack":1}"#, "[1]"] {
        assert_eq!(Reply::parse(text), Reply::Unknown(text.to_owned()), "{text}");
    }
}

#[test]
fn backoff_doubles_within_jitter_up_to_the_maximum_and_resets() {
    let (min, max) = (Duration::from_millis(100), Duration::from_millis(350));
    let mut backoff = Backoff::new(min, max);
    // Bases 100, 200, 350 (capped), 350; each delay lies in [base / 2, base].
    let bases = [100, 200, 350, 350];

    for base in bases {
        let delay = backoff.next_delay().as_millis() as u64;
        assert!((base / 2..=base).contains(&delay), "{delay} ms for base {base} ms");
    }
    backoff.reset();
    assert!(backoff.next_delay() <= min);
}
