//! Declarations of the `websocket` sink that cannot work are refused with the key and the reason.

use stages::component::Kind;
use stages::sinks::websocket::TYPE;

fn refusal(text: &str) -> (Vec<String>, String) {
    let value: toml::Value = toml::from_str(text).expect("test toml parses");
    let error = (TYPE.parse)(value).expect_err(text);
    (error.path, error.message)
}

#[test]
fn sink_type_is_named_websocket_and_takes_fixes() {
    let value: toml::Value = toml::from_str(r#"url = "ws://127.0.0.1:30000/ws""#).expect("toml");

    let config = (TYPE.parse)(value).expect("valid declaration");

    assert_eq!((TYPE.name, TYPE.kind), ("websocket", Kind::Sink));
    assert_eq!(config.signature().accepts, vec![stages::event::EventKind::Fix]);
}

#[test]
fn url_that_is_not_ws_is_refused_with_the_reason() {
    let cases = [
        (r#"url = "wss://127.0.0.1/ws""#, "wss:// (TLS) is not supported yet"),
        (r#"url = "http://127.0.0.1/ws""#, "must start with ws://"),
        (r#"url = "127.0.0.1:30000""#, "must start with ws://"),
        (r#"url = "ws://bad host/ws""#, "not a URL"),
    ];
    for (text, expected) in cases {
        let (path, message) = refusal(text);

        assert_eq!(path, vec!["url".to_owned()], "{text}");
        assert!(message.contains(expected), "{text}: {message}");
    }
}

#[test]
fn zero_backlog_is_refused() {
    let (path, message) = refusal("url = \"ws://127.0.0.1/ws\"\nbacklog_fixes = 0");

    assert_eq!(path, vec!["backlog_fixes".to_owned()]);
    assert_eq!(message, "must be at least 1");
}

#[test]
fn missing_url_and_unknown_keys_are_refused() {
    let (_, missing) = refusal("format = \"native\"");
    let (_, unknown) = refusal("url = \"ws://127.0.0.1/ws\"\nbacklog = 10");

    assert!(missing.contains("url"), "{missing}");
    assert!(unknown.contains("backlog"), "{unknown}");
}
