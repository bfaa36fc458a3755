//! The stage graph: which stages each stage needs (FROM, COPY --from, RUN --mount from=), the
//! images it pulls in, and the stages a target needs, grouped into waves that can run in parallel.
//!
//! References are resolved as BuildKit resolves them: FROM names an earlier stage or else an
//! image; `--from` names any stage (by name or index) or else an image. Names are expanded first
//! with the build arguments, as the builder will: FROM with the global ARGs, `--from` with the
//! stage's ARGs and ENVs up to that instruction.

use std::collections::BTreeMap;

use serde::Serialize;

use crate::error::{ErrorKind, ParseError};
use crate::expand::Lexer;
use crate::instruction::{ArgDef, Instruction, InstructionKind};
use crate::span::Span;
use crate::stage::{Dockerfile, is_index};

/// How one stage came to depend on another.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum EdgeKind {
    From,
    CopyFrom,
    MountFrom,
}

/// `stage` needs `needs`, because of the instruction at `span`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Edge {
    pub stage: usize,
    pub needs: usize,
    pub kind: EdgeKind,
    pub span: Span,
}

/// An image (not a stage) that a stage uses, after expansion.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ImageUse {
    pub stage: usize,
    pub image: String,
    pub kind: EdgeKind,
    pub span: Span,
}

/// The resolved dependencies between the stages of one Dockerfile.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct StageGraph {
    pub edges: Vec<Edge>,
    pub images: Vec<ImageUse>,
    /// Each stage's base after expansion (`scratch`, an image, or a stage's name or index).
    pub bases: Vec<String>,
}

/// Variables visible while expanding: the global ARGs, and a stage's own ARGs and ENVs.
fn declare_args(
    env: &mut BTreeMap<String, String>,
    defs: &[ArgDef],
    globals: &BTreeMap<String, String>,
    build_args: &BTreeMap<String, String>,
    lexer: &Lexer,
    span: Span,
) -> Result<(), ParseError> {
    for def in defs {
        let value = match (build_args.get(&def.name), &def.default) {
            (Some(v), _) => Some(v.clone()),
            (None, Some(d)) => Some(
                lexer
                    .process_word(d, &*env)
                    .map_err(|e| ParseError::new(ErrorKind::Expand(e), span))?,
            ),
            // Redeclaring a global ARG without a default brings its value into the stage.
            (None, None) => globals.get(&def.name).cloned(),
        };
        match value {
            Some(v) => env.insert(def.name.clone(), v),
            None => env.remove(&def.name),
        };
    }
    Ok(())
}

/// The build args BuildKit defines for every build, which FROM lines see undeclared.
pub const PLATFORM_ARGS: [&str; 8] = [
    "BUILDPLATFORM",
    "BUILDOS",
    "BUILDARCH",
    "BUILDVARIANT",
    "TARGETPLATFORM",
    "TARGETOS",
    "TARGETARCH",
    "TARGETVARIANT",
];

