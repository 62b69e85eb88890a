//! The one place where component types are registered.
//!
//! The runner knows components only through this table: a type name, the kind
//! of table it may appear in, and a parser that turns the declaration's keys
//! into a [`ComponentConfig`].

use serde::de::DeserializeOwned;

use crate::component::{ComponentConfig, Kind};

/// A type of component that a pipeline file can declare.
pub struct ComponentType {
    pub name: &'static str,
    pub kind: Kind,
    /// One line for `runner validate` and error messages.
    pub about: &'static str,
    pub parse: fn(toml::Value) -> Result<Box<dyn ComponentConfig>, FieldError>,
}

impl std::fmt::Debug for ComponentType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ComponentType").field("name", &self.name).field("kind", &self.kind).finish()
    }
}

/// A declaration's keys did not fit its type.
#[derive(Debug, Clone, PartialEq)]
pub struct FieldError {
    /// Keys from the component's table down to the offending value; empty
    /// when the error concerns the whole table.
    pub path: Vec<String>,
    pub message: String,
}

impl FieldError {
    pub fn at(key: &str, message: impl Into<String>) -> Self {
        FieldError { path: vec![key.to_owned()], message: message.into() }
    }
}

/// Extra checks a configuration makes after its keys parsed.
pub trait Validate {
    fn validate(&self) -> Result<(), FieldError> {
        Ok(())
    }
}

/// Parses a declaration into `T`, keeping the path of whatever failed.
pub fn parse<T>(value: toml::Value) -> Result<Box<dyn ComponentConfig>, FieldError>
where
    T: DeserializeOwned + ComponentConfig + Validate,
{
    let config: T = serde_path_to_error::deserialize(value).map_err(|e| {
        let path = e
            .path()
            .iter()
            .filter_map(|segment| match segment {
                serde_path_to_error::Segment::Map { key } => Some(key.clone()),
                serde_path_to_error::Segment::Seq { index } => Some(index.to_string()),
                _ => None,
            })
            .collect();
        FieldError { path, message: e.into_inner().to_string() }
    })?;
    config.validate()?;
    Ok(Box::new(config))
}

/// Every component type this build knows.
pub fn component_types() -> &'static [ComponentType] {
    use crate::{queues, sinks, sources, stages};
    &[
        sources::obu_sim::TYPE,
        sources::websocket::TYPE,
        sources::grpc::TYPE,
        sources::grpc_invoices::TYPE,
        queues::memory::TYPE,
        queues::kafka::TYPE,
        stages::distance::TYPE,
        stages::aggregate::TYPE,
        sinks::gateway::TYPE,
        sinks::console::TYPE,
        sinks::grpc::TYPE,
        sinks::websocket::TYPE,
    ]
}

/// Finds a type by kind and name.
pub fn find(kind: Kind, name: &str) -> Option<&'static ComponentType> {
    component_types().iter().find(|t| t.kind == kind && t.name == name)
}
