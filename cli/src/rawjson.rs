//! `--progress rawjson`: build progress as BuildKit's SolveStatus JSON, one object a line on
//! standard error, for programs to read (the shape of buildkit's `client.SolveStatus`).

use std::collections::HashMap;
use std::io::Write;
use std::sync::{Mutex, PoisonError};

use base64::Engine as _;
use cairn_builder::build::Event;
use cairn_layers::Digest;
use serde_json::{Value, json};

/// A step as BuildKit's vertex: its digest, its name, when it started.
#[derive(Debug, Clone)]
struct Vertex {
    digest: String,
    name: String,
    started: String,
}

/// Renders events as SolveStatus lines; keeps each running step's vertex, which every later
/// line about it repeats (a reader may join lines by digest).
#[derive(Debug, Default)]
pub struct RawJson {
    vertexes: Mutex<HashMap<usize, Vertex>>,
}

fn now() -> String {
    jiff::Timestamp::now().to_string()
}

pub(crate) fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

impl RawJson {
    /// The SolveStatus line for `event`, if it has one (cairn's own events, like timings and
    /// cache-miss reasons, have no SolveStatus field).
    pub fn line(&self, event: Event) -> Option<Value> {
        let mut vertexes = self.vertexes.lock().unwrap_or_else(PoisonError::into_inner);
        Some(match event {
            Event::Step {
                id,
                stage,
                index,
                total,
                text,
            } => {
                let name = format!(
                    "{} {text}",
                    crate::progress::step_label(&stage, index, total)
                );
                // Unique within the build, stable for a step: what a reader joins lines by.
                let digest = Digest::of(format!("cairn step {id}\0{name}").as_bytes());
                let v = Vertex {
                    digest: digest.as_str().to_owned(),
                    name,
                    started: now(),
                };
                let line = json!({"vertexes": [{
                    "digest": v.digest, "name": v.name, "started": v.started,
                }]});
                vertexes.insert(id, v);
                line
            }
            Event::Done { id, .. } => {
                let v = vertexes.remove(&id)?;
                json!({"vertexes": [{
                    "digest": v.digest, "name": v.name, "started": v.started,
                    "completed": now(),
                }]})
            }
            Event::Cached { id } => {
                let v = vertexes.remove(&id)?;
                json!({"vertexes": [{
                    "digest": v.digest, "name": v.name, "started": v.started,
                    "completed": now(), "cached": true,
                }]})
            }
            Event::Bytes { id, done, total } => {
                let v = vertexes.get(&id)?;
                let mut status = json!({
                    "id": format!("copying {}", v.name), "vertex": v.digest, "name": "copying",
                    "current": done, "total": total, "timestamp": now(), "started": v.started,
                });
                if done >= total {
                    status["completed"] = json!(now());
                }
                json!({"statuses": [status]})
            }
            Event::Log { id, line } => {
                let v = vertexes.get(&id)?;
                // RUN's standard output and error reach cairn as one stream of lines.
                json!({"logs": [{
                    "vertex": v.digest, "stream": 1,
                    "data": b64(format!("{line}\n").as_bytes()), "timestamp": now(),
                }]})
            }
            Event::Warning(w) => json!({"warnings": [{"level": 1, "short": b64(w.as_bytes())}]}),
            // BuildKit's VertexWarning for a lint: the short line, the rule's description as
            // the detail, its URL and the lines it is about.
            Event::Lint(l) => json!({"warnings": [{
                "level": 1,
                "short": b64(crate::lintline::short(&l).as_bytes()),
                "detail": [b64(l.rule.description.as_bytes())],
                "url": l.rule.url,
                "range": [{"start": {"line": l.span.start.line}, "end": {"line": l.span.end.line}}],
            }]}),
            Event::Miss { .. } | Event::Note(_) | Event::Timing { .. } | Event::Layer { .. } => {
                return None;
            }
        })
    }

    pub fn event(&self, event: Event) {
        if let Some(line) = self.line(event) {
            write_line(&line);
        }
    }

    /// Marks the steps still running (the build failed) completed with `error`, as BuildKit
    /// reports a failed vertex.
    pub fn finish(&self, error: &str) {
        let mut left: Vec<_> = self
            .vertexes
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .drain()
            .collect();
        left.sort_by_key(|(id, _)| *id);
        for (_, v) in left {
            write_line(&json!({"vertexes": [{
                "digest": v.digest, "name": v.name, "started": v.started,
                "completed": now(), "error": error,
            }]}));
        }
    }
}

fn write_line(line: &Value) {
    let mut text = line.to_string();
    text.push('\n');
    // One write a line, so lines from several threads never interleave.
    let _ = std::io::stderr().lock().write_all(text.as_bytes());
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_step_its_log_and_its_end_share_one_vertex() {
        let r = RawJson::default();
        let start = r
            .line(Event::Step {
                id: 1,
                stage: "stage-0".into(),
                index: 2,
                total: 2,
                text: "RUN echo hi".into(),
            })
            .unwrap();
        let digest = start["vertexes"][0]["digest"].clone();
        assert_eq!(start["vertexes"][0]["name"], "[stage-0 2/2] RUN echo hi");
        let log = r
            .line(Event::Log {
                id: 1,
                line: "hi".into(),
            })
            .unwrap();
        assert_eq!(log["logs"][0]["vertex"], digest);
        assert_eq!(log["logs"][0]["data"], b64(b"hi\n"));
        let done = r.line(Event::Cached { id: 1 }).unwrap();
        assert_eq!(done["vertexes"][0]["digest"], digest);
        assert_eq!(done["vertexes"][0]["cached"], true);
        assert!(done["vertexes"][0]["completed"].is_string());
        // Its vertex is gone: a late line about it says nothing.
        assert!(
            r.line(Event::Done {
                id: 1,
                seconds: 0.0
            })
            .is_none()
        );
    }
}
