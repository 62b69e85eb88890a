use super::*;

const RECEIVED_MS: Millis = 1_714_564_800_123;

fn parse(text: &str) -> Result<Vec<Fix>, FrameError> {
    let mut out = Vec::new();
    parse_frame(text.as_bytes(), RECEIVED_MS, 100, &mut out)?;
    Ok(out)
}

fn fix(obu_id: &str, ts_ms: Millis, lat: f64, lon: f64) -> Fix {
    let ctx = EventContext { received_ms: RECEIVED_MS, trace: None };
    Fix { obu_id: obu_id.into(), ts_ms, lat, lon, ctx }
}

fn detail(text: &str) -> String {
    parse(text).expect_err(text).to_string()
}

#[test]
fn native_single_fix_is_parsed_with_its_own_time() {
    let fixes =
        parse(r#"{"obu_id":"obu-1","ts":"2024-05-01T12:00:00.250Z","lat":50.1,"lon":11.9}"#);

    // 2024-05-01T12:00:00Z is 1_714_564_800 s after the epoch.
    assert_eq!(fixes.expect("valid"), vec![fix("obu-1", 1_714_564_800_250, 50.1, 11.9)]);
}

#[test]
fn time_offset_is_converted_to_utc() {
    let fixes = parse(r#"{"obu_id":"a","ts":"2024-05-01T14:00:00+02:00","lat":1,"lon":2}"#);

    assert_eq!(fixes.expect("valid")[0].ts_ms, 1_714_564_800_000);
}

#[test]
fn array_backlog_keeps_its_order() {
    let text = r#"[
        {"obu_id":"a","ts":"1970-01-01T00:00:01Z","lat":1.0,"lon":2.0},
        {"obu_id":"a","ts":"1970-01-01T00:00:02Z","lat":3.0,"lon":4.0}
    ]"#;

    let expected = vec![fix("a", 1_000, 1.0, 2.0), fix("a", 2_000, 3.0, 4.0)];
    assert_eq!(parse(text).expect("valid"), expected);
}

#[test]
fn go_fix_takes_the_receive_time_and_a_numeric_id() {
    let fixes = parse(r#"{"obuID":4711,"lat":50.5,"long":12.25}"#);

    assert_eq!(fixes.expect("valid"), vec![fix("4711", RECEIVED_MS, 50.5, 12.25)]);
}

#[test]
fn mixed_array_and_unknown_fields_are_accepted() {
    let text = r#"[{"obuID":7,"lat":1,"long":2,"speed":88},
        {"obu_id":"x","ts":"1970-01-01T00:00:00Z","lat":3,"lon":4,"hdop":{"v":[1]}}]"#;

    let expected = vec![fix("7", RECEIVED_MS, 1.0, 2.0), fix("x", 0, 3.0, 4.0)];
    assert_eq!(parse(text).expect("valid"), expected);
}

#[test]
fn escaped_identifier_is_unescaped() {
    let fixes = parse(r#"{"obu_id":"a\"b\u00e9","ts":"1970-01-01T00:00:00Z","lat":0,"lon":0}"#);

    assert_eq!(fixes.expect("valid")[0].obu_id, "a\"b\u{e9}");
}

#[test]
fn empty_array_is_a_frame_without_fixes() {
    assert_eq!(parse("  [ ]  ").expect("valid"), Vec::<Fix>::new());
}

#[test]
fn out_of_range_coordinates_are_left_to_the_distance_stage() {
    let fixes = parse(r#"{"obu_id":"a","ts":"1970-01-01T00:00:00Z","lat":91.5,"lon":-500}"#);

    assert_eq!(fixes.expect("valid"), vec![fix("a", 0, 91.5, -500.0)]);
}

#[test]
fn text_that_is_not_json_is_malformed() {
    for text in ["hello", "", "{", "{\"obu_id\":", "\u{0}"] {
        assert_eq!(parse(text).expect_err(text).reason(), "malformed_frame", "{text:?}");
    }
}

#[test]
fn values_that_are_not_fixes_are_malformed() {
    for text in ["42", "\"fix\"", "null", "[1, 2]", "[[\"a\", 1, 2, 3]]", "[{}, 5]"] {
        assert_eq!(parse(text).expect_err(text).reason(), "malformed_frame", "{text:?}");
    }
}

#[test]
fn missing_fields_are_named_in_the_error() {
    let cases = [
        (r#"{"ts":"1970-01-01T00:00:00Z","lat":1,"lon":2}"#, "obu_id"),
        (r#"{"obu_id":"a","lat":1,"lon":2}"#, "`ts`"),
        (r#"{"obu_id":"a","ts":"1970-01-01T00:00:00Z","lon":2}"#, "`lat`"),
        (r#"{"obuID":1,"lat":1}"#, "`lon`"),
        (r#"{"obu_id":"","ts":"1970-01-01T00:00:00Z","lat":1,"lon":2}"#, "1 to 64 bytes"),
        (r#"{"obu_id":"a\u0001b","ts":"1970-01-01T00:00:00Z","lat":1,"lon":2}"#, "control"),
    ];
    for (text, expected) in cases {
        let detail = detail(text);

        assert!(detail.contains(expected), "{text}: {detail}");
    }
}

#[test]
fn ambiguous_fields_are_malformed() {
    let both_ids = r#"{"obu_id":"a","obuID":1,"ts":"1970-01-01T00:00:00Z","lat":1,"lon":2}"#;
    let both_lons = r#"{"obuID":1,"lat":1,"lon":2,"long":2}"#;
    let duplicate = r#"{"obuID":1,"obuID":2,"lat":1,"long":2}"#;

    assert!(detail(both_ids).contains("both"));
    assert!(detail(both_lons).contains("both"));
    assert!(detail(duplicate).contains("duplicate"));
}

#[test]
fn wrongly_typed_fields_are_malformed() {
    for text in [
        r#"{"obuID":"12","lat":1,"long":2}"#,
        r#"{"obuID":1.5,"lat":1,"long":2}"#,
        r#"{"obu_id":7,"ts":"1970-01-01T00:00:00Z","lat":1,"lon":2}"#,
        r#"{"obu_id":"a","ts":"1970-01-01T00:00:00Z","lat":"1","lon":2}"#,
    ] {
        assert_eq!(parse(text).expect_err(text).reason(), "malformed_frame", "{text}");
    }
}

#[test]
fn bad_timestamp_is_malformed_and_quoted() {
    for ts in ["yesterday", "2024-13-01T00:00:00Z", "2024-05-01 12:00:00", "1714564800"] {
        let text = format!(r#"{{"obu_id":"a","ts":"{ts}","lat":1,"lon":2}}"#);

        let detail = detail(&text);

        assert!(detail.contains("bad timestamp") && detail.contains(ts), "{detail}");
    }
}

#[test]
fn numeric_timestamp_is_malformed() {
    let detail = detail(r#"{"obu_id":"a","ts":1714564800,"lat":1,"lon":2}"#);

    assert!(detail.contains("RFC 3339"), "{detail}");
}

#[test]
fn trailing_characters_are_malformed() {
    let text = r#"{"obuID":1,"lat":1,"long":2} {"obuID":2,"lat":1,"long":2}"#;

    assert_eq!(parse(text).expect_err(text).reason(), "malformed_frame");
}

#[test]
fn invalid_utf8_is_malformed() {
    let mut out = Vec::new();
    let payload = b"{\"obu_id\":\"\xff\xfe\",\"ts\":\"1970-01-01T00:00:00Z\",\"lat\":1,\"lon\":2}";

    let error = parse_frame(payload, RECEIVED_MS, 10, &mut out).expect_err("not utf-8");

    assert_eq!(error.reason(), "malformed_frame");
}

#[test]
fn frame_over_the_fix_limit_is_refused() {
    let one = r#"{"obuID":1,"lat":1,"long":2}"#;
    let text = format!("[{one},{one},{one}]");
    let mut out = Vec::new();

    let error = parse_frame(text.as_bytes(), RECEIVED_MS, 2, &mut out).expect_err("3 > 2");

    assert_eq!(error.reason(), "too_many_fixes");
    assert!(parse_frame(text.as_bytes(), RECEIVED_MS, 3, &mut Vec::new()).is_ok());
}

#[test]
fn native_json_is_read_back_unchanged() {
    let original = fix("obu-\"quoted\"", 1_714_564_800_250, 50.123456789, -11.5);

    let text = to_native_json(&original).expect("encodable");

    assert_eq!(
        text,
        concat!(
            r#"{"obu_id":"obu-\"quoted\"","ts":"2024-05-01T12:00:00.250Z","#,
            r#""lat":50.123456789,"lon":-11.5}"#
        )
    );
    assert_eq!(parse(&text).expect("own output parses"), vec![original]);
}

#[test]
fn write_native_json_appends_to_the_buffer() {
    let mut buf = b"[".to_vec();

    write_native_json(&fix("a", 0, 1.0, 2.0), &mut buf).expect("encodable");

    let expected = r#"[{"obu_id":"a","ts":"1970-01-01T00:00:00.000Z","lat":1.0,"lon":2.0}"#;
    assert_eq!(String::from_utf8(buf).expect("utf-8"), expected);
}

#[test]
fn unencodable_fixes_are_refused() {
    let far = fix("a", Millis::MAX, 1.0, 2.0);
    let nan = fix("a", 0, f64::NAN, 2.0);

    assert_eq!(to_native_json(&far), Err(EncodeError::TimeOutOfRange { ts_ms: Millis::MAX }));
    assert!(matches!(to_native_json(&nan), Err(EncodeError::NotFinite { .. })));
}

#[test]
fn replies_are_json_objects() {
    let error = parse("nope").expect_err("not json");

    let ack: serde_json::Value =
        serde_json::from_str(&ack_reply(3, 10, AckStatus::Delivered)).expect("ack is json");
    let nack: serde_json::Value =
        serde_json::from_str(&ack_reply(4, 1, AckStatus::Failed)).expect("nack is json");
    let refusal: serde_json::Value =
        serde_json::from_str(&error_reply(5, &error)).expect("error is json");

    assert_eq!(ack, serde_json::json!({"ack": 3, "fixes": 10}));
    assert_eq!(nack, serde_json::json!({"nack": 4, "fixes": 1}));
    assert_eq!(refusal["error"], "malformed frame");
    assert_eq!(refusal["frame"], 5);
    assert_eq!(refusal["detail"], error.to_string());
}

#[test]
fn a_traceparent_of_the_obu_becomes_the_fix_trace_context() {
    let text = r#"[{"obu_id":"a","ts":"1970-01-01T00:00:01Z","lat":1,"lon":2,
        "traceparent":"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"},
        {"obu_id":"a","ts":"1970-01-01T00:00:02Z","lat":1,"lon":2,"traceparent":"garbage"}]"#;

    let fixes = parse(text).expect("valid");

    let trace = fixes[0].ctx.trace.expect("traced");
    assert_eq!(trace.trace_id, 0x4bf9_2f35_77b3_4da6_a3ce_929d_0e0e_4736);
    assert_eq!((trace.span_id, trace.sampled), (0x00f0_67aa_0ba9_02b7, true));
    assert_eq!(fixes[1].ctx.trace, None, "a malformed traceparent is ignored");
}

#[test]
fn traced_native_json_carries_the_context_back_to_the_receiver() {
    let mut traced = fix("a", 1_000, 1.0, 2.0);
    traced.ctx.trace = Some(TraceContext { trace_id: 5, span_id: 6, sampled: true });
    let mut buf = Vec::new();

    write_native_json_traced(&traced, &mut buf).expect("encodable");

    assert_eq!(parse(std::str::from_utf8(&buf).unwrap()).expect("valid"), vec![traced]);
}
