//! The validated graph: names resolved, no cycles, event kinds matched.

use std::collections::HashMap;
use std::fmt::Write as _;

use stages::component::{Emits, Kind};
use stages::event::EventKind;

use crate::config::{Declaration, Diagnostic, Diagnostics, Location};

/// A component in the graph.
#[derive(Debug)]
pub struct Node {
    pub declaration: Declaration,
    /// What it emits, resolved through queues; `None` for sinks.
    pub output: Option<EventKind>,
}

/// Components in an order where every input comes before its consumers.
#[derive(Debug)]
pub struct Graph {
    pub nodes: Vec<Node>,
    /// Things that run but are probably mistakes.
    pub warnings: Vec<Diagnostic>,
}

impl Graph {
    /// Checks names, cycles and event kinds; reports every problem found.
    pub fn build(declarations: Vec<Declaration>) -> Result<Graph, Diagnostics> {
        let mut found = Diagnostics::default();
        let mut index: HashMap<String, usize> = HashMap::new();
        for (i, declaration) in declarations.iter().enumerate() {
            if let Some(&first) = index.get(&declaration.name) {
                let other = &declarations[first];
                found.push(Diagnostic::new(
                    declaration.at.clone(),
                    format!(
                        "component name `{}` is also used by a {}; names must be unique",
                        declaration.name,
                        other.kind.as_str()
                    ),
                ));
                continue;
            }
            index.insert(declaration.name.clone(), i);
        }
        for declaration in &declarations {
            for input in &declaration.inputs {
                check_input(&declarations, &index, declaration, input, &mut found);
            }
        }
        if !found.is_empty() {
            return Err(found);
        }

        let order = topological_order(&declarations, &index)?;
        let outputs = resolve_outputs(&declarations, &index, &order)?;
        let warnings = unconsumed(&declarations);

        let mut slots: Vec<Option<Declaration>> = declarations.into_iter().map(Some).collect();
        let nodes = order
            .into_iter()
            .filter_map(|i| {
                slots[i].take().map(|declaration| Node { declaration, output: outputs[i] })
            })
            .collect();
        Ok(Graph { nodes, warnings })
    }

    /// The nodes that take `name` as input.
    pub fn consumers<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a Node> + 'a {
        self.nodes.iter().filter(move |n| n.declaration.inputs.iter().any(|i| i.name == name))
    }

    /// The graph in Graphviz DOT.
    pub fn to_dot(&self) -> String {
        let mut out = String::from("digraph pipeline {\n  rankdir=LR;\n");
        for node in &self.nodes {
            let d = &node.declaration;
            let shape = match d.kind {
                Kind::Source => "invhouse",
                Kind::Queue => "cylinder",
                Kind::Stage => "box",
                Kind::Sink => "house",
            };
            let _ = writeln!(
                out,
                "  \"{}\" [shape={shape}, label=\"{}\\n({} {})\"];",
                d.name,
                d.name,
                d.component_type.name,
                d.kind.as_str()
            );
        }
        for node in &self.nodes {
            for input in &node.declaration.inputs {
                let kind = self.node(&input.name).and_then(|n| n.output);
                let label = kind.map(EventKind::as_str).unwrap_or("");
                let _ = writeln!(
                    out,
                    "  \"{}\" -> \"{}\" [label=\"{label}\"];",
                    input.name, node.declaration.name
                );
            }
        }
        out.push_str("}\n");
        out
    }

    /// The graph as readable lines, in run order.
    pub fn describe(&self) -> String {
        let mut out = String::new();
        for node in &self.nodes {
            let d = &node.declaration;
            let inputs: Vec<&str> = d.inputs.iter().map(|i| i.name.as_str()).collect();
            let emits = node.output.map(EventKind::as_str).unwrap_or("nothing");
            let _ = write!(
                out,
                "{:<6} {:<16} type={:<10} emits={emits}",
                d.kind.as_str(),
                d.name,
                d.component_type.name
            );
            if !inputs.is_empty() {
                let _ = write!(out, " inputs=[{}]", inputs.join(", "));
            }
            out.push('\n');
        }
        out
    }

    pub fn node(&self, name: &str) -> Option<&Node> {
        self.nodes.iter().find(|n| n.declaration.name == name)
    }
}

fn check_input(
    declarations: &[Declaration],
    index: &HashMap<String, usize>,
    consumer: &Declaration,
    input: &crate::config::InputRef,
    found: &mut Diagnostics,
) {
    match index.get(&input.name) {
        None => {
            let hint = closest(index.keys().map(String::as_str), &input.name)
                .map(|n| format!("; did you mean `{n}`?"))
                .unwrap_or_default();
            found.push(Diagnostic::new(
                input.at.clone(),
                format!("`{}` takes unknown input `{}`{hint}", consumer.name, input.name),
            ));
        }
        Some(&i) if declarations[i].kind == Kind::Sink => found.push(Diagnostic::new(
            input.at.clone(),
            format!(
                "`{}` takes input `{}`, but that is a sink and emits nothing",
                consumer.name, input.name
            ),
        )),
        Some(_) => {}
    }
}