impl StageGraph {
    /// Resolves every stage's references, expanding names with `build_args`.
    pub fn new(
        df: &Dockerfile,
        build_args: &BTreeMap<String, String>,
    ) -> Result<StageGraph, ParseError> {
        let lexer = Lexer::new(df.directives.escape);
        // BuildKit's platform args are in the global scope without an ARG: `FROM
        // --platform=$BUILDPLATFORM` and `FROM base-$TARGETARCH` need no declaration.
        let mut globals: BTreeMap<String, String> = PLATFORM_ARGS
            .iter()
            .filter_map(|k| Some(((*k).to_owned(), build_args.get(*k)?.clone())))
            .collect();
        for arg in &df.global_args {
            if let InstructionKind::Arg { args } = &arg.kind {
                // Only a redeclaration without a default reads the globals as they were before
                // this ARG; copying all of them would be quadratic in the size of the ARGs.
                let snapshot: BTreeMap<String, String> = args
                    .iter()
                    .filter(|def| def.default.is_none())
                    .filter_map(|def| Some((def.name.clone(), globals.get(&def.name)?.clone())))
                    .collect();
                declare_args(&mut globals, args, &snapshot, build_args, &lexer, arg.span)?;
            }
        }
        let mut graph = StageGraph {
            edges: Vec::new(),
            images: Vec::new(),
            bases: Vec::new(),
        };
        for stage in &df.stages {
            let expand = |word: &str, env: &BTreeMap<String, String>, span: Span| {
                lexer
                    .process_word(word, env)
                    .map_err(|e| ParseError::new(ErrorKind::Expand(e), span))
            };
            let base = expand(&stage.base, &globals, stage.span)?;
            // FROM sees only the stages defined before it.
            match df.stage_named(&base).filter(|&i| i < stage.index) {
                Some(i) => graph.edge(stage.index, i, EdgeKind::From, stage.span),
                None if base.eq_ignore_ascii_case("scratch") => {}
                None => graph.images.push(ImageUse {
                    stage: stage.index,
                    image: base.clone(),
                    kind: EdgeKind::From,
                    span: stage.span,
                }),
            }
            graph.bases.push(base);

            let mut env = BTreeMap::new();
            for ins in &stage.instructions {
                graph.scan(stage.index, ins, &mut env, &globals, build_args, &lexer, df)?;
            }
        }
        graph.check_cycles(df)?;
        Ok(graph)
    }

    #[allow(clippy::too_many_arguments)]
    fn scan(
        &mut self,
        stage: usize,
        ins: &Instruction,
        env: &mut BTreeMap<String, String>,
        globals: &BTreeMap<String, String>,
        build_args: &BTreeMap<String, String>,
        lexer: &Lexer,
        df: &Dockerfile,
    ) -> Result<(), ParseError> {
        let expand = |word: &str, env: &BTreeMap<String, String>| {
            lexer
                .process_word(word, env)
                .map_err(|e| ParseError::new(ErrorKind::Expand(e), ins.span))
        };
        match &ins.kind {
            InstructionKind::Arg { args } => {
                declare_args(env, args, globals, build_args, lexer, ins.span)?
            }
            InstructionKind::Env { vars } => {
                for kv in vars {
                    let v = expand(&kv.value, env)?;
                    env.insert(kv.key.clone(), v);
                }
            }
            InstructionKind::Copy(copy) => {
                if let Some(from) = &copy.from {
                    let from = expand(from, env)?;
                    self.reference(stage, &from, EdgeKind::CopyFrom, ins.span, df)?;
                    // As BuildKit: a stage is copied from only once it is built, and stages
                    // are built in the order written.
                    if let Some(e) = self.edges.last().filter(|e| {
                        e.stage == stage && e.kind == EdgeKind::CopyFrom && e.needs >= stage
                    }) {
                        let name = |i: usize| df.stages[i].display_name();
                        return Err(ParseError::new(
                            ErrorKind::CopyFromLaterStage {
                                from: name(e.needs),
                                current: name(stage),
                            },
                            ins.span,
                        ));
                    }
                }
            }
            InstructionKind::Run(run) => {
                for m in &run.mounts {
                    if let Some(from) = &m.from {
                        let from = expand(from, env)?;
                        self.reference(stage, &from, EdgeKind::MountFrom, ins.span, df)?;
                    }
                }
            }
            _ => {}
        }
        Ok(())
    }

    /// A `--from` value: a stage index, a stage name, or an image.
    fn reference(
        &mut self,
        stage: usize,
        name: &str,
        kind: EdgeKind,
        span: Span,
        df: &Dockerfile,
    ) -> Result<(), ParseError> {
        if let Some(i) = df.stage_ref(name) {
            self.edge(stage, i, kind, span);
        } else if is_index(name) {
            return Err(ParseError::new(
                ErrorKind::StageIndexOutOfRange {
                    index: name.parse().unwrap_or(usize::MAX),
                    max: df.stages.len() - 1,
                },
                span,
            ));
        } else {
            self.images.push(ImageUse {
                stage,
                image: name.to_owned(),
                kind,
                span,
            });
        }
        Ok(())
    }

