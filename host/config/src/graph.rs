//! The pipeline as a graph: inputs name existing streams, no cycles, dead
//! letters go somewhere, and event-time windows get watermarks.

use std::collections::{HashMap, HashSet};

use crate::error::ConfigError;
use crate::operator::{ErrorPolicy, OperatorSpec};
use crate::pipeline::Pipeline;
use crate::reader::Reader;
use crate::stream::DEAD_LETTER_OUTPUT;
use crate::time::TimeCharacteristic;

impl Reader<'_> {
    /// Inputs must name existing streams, the graph must be acyclic, and dead
    /// letters must go somewhere. Orders operators topologically.
    pub(crate) fn check_graph(&self, p: &mut Pipeline) -> Result<(), ConfigError> {
        let sources: HashSet<&str> = p.sources.iter().map(|s| s.name.as_str()).collect();
        let ops: HashMap<&str, &OperatorSpec> =
            p.operators.iter().map(|o| (o.name.as_str(), o)).collect();
        let at = |line: usize| ConfigError {
            file: self.file.to_path_buf(),
            line: Some(line),
            message: String::new(),
            help: None,
        };

        let check = |consumer: &str, input: &str, line: usize| -> Result<(), ConfigError> {
            let (head, side) = match input.split_once('.') {
                Some((h, s)) => (h, Some(s)),
                None => (input, None),
            };
            if sources.contains(head) {
                if side.is_some() {
                    return Err(ConfigError {
                        message: format!(
                            "`{consumer}` reads `{input}`, but source `{head}` has no side outputs"
                        ),
                        help: Some(format!("use input = \"{head}\"")),
                        ..at(line)
                    });
                }
                return Ok(());
            }
            match ops.get(head) {
                Some(op) => {
                    if side == Some(DEAD_LETTER_OUTPUT) && op.on_error != ErrorPolicy::DeadLetter {
                        return Err(ConfigError {
                            message: format!("`{consumer}` reads `{input}`, but operator `{head}` does not dead-letter"),
                            help: Some(format!("set on_error = \"dead-letter\" on operator `{head}`")),
                            ..at(line)
                        });
                    }
                    Ok(())
                }
                None => {
                    let mut known: Vec<&str> =
                        sources.iter().copied().chain(ops.keys().copied()).collect();
                    known.sort();
                    Err(ConfigError {
                        message: format!(
                            "`{consumer}` reads `{input}`, which no source or operator produces"
                        ),
                        help: Some(format!("known streams: {}", known.join(", "))),
                        ..at(line)
                    })
                }
            }
        };
        for op in &p.operators {
            for input in &op.inputs {
                check(&op.name, input, op.input_line)?;
            }
        }
        for sink in &p.sinks {
            for input in &sink.inputs {
                check(&sink.name, input, sink.input_line)?;
            }
        }
        for op in &p.operators {
            let dl = format!("{}.{DEAD_LETTER_OUTPUT}", op.name);
            let consumed = p.operators.iter().any(|o| o.inputs.contains(&dl))
                || p.sinks.iter().any(|s| s.inputs.contains(&dl));
            if op.on_error == ErrorPolicy::DeadLetter && !consumed {
                return Err(ConfigError {
                    message: format!(
                        "operator `{}` dead-letters, but nothing reads `{dl}`",
                        op.name
                    ),
                    help: Some(format!("add a [[sinks]] entry with input = \"{dl}\"")),
                    ..at(op.line)
                });
            }
        }

        // Topological order (Kahn); what is left over is a cycle.
        let mut ordered: Vec<OperatorSpec> = Vec::with_capacity(p.operators.len());
        let mut remaining: Vec<OperatorSpec> = std::mem::take(&mut p.operators);
        while !remaining.is_empty() {
            let done: HashSet<String> = ordered.iter().map(|o| o.name.clone()).collect();
            let ready = remaining.iter().position(|o| {
                o.inputs.iter().all(|i| {
                    let head = i.split('.').next().unwrap_or(i);
                    sources.contains(head) || done.contains(head)
                })
            });
            match ready {
                Some(i) => ordered.push(remaining.remove(i)),
                None => {
                    let names: Vec<&str> = remaining.iter().map(|o| o.name.as_str()).collect();
                    return Err(ConfigError {
                        message: format!("operators {} form a cycle", names.join(", ")),
                        help: Some(
                            "a pipeline is a DAG: remove one of the inputs that close the loop"
                                .into(),
                        ),
                        ..at(remaining[0].line)
                    });
                }
            }
        }
        p.operators = ordered;
        if p.sources.is_empty() {
            return Err(self.err(
                Some(0),
                "the pipeline has no [[sources]]",
                Some("add a source, e.g. type = \"generator\"".into()),
            ));
        }
        if p.sinks.is_empty() {
            return Err(self.err(
                Some(0),
                "the pipeline has no [[sinks]]",
                Some("add a sink, e.g. type = \"stdout\"".into()),
            ));
        }
        self.check_watermarks(p)
    }

    /// An event-time window that no watermark reaches fires only at the end
    /// of the input and never finds a record late: a wrong answer, silently.
    /// Operators are in topological order here.
    fn check_watermarks(&self, p: &Pipeline) -> Result<(), ConfigError> {
        // Per stream head: `None` if a watermark reaches it, else why not.
        let mut missing: HashMap<&str, Option<String>> = p
            .sources
            .iter()
            .map(|s| {
                (
                    s.name.as_str(),
                    s.watermarks
                        .is_none()
                        .then(|| format!("source `{}` declares none", s.name)),
                )
            })
            .collect();
        for op in &p.operators {
            let why: Vec<(&String, Option<String>)> = op
                .inputs
                .iter()
                .map(|i| {
                    (
                        i,
                        missing
                            .get(i.split('.').next().unwrap_or(i))
                            .cloned()
                            .flatten(),
                    )
                })
                .collect();
            let lacking = match why.iter().find(|(_, w)| w.is_some()) {
                Some((input, _)) if why.iter().any(|(_, w)| w.is_none()) => {
                    Some(format!("`{}` unites `{input}`, which carries none, with inputs that do (a union's watermark is the lowest of its inputs')", op.name))
                }
                Some((_, w)) => w.clone(),
                None => None,
            };
            if let (Some(w), Some(why)) = (&op.window, &lacking) {
                if w.time == TimeCharacteristic::Event {
                    return Err(ConfigError {
                        file: self.file.to_path_buf(),
                        line: Some(op.line),
                        message: format!("operator `{}` has an event-time window, but no watermark reaches it: {why}; every window would fire only at the end of the input and no record would ever be late", op.name),
                        help: Some("declare watermarks where event times become known: [sources.watermarks] out_of_orderness = \"5s\" on the source, or watermarks = { out_of_orderness = \"5s\" } on the operator that sets event times; or use time = \"processing\"".into()),
                    });
                }
            }
            missing.insert(
                op.name.as_str(),
                if op.watermarks.is_some() {
                    None
                } else {
                    lacking
                },
            );
        }
        Ok(())
    }
}