fn closest<'a>(names: impl Iterator<Item = &'a str>, wanted: &str) -> Option<&'a str> {
    names
        .map(|n| (strsim::damerau_levenshtein(n, wanted), n))
        .filter(|(d, n)| *d <= 2.max(n.len() / 3))
        .min()
        .map(|(_, n)| n)
}

/// Kahn's algorithm; what is left over sits on a cycle.
fn topological_order(
    declarations: &[Declaration],
    index: &HashMap<String, usize>,
) -> Result<Vec<usize>, Diagnostics> {
    let mut pending: Vec<usize> = declarations.iter().map(|d| d.inputs.len()).collect();
    let mut ready: Vec<usize> = (0..declarations.len()).filter(|&i| pending[i] == 0).collect();
    ready.reverse();
    let mut order = Vec::with_capacity(declarations.len());
    while let Some(i) = ready.pop() {
        order.push(i);
        for (j, consumer) in declarations.iter().enumerate() {
            for input in consumer.inputs.iter().filter(|inp| index.get(&inp.name) == Some(&i)) {
                let _ = input;
                pending[j] -= 1;
                if pending[j] == 0 {
                    ready.push(j);
                }
            }
        }
    }
    if order.len() == declarations.len() {
        return Ok(order);
    }
    // What is left sits on a cycle or downstream of one; peel off the
    // downstream part (nodes none of the rest takes as input) to name the cycle.
    let mut left: Vec<usize> = (0..declarations.len()).filter(|i| !order.contains(i)).collect();
    loop {
        let feeds_left = |i: usize| {
            left.iter()
                .any(|&j| declarations[j].inputs.iter().any(|inp| index.get(&inp.name) == Some(&i)))
        };
        let before = left.len();
        left = left.iter().copied().filter(|&i| feeds_left(i)).collect();
        if left.len() == before {
            break;
        }
    }
    let on_cycle: Vec<&Declaration> = left.iter().map(|&i| &declarations[i]).collect();
    let names: Vec<&str> = on_cycle.iter().map(|d| d.name.as_str()).collect();
    let at = on_cycle.first().and_then(|d| d.inputs.first()).and_then(|i| i.at.clone());
    Err(Diagnostics::one(Diagnostic::new(
        at,
        format!("the inputs of {} form a cycle", names.join(", ")),
    )))
}

fn resolve_outputs(
    declarations: &[Declaration],
    index: &HashMap<String, usize>,
    order: &[usize],
) -> Result<Vec<Option<EventKind>>, Diagnostics> {
    let mut outputs: Vec<Option<EventKind>> = vec![None; declarations.len()];
    let mut found = Diagnostics::default();
    for &i in order {
        let d = &declarations[i];
        let signature = d.config.signature();
        let fed: Vec<(EventKind, Option<Location>, &str)> = d
            .inputs
            .iter()
            .filter_map(|input| {
                outputs[index[&input.name]].map(|k| (k, input.at.clone(), input.name.as_str()))
            })
            .collect();
        for (kind, at, from) in &fed {
            if !signature.accepts.contains(kind) {
                let accepts: Vec<&str> = signature.accepts.iter().map(|k| k.as_str()).collect();
                found.push(Diagnostic::new(
                    at.clone(),
                    format!(
                        "`{from}` emits {kind} events, but `{}` ({}) takes only {}",
                        d.name,
                        d.component_type.name,
                        accepts.join(", ")
                    ),
                ));
            }
        }
        outputs[i] = match signature.output {
            Emits::Nothing => None,
            Emits::Kind(kind) => Some(kind),
            Emits::SameAsInput => {
                let first = fed.first().map(|(k, _, _)| *k);
                if let Some((kind, at, from)) = fed.iter().find(|(k, _, _)| Some(*k) != first) {
                    found.push(Diagnostic::new(
                        at.clone(),
                        format!(
                            "`{}` mixes event kinds: `{from}` emits {kind}, other inputs do not",
                            d.name
                        ),
                    ));
                }
                first
            }
        };
    }
    found.into_result(outputs)
}

fn unconsumed(declarations: &[Declaration]) -> Vec<Diagnostic> {
    declarations
        .iter()
        .filter(|d| d.kind != Kind::Sink && !d.config.may_go_unconsumed())
        .filter(|d| !declarations.iter().any(|c| c.inputs.iter().any(|i| i.name == d.name)))
        .map(|d| {
            Diagnostic::new(
                d.at.clone(),
                format!("nothing takes `{}` as input; the events it emits go nowhere", d.name),
            )
        })
        .collect()
}