    fn edge(&mut self, stage: usize, needs: usize, kind: EdgeKind, span: Span) {
        self.edges.push(Edge {
            stage,
            needs,
            kind,
            span,
        });
    }

    /// The stages `stage` needs directly, without repeats.
    pub fn needs(&self, stage: usize) -> Vec<usize> {
        let mut out: Vec<usize> = self
            .edges
            .iter()
            .filter(|e| e.stage == stage)
            .map(|e| e.needs)
            .collect();
        out.sort_unstable();
        out.dedup();
        out
    }

    fn check_cycles(&self, df: &Dockerfile) -> Result<(), ParseError> {
        #[derive(Clone, Copy, PartialEq)]
        enum Mark {
            New,
            Open,
            Done,
        }
        let n = df.stages.len();
        let mut marks = vec![Mark::New; n];
        for root in 0..n {
            if marks[root] != Mark::New {
                continue;
            }
            // Iterative DFS so a long chain of stages cannot overflow the stack.
            let mut stack: Vec<(usize, Vec<usize>)> = vec![(root, self.needs(root))];
            let mut path = vec![root];
            marks[root] = Mark::Open;
            while let Some((node, pending)) = stack.last_mut() {
                let node = *node;
                match pending.pop() {
                    Some(next) if marks[next] == Mark::Open => {
                        let start = path.iter().position(|&p| p == next).unwrap_or(0);
                        let mut cycle: Vec<String> = path[start..]
                            .iter()
                            .map(|&i| df.stages[i].display_name())
                            .collect();
                        cycle.push(df.stages[next].display_name());
                        let span = self
                            .edges
                            .iter()
                            .find(|e| e.stage == node && e.needs == next)
                            .map_or(df.stages[node].span, |e| e.span);
                        return Err(ParseError::new(
                            ErrorKind::StageCycle(cycle.join(" -> ")),
                            span,
                        ));
                    }
                    Some(next) if marks[next] == Mark::New => {
                        marks[next] = Mark::Open;
                        path.push(next);
                        stack.push((next, self.needs(next)));
                    }
                    Some(_) => {}
                    None => {
                        marks[node] = Mark::Done;
                        path.pop();
                        stack.pop();
                    }
                }
            }
        }
        Ok(())
    }

    /// The stage a build of `target` ends with: the named stage (or index), else the last.
    pub fn target(&self, df: &Dockerfile, target: Option<&str>) -> Result<usize, ParseError> {
        let Some(t) = target else {
            return Ok(df.stages.len() - 1);
        };
        match df.stage_ref(t) {
            Some(i) => Ok(i),
            None => Err(ParseError::new(
                ErrorKind::UnknownTarget {
                    target: t.to_owned(),
                    suggestion: crate::suggest::nearest(
                        t,
                        df.stages.iter().filter_map(|s| s.name.as_deref()),
                    )
                    .map(str::to_owned),
                },
                Span::default(),
            )),
        }
    }

