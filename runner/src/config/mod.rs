//! Reading a pipeline file into located, typed component declarations.
//!
//! The file is parsed twice on purpose: once by `toml_edit`, which keeps the
//! position of every key for error messages, and once through `figment`, which
//! lays environment overrides (`TOLL_STAGES__AGGREGATE__PRICE_PER_KM=0.25`)
//! over the file. Each component's table is then handed to the parser its
//! type registered, and any error is reported at the line and column of the
//! key it concerns, or named after the environment variable that set it.

mod diagnostic;
mod location;
pub mod telemetry;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use figment::providers::{Env, Format, Toml};
use figment::Figment;
use stages::component::{ComponentConfig, Kind};
use stages::registry::{self, ComponentType};

pub use diagnostic::{Diagnostic, Diagnostics};
pub use location::{Location, Locator};
pub use telemetry::TelemetrySettings;

/// The prefix of environment variables that override pipeline file values.
pub const ENV_PREFIX: &str = "TOLL_";

/// One component as declared in the file.
#[derive(Debug)]
pub struct Declaration {
    pub name: String,
    pub kind: Kind,
    pub component_type: &'static ComponentType,
    pub inputs: Vec<InputRef>,
    pub config: Box<dyn ComponentConfig>,
    /// The component's table as read (overrides applied), without `inputs`:
    /// a reload compares it to tell whether the component changed.
    pub settings: toml::Value,
    /// Where the component's table starts.
    pub at: Option<Location>,
}

/// A name in a component's `inputs`, with where it is written.
#[derive(Clone, Debug)]
pub struct InputRef {
    pub name: String,
    pub at: Option<Location>,
}

/// A whole pipeline file: its components and its `[telemetry]` table.
#[derive(Debug)]
pub struct Pipeline {
    pub declarations: Vec<Declaration>,
    pub telemetry: TelemetrySettings,
}

/// Reads a pipeline file with its telemetry settings; every problem found
/// in either is reported at once.
pub fn load_pipeline(path: &Path) -> Result<Pipeline, Diagnostics> {
    let text = std::fs::read_to_string(path).map_err(|e| {
        Diagnostics::one(Diagnostic::general(format!(
            "cannot read pipeline file {}: {e}",
            path.display()
        )))
    })?;
    let declarations = parse(path, &text, overrides());
    let telemetry = parse_telemetry(path, &text);
    match (declarations, telemetry) {
        (Ok(declarations), Ok(telemetry)) => Ok(Pipeline { declarations, telemetry }),
        (Err(mut found), Err(more)) => {
            // Broken TOML is reported by both; once is enough.
            for diagnostic in more.0 {
                if !found.0.iter().any(|seen| seen.to_string() == diagnostic.to_string()) {
                    found.push(diagnostic);
                }
            }
            Err(found)
        }
        (Err(found), _) | (_, Err(found)) => Err(found),
    }
}

/// Parses the `[telemetry]` table of pipeline text (defaults when absent).
pub fn parse_telemetry(path: &Path, text: &str) -> Result<TelemetrySettings, Diagnostics> {
    let file: Arc<Path> = Arc::from(PathBuf::from(path));
    let doc = toml_edit::Document::parse(text.to_owned()).map_err(|e| {
        let at = e.span().map(|s| location::location_of(&file, text, s.start));
        Diagnostics::one(Diagnostic::new(at, format!("invalid TOML: {}", e.message().trim())))
    })?;
    let locator = Locator::new(file.clone(), text, &doc);
    let mut table: toml::Table = toml::from_str(text).map_err(|e| {
        Diagnostics::one(Diagnostic::general(format!("invalid TOML: {}", e.message().trim())))
    })?;
    telemetry::parse(&locator, table.remove(telemetry::TABLE))
}

/// Reads and parses a pipeline file; every problem found is reported at once.
pub fn load(path: &Path) -> Result<Vec<Declaration>, Diagnostics> {
    let text = std::fs::read_to_string(path).map_err(|e| {
        Diagnostics::one(Diagnostic::general(format!(
            "cannot read pipeline file {}: {e}",
            path.display()
        )))
    })?;
    parse(path, &text, overrides())
}

/// Environment variables that override pipeline values: only those naming a
/// component table (`TOLL_STAGES__...`), so that other `TOLL_` settings of the
/// same environment (`TOLL_PIPELINE`) are not taken for pipeline keys.
pub fn overrides() -> Env {
    Env::prefixed(ENV_PREFIX)
        .filter(|key| {
            let key = key.as_str().to_ascii_lowercase();
            Kind::ALL.iter().any(|kind| {
                key.strip_prefix(kind.table()).is_some_and(|rest| rest.starts_with("__"))
            })
        })
        .split("__")
}

