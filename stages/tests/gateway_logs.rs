//! The gateway never logs a token: every log line it and its HTTP stack write
//! while serving good and bad tokens is captured and searched.

mod gateway_support;

use std::io::Write;
use std::sync::{Arc, Mutex};

use gateway_support::{invoice, start, MemoryBook, ALL_TOKEN, CURRENT_PERIOD, SCOPED_TOKEN};
use tracing_subscriber::fmt::MakeWriter;

/// A log destination that keeps everything written to it.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(bytes);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> MakeWriter<'a> for Captured {
    type Writer = Captured;

    fn make_writer(&'a self) -> Self::Writer {
        self.clone()
    }
}

#[tokio::test]
async fn tokens_never_appear_in_logs() {
    let captured = Captured::default();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::TRACE)
        .with_ansi(false)
        .with_writer(captured.clone())
        .finish();
    tracing::subscriber::set_global_default(subscriber).expect("only test of this binary");
    let wrong_token = "tok-wrong-93b7e1c0aa";
    let dir = tempfile::tempdir().unwrap();
    let gateway =
        start(dir.path(), MemoryBook::with(vec![invoice("obu-1", CURRENT_PERIOD, 1.0)])).await;
    let client = reqwest::Client::new();

    for (path, token) in [
        ("/invoice/obu-1", ALL_TOKEN),
        ("/invoice/obu-9", SCOPED_TOKEN),
        ("/invoice/obu-1?period=abc", ALL_TOKEN),
        ("/invoice/obu-1", wrong_token),
        ("/nowhere", ALL_TOKEN),
    ] {
        client.get(gateway.url(path)).bearer_auth(token).send().await.unwrap();
    }
    gateway.stop().await.unwrap();

    let logs = String::from_utf8(captured.0.lock().unwrap().clone()).unwrap();
    assert_eq!(logs.matches("request served").count(), 5, "every request is logged:\n{logs}");
    assert!(logs.contains("status=401") && logs.contains("status=403"), "{logs}");
    for token in [ALL_TOKEN, SCOPED_TOKEN, wrong_token] {
        assert!(!logs.contains(token), "token leaked into logs:\n{logs}");
    }
}