    /// The stages `target` needs (itself included), in waves: every stage's needs are in
    /// earlier waves, so the stages of one wave can be built in parallel.
    pub fn reachable(&self, target: usize) -> Vec<Vec<usize>> {
        let mut wave_of: BTreeMap<usize, usize> = BTreeMap::new();
        // Post-order walk: a stage's wave is one past the deepest of its needs.
        let mut stack = vec![(target, false)];
        while let Some((stage, expanded)) = stack.pop() {
            if wave_of.contains_key(&stage) {
                continue;
            }
            let needs = self.needs(stage);
            if expanded {
                let wave = needs
                    .iter()
                    .filter_map(|n| wave_of.get(n))
                    .map(|w| w + 1)
                    .max()
                    .unwrap_or(0);
                wave_of.insert(stage, wave);
            } else {
                stack.push((stage, true));
                stack.extend(
                    needs
                        .into_iter()
                        .filter(|n| !wave_of.contains_key(n))
                        .map(|n| (n, false)),
                );
            }
        }
        let depth = wave_of.values().max().map_or(0, |m| m + 1);
        let mut waves = vec![Vec::new(); depth];
        for (stage, wave) in wave_of {
            waves[wave].push(stage);
        }
        waves
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn graph(src: &str, args: &[(&str, &str)]) -> Result<(Dockerfile, StageGraph), ParseError> {
        let df = crate::parse("Dockerfile", src)?;
        let args = args
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let g = StageGraph::new(&df, &args)?;
        Ok((df, g))
    }

    const MULTI: &str = "\
ARG BASE=busybox
FROM $BASE AS Base
FROM base AS left
RUN --mount=type=bind,from=tools,target=/t true
FROM scratch AS tools
FROM base AS right
COPY --from=1 /a /a
FROM alpine
COPY --from=LEFT /x /x
COPY --from=right /y /y
";

    #[test]
    fn edges_images_and_waves() {
        let (df, g) = graph(MULTI, &[]).unwrap();
        let pairs: Vec<(usize, usize, EdgeKind)> =
            g.edges.iter().map(|e| (e.stage, e.needs, e.kind)).collect();
        assert_eq!(
            pairs,
            [
                (1, 0, EdgeKind::From),
                (1, 2, EdgeKind::MountFrom),
                (3, 0, EdgeKind::From),
                (3, 1, EdgeKind::CopyFrom),
                (4, 1, EdgeKind::CopyFrom),
                (4, 3, EdgeKind::CopyFrom),
            ]
        );
        let images: Vec<&str> = g.images.iter().map(|i| i.image.as_str()).collect();
        assert_eq!(images, ["busybox", "alpine"]);
        let last = g.target(&df, None).unwrap();
        assert_eq!(
            g.reachable(last),
            vec![vec![0, 2], vec![1], vec![3], vec![4]]
        );
        assert_eq!(
            g.reachable(g.target(&df, Some("RIGHT")).unwrap()),
            vec![vec![0, 2], vec![1], vec![3]]
        );
        assert_eq!(
            g.reachable(g.target(&df, Some("tools")).unwrap()),
            vec![vec![2]]
        );
        assert!(g.target(&df, Some("nope")).is_err());
    }

    #[test]
    fn build_args_rename_bases() {
        let (_, g) = graph(MULTI, &[("BASE", "debian:12")]).unwrap();
        assert_eq!(g.bases[0], "debian:12");
        let (_, g) = graph(
            "FROM a AS one\nFROM b\nARG SRC=one\nCOPY --from=$SRC / /\n",
            &[],
        )
        .unwrap();
        assert_eq!(g.edges[0].needs, 0);
    }

    #[test]
    fn from_only_sees_earlier_stages() {
        let (_, g) = graph("FROM later\nFROM scratch AS later\n", &[]).unwrap();
        assert!(g.edges.is_empty());
        assert_eq!(g.images[0].image, "later");
    }

    #[test]
    fn graph_errors() {
        let cases: &[(&str, &str)] = &[
            (
                "FROM a AS x\nCOPY --from=y / /\nFROM b AS y\nCOPY --from=x / /\n",
                "cannot copy from stage \"y\", it needs to be defined before current stage \"x\"",
            ),
            (
                "FROM a\nCOPY --from=0 / /\n",
                "cannot copy from stage \"0\", it needs to be defined before current stage \"0\"",
            ),
            (
                "FROM a AS x\nRUN --mount=from=y,target=/y true\nFROM b AS y\nRUN --mount=from=x,target=/x true\n",
                "circular dependency between stages: x -> y -> x",
            ),
            (
                "FROM a\nCOPY --from=3 / /\n",
                "stage index 3 is out of range",
            ),
            ("FROM ${X:?base needed}\n", "base needed"),
        ];
        for &(src, want) in cases {
            let err = graph(src, &[]).unwrap_err();
            assert!(err.to_string().contains(want), "{src:?}: {err}");
        }
    }
}
