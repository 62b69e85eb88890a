//! An open span, and what the exporter gets of a finished one.

use std::time::SystemTime;

use super::Tracer;

/// What a span stands for, as OpenTelemetry names it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SpanKind {
    Internal,
    Server,
    Client,
    Producer,
    Consumer,
}

/// An attribute's value.
#[derive(Clone, Debug, PartialEq)]
pub enum AttrValue {
    Str(String),
    Int(i64),
    Float(f64),
    Bool(bool),
}

impl From<&str> for AttrValue {
    fn from(value: &str) -> Self {
        AttrValue::Str(value.to_owned())
    }
}

impl From<String> for AttrValue {
    fn from(value: String) -> Self {
        AttrValue::Str(value)
    }
}

impl From<i64> for AttrValue {
    fn from(value: i64) -> Self {
        AttrValue::Int(value)
    }
}

impl From<f64> for AttrValue {
    fn from(value: f64) -> Self {
        AttrValue::Float(value)
    }
}

impl From<bool> for AttrValue {
    fn from(value: bool) -> Self {
        AttrValue::Bool(value)
    }
}

/// A finished span.
#[derive(Clone, Debug, PartialEq)]
pub struct SpanData {
    pub trace_id: u128,
    pub span_id: u64,
    /// 0 for the root of a trace.
    pub parent_span_id: u64,
    pub name: &'static str,
    pub kind: SpanKind,
    pub start: SystemTime,
    pub end: SystemTime,
    pub attributes: Vec<(&'static str, AttrValue)>,
    /// Why the hop failed, when it did.
    pub error: Option<String>,
}

/// A span being timed; [`Span::end`] hands it to the exporter. A span
/// dropped without `end` is ended where it is dropped.
#[must_use = "a span is recorded when it ends"]
pub struct Span {
    tracer: Tracer,
    data: Option<SpanData>,
}

impl Span {
    pub(super) fn new(tracer: Tracer, data: SpanData) -> Self {
        Span { tracer, data: Some(data) }
    }

    /// Adds an attribute.
    pub fn set(&mut self, key: &'static str, value: impl Into<AttrValue>) {
        if let Some(data) = &mut self.data {
            data.attributes.push((key, value.into()));
        }
    }

    /// Marks the hop as failed.
    pub fn fail(&mut self, error: impl Into<String>) {
        if let Some(data) = &mut self.data {
            data.error = Some(error.into());
        }
    }

    pub fn span_id(&self) -> u64 {
        self.data.as_ref().map_or(0, |d| d.span_id)
    }

    /// Ends the span now.
    pub fn end(mut self) {
        self.finish();
    }

    fn finish(&mut self) {
        let Some(mut data) = self.data.take() else { return };
        data.end = SystemTime::now();
        tracing::debug!(
            trace_id = %format_args!("{:032x}", data.trace_id),
            span_id = %format_args!("{:016x}", data.span_id),
            parent_span_id = %format_args!("{:016x}", data.parent_span_id),
            span = data.name,
            obu_id = obu_id(&data),
            "traced fix passed a hop",
        );
        self.tracer.finish(data);
    }
}

impl Drop for Span {
    fn drop(&mut self) {
        self.finish();
    }
}

/// The `obu.id` attribute of a span, for its log line.
fn obu_id(data: &SpanData) -> &str {
    let value = data.attributes.iter().find(|(key, _)| *key == "obu.id").map(|(_, v)| v);
    match value {
        Some(AttrValue::Str(id)) => id,
        _ => "",
    }
}

/// A random span id; never 0, which W3C reserves for "none".
pub(super) fn new_span_id() -> u64 {
    loop {
        let id = rand::random::<u64>();
        if id != 0 {
            return id;
        }
    }
}
