//! Building a gateway: where tokens come from, and the errors of a bad
//! declaration, none of which may show a token.

mod gateway_support;

use gateway_support::{
    build, config, invoice, parse, start_with, tokens_text, write_tokens, MemoryBook, ALL_TOKEN,
    CURRENT_PERIOD, SCOPED_TOKEN,
};
use reqwest::StatusCode;
use stages::component::BuildError;
use stages::registry;
use stages::sinks::gateway::GatewayConfig;

/// The error and its causes, as the runner prints them.
fn chain(error: &BuildError) -> String {
    let mut text = error.to_string();
    let mut source = std::error::Error::source(error);
    while let Some(cause) = source {
        text.push_str(&format!(": {cause}"));
        source = cause.source();
    }
    text
}

fn build_error(config: &GatewayConfig) -> String {
    match build(config, Some(MemoryBook::default())) {
        Ok(_) => panic!("build should fail"),
        Err(error) => chain(&error),
    }
}

async fn status_with(base: &str, token: &str) -> StatusCode {
    let url = format!("{base}/invoice/obu-1");
    reqwest::Client::new().get(url).bearer_auth(token).send().await.unwrap().status()
}

#[tokio::test]
async fn tokens_file_with_comments_and_blank_lines_yields_every_token() {
    let dir = tempfile::tempdir().unwrap();
    let tokens = write_tokens(dir.path(), &tokens_text());
    let book = MemoryBook::with(vec![invoice("obu-1", CURRENT_PERIOD, 1_000.0)]);
    let gateway = start_with(&config(&tokens), book);

    assert_eq!(status_with(&gateway.base, ALL_TOKEN).await, StatusCode::OK);
    assert_eq!(status_with(&gateway.base, SCOPED_TOKEN).await, StatusCode::OK);
    assert_eq!(status_with(&gateway.base, "# gateway tokens").await, StatusCode::UNAUTHORIZED);
    gateway.stop().await.unwrap();
}

#[tokio::test]
async fn tokens_from_an_environment_variable_are_comma_separated() {
    let var = "TOLL_TEST_GATEWAY_TOKENS_ENV_OK";
    std::env::set_var(var, "tok-env-one, tok-env-two obu-2 ,");
    let config = parse(&format!("listen = \"127.0.0.1:0\"\ntokens_env = \"{var}\"\n"));
    let book = MemoryBook::with(vec![invoice("obu-1", CURRENT_PERIOD, 1_000.0)]);
    let gateway = start_with(&config, book);

    assert_eq!(status_with(&gateway.base, "tok-env-one").await, StatusCode::OK);
    assert_eq!(status_with(&gateway.base, "tok-env-two").await, StatusCode::FORBIDDEN);
    gateway.stop().await.unwrap();
}

#[test]
fn missing_tokens_file_is_a_build_error_naming_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("absent-tokens");

    let error = build_error(&config(&path));

    assert!(error.contains("gateway 'gateway' cannot load tokens"), "{error}");
    assert!(error.contains(&path.display().to_string()), "{error}");
}

#[test]
fn tokens_file_with_only_comments_is_a_build_error() {
    let dir = tempfile::tempdir().unwrap();
    let path = write_tokens(dir.path(), "# nothing yet\n\n");

    let error = build_error(&config(&path));

    assert!(error.contains(&format!("no token found in tokens file {}", path.display())));
}

#[test]
fn bad_tokens_file_lines_are_named_without_showing_the_token() {
    let dir = tempfile::tempdir().unwrap();
    let duplicate = write_tokens(dir.path(), &format!("{ALL_TOKEN}\n{ALL_TOKEN} obu-1\n"));
    let duplicate_error = build_error(&config(&duplicate));
    let bad_scope = write_tokens(dir.path(), &format!("{ALL_TOKEN} {}\n", "x".repeat(65)));
    let bad_scope_error = build_error(&config(&bad_scope));

    assert!(duplicate_error.contains("line 2 repeats a token"), "{duplicate_error}");
    assert!(bad_scope_error.contains("line 1 scopes the token"), "{bad_scope_error}");
    for error in [duplicate_error, bad_scope_error] {
        assert!(!error.contains(ALL_TOKEN), "{error}");
    }
}

#[test]
fn unset_tokens_variable_is_a_build_error_naming_the_variable() {
    let var = "TOLL_TEST_GATEWAY_TOKENS_ENV_UNSET";
    std::env::remove_var(var);
    let config = parse(&format!("listen = \"127.0.0.1:0\"\ntokens_env = \"{var}\"\n"));

    let error = build_error(&config);

    assert!(error.contains(&format!("environment variable {var}")), "{error}");
}

#[test]
fn gateway_without_an_input_publishing_invoices_is_a_build_error() {
    let dir = tempfile::tempdir().unwrap();
    let tokens = write_tokens(dir.path(), &tokens_text());

    let error = match build(&config(&tokens), None) {
        Ok(_) => panic!("build should fail"),
        Err(error) => error.to_string(),
    };

    assert_eq!(
        error,
        "gateway 'gateway' needs an input that publishes invoices, such as an aggregate stage"
    );
}

#[test]
fn taken_listen_address_is_a_build_error_naming_the_address() {
    let dir = tempfile::tempdir().unwrap();
    let tokens = write_tokens(dir.path(), &tokens_text());
    let holder = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let taken = holder.local_addr().unwrap();
    let text = format!("listen = \"{taken}\"\ntokens_file = {tokens:?}\n");

    let error = build_error(&parse(&text));

    assert!(error.contains(&format!("cannot listen on {taken}")), "{error}");
}

#[test]
fn declaration_needs_a_token_source_and_has_no_key_for_a_token_itself() {
    let parse_value = |text: &str| {
        let value: toml::Value = toml::from_str(text).unwrap();
        registry::parse::<GatewayConfig>(value).map(|_| ()).unwrap_err()
    };

    let no_source = parse_value("listen = \"127.0.0.1:6000\"");
    let inline_token = parse_value("tokens_env = \"GATEWAY_TOKENS\"\ntoken = \"tok-inline\"");
    let empty_env = parse_value("tokens_env = \"\"");

    assert_eq!(no_source.message, "give tokens_file, tokens_env or both");
    assert!(inline_token.message.contains("unknown field `token`"), "{}", inline_token.message);
    assert_eq!(empty_env.path, vec!["tokens_env".to_owned()]);
}

#[test]
fn tokens_file_is_a_referenced_file() {
    let config = parse("tokens_file = \"var/gateway-tokens\"");

    let files = stages::component::ComponentConfig::referenced_files(&config);

    assert_eq!(files, vec![std::path::PathBuf::from("var/gateway-tokens")]);
}