/// Parses pipeline text; `env` supplies the overrides.
pub fn parse(path: &Path, text: &str, env: Env) -> Result<Vec<Declaration>, Diagnostics> {
    let file: Arc<Path> = Arc::from(PathBuf::from(path));
    let doc = toml_edit::Document::parse(text.to_owned()).map_err(|e| {
        let locator_text = text;
        let at = e.span().map(|s| location::location_of(&file, locator_text, s.start));
        Diagnostics::one(Diagnostic::new(at, format!("invalid TOML: {}", e.message().trim())))
    })?;
    let locator = Locator::new(file.clone(), text, &doc);

    let merged: toml::Table =
        Figment::new().merge(Toml::string(text)).merge(env).extract().map_err(|e| {
            Diagnostics::one(Diagnostic::general(format!("cannot merge overrides: {e}")))
        })?;

    let mut found = Diagnostics::default();
    let mut declarations = Vec::new();
    for (key, value) in merged {
        // Read by `parse_telemetry`.
        if key == telemetry::TABLE {
            continue;
        }
        let Some(kind) = Kind::ALL.into_iter().find(|k| k.table() == key) else {
            found.push(Diagnostic::new(
                locator.key(&[&key]),
                format!(
                    "unknown table `{key}`; expected one of sources, queues, stages, sinks, \
                     telemetry"
                ),
            ));
            continue;
        };
        let toml::Value::Table(components) = value else {
            found.push(Diagnostic::new(locator.key(&[&key]), format!("`{key}` must be a table")));
            continue;
        };
        for (name, body) in components {
            match declaration(&locator, kind, name, body) {
                Ok(declaration) => declarations.push(declaration),
                Err(diagnostics) => found.extend(diagnostics),
            }
        }
    }
    if declarations.is_empty() && found.is_empty() {
        found.push(Diagnostic::general(format!(
            "{} declares no component; a pipeline needs at least one source",
            path.display()
        )));
    }
    found.into_result(declarations)
}

fn declaration(
    locator: &Locator<'_>,
    kind: Kind,
    name: String,
    body: toml::Value,
) -> Result<Declaration, Diagnostics> {
    let table_path = [kind.table(), name.as_str()];
    let at = locator.key(&table_path);
    let fail = |path: &[&str], message: String| {
        let full: Vec<&str> = table_path.iter().chain(path).copied().collect();
        Diagnostics::one(Diagnostic::new(locator.nearest(&full), with_env_origin(&full, message)))
    };

    if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-') {
        return Err(fail(
            &[],
            format!("component name `{name}` may only hold letters, digits, `_` and `-`"),
        ));
    }
    let toml::Value::Table(mut table) = body else {
        return Err(fail(&[], format!("`{}.{name}` must be a table", kind.table())));
    };

    let component_type = match table.remove("type") {
        Some(toml::Value::String(type_name)) => {
            find_type(kind, &type_name).map_err(|message| fail(&["type"], message))?
        }
        Some(_) => return Err(fail(&["type"], "`type` must be a string".to_owned())),
        None => return Err(fail(&[], format!("{} `{name}` has no `type`", kind.as_str()))),
    };

    let inputs = match (kind, table.remove("inputs")) {
        (Kind::Source, None) => Vec::new(),
        (Kind::Source, Some(_)) => {
            return Err(fail(&["inputs"], "a source takes no `inputs`".to_owned()));
        }
        // A queue without inputs here is fed by another process.
        (Kind::Queue, None) => Vec::new(),
        (_, None) => {
            return Err(fail(&[], format!("{} `{name}` needs `inputs`", kind.as_str())));
        }
        (_, Some(value)) => {
            input_refs(locator, &table_path, value).map_err(|message| fail(&["inputs"], message))?
        }
    };

    let mut settings = table.clone();
    settings.insert("type".to_owned(), toml::Value::String(component_type.name.to_owned()));
    let config = (component_type.parse)(toml::Value::Table(table)).map_err(|e| {
        let path: Vec<&str> = e.path.iter().map(String::as_str).collect();
        let key = path.join(".");
        let message = e.message.trim().replace('\n', " ");
        // Serde names unknown and mistyped keys itself; range checks do not.
        let message = if key.is_empty() || message.contains(&format!("`{key}`")) {
            message
        } else {
            format!("`{key}`: {message}")
        };
        fail(&path, message)
    })?;
    let settings = toml::Value::Table(settings);
    Ok(Declaration { name, kind, component_type, inputs, config, settings, at })
}

fn input_refs(
    locator: &Locator<'_>,
    table_path: &[&str],
    value: toml::Value,
) -> Result<Vec<InputRef>, String> {
    let toml::Value::Array(items) = value else {
        return Err("`inputs` must be an array of component names".to_owned());
    };
    let inputs_path: Vec<&str> = table_path.iter().copied().chain(["inputs"]).collect();
    items
        .into_iter()
        .enumerate()
        .map(|(i, item)| match item {
            toml::Value::String(name) => {
                Ok(InputRef { name, at: locator.element(&inputs_path, i) })
            }
            _ => Err("`inputs` must be an array of component names".to_owned()),
        })
        .collect()
}

fn find_type(kind: Kind, type_name: &str) -> Result<&'static ComponentType, String> {
    if let Some(found) = registry::find(kind, type_name) {
        return Ok(found);
    }
    let known: Vec<&str> =
        registry::component_types().iter().filter(|t| t.kind == kind).map(|t| t.name).collect();
    let elsewhere = registry::component_types().iter().find(|t| t.name == type_name);
    let hint = match elsewhere {
        Some(t) => format!(
            "; `{type_name}` is a {}, declare it under [{}]",
            t.kind.as_str(),
            t.kind.table()
        ),
        None => String::new(),
    };
    Err(format!(
        "unknown {} type `{type_name}`; known types: {}{hint}",
        kind.as_str(),
        known.join(", ")
    ))
}

/// Says which environment variable set a value that is not in the file.
fn with_env_origin(path: &[&str], message: String) -> String {
    let var = format!("{ENV_PREFIX}{}", path.join("__").to_uppercase());
    if std::env::var_os(&var).is_some() {
        format!("{message} (set by environment variable {var})")
    } else {
        message
    }
}
