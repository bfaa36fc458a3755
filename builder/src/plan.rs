//! The plan of a build, from the Dockerfile and its stage graph alone (no I/O): which stages
//! run, in which waves, and how much of each one's filesystem the stages after it read.

use std::collections::{BTreeMap, BTreeSet};

use cairn_parser::instruction::InstructionKind;
use cairn_parser::{Dockerfile, EdgeKind, StageGraph};

/// The stages a build runs for its target, in order.
#[derive(Debug)]
pub(crate) struct Plan {
    /// Waves of stages, each needing only stages of the waves before it: the stages of one
    /// wave run in parallel.
    pub(crate) waves: Vec<Vec<usize>>,
    settle: BTreeMap<usize, Settle>,
}

/// How much of a finished stage's filesystem is applied for the stages that read it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Settle {
    /// None: no stage of this build reads its files (FROM builds its own filesystem from the
    /// layers, and the target settles on demand).
    Nothing,
    /// All of it: a reader's paths cannot be known before it runs (a RUN mount, a variable,
    /// a wildcard at the top).
    All,
    /// Only these paths, which are all the COPY --from that read it name.
    Under(Vec<String>),
}

impl Plan {
    /// The plan for building `target`.
    pub(crate) fn new(df: &Dockerfile, graph: &StageGraph, target: usize) -> Plan {
        let waves = graph.reachable(target);
        let building: BTreeSet<usize> = waves.iter().flatten().copied().collect();
        let settle = building
            .iter()
            .map(|&index| {
                // Another stage of this build reads this one's files (COPY --from, RUN --mount
                // from=): settle it, only the paths its COPY --from names when they are plain
                // paths.
                let readers: Vec<&cairn_parser::Edge> = graph
                    .edges
                    .iter()
                    .filter(|e| {
                        e.needs == index && e.kind != EdgeKind::From && building.contains(&e.stage)
                    })
                    .collect();
                let how = if readers.is_empty() {
                    Settle::Nothing
                } else {
                    match copy_prefixes(df, &readers).filter(|_| index != target) {
                        Some(prefixes) => Settle::Under(prefixes),
                        None => Settle::All,
                    }
                };
                (index, how)
            })
            .collect();
        Plan { waves, settle }
    }

    /// How stage `index` is settled once it is built.
    pub(crate) fn settle(&self, index: usize) -> &Settle {
        self.settle.get(&index).unwrap_or(&Settle::Nothing)
    }
}

/// The paths (relative, cleaned) that the COPY --from instructions behind `readers` name, up
/// to their first wildcard; None when one cannot be known before it runs (a variable, a RUN
/// mount, a wildcard at the top) or names the whole filesystem.
pub(crate) fn copy_prefixes(
    df: &Dockerfile,
    readers: &[&cairn_parser::Edge],
) -> Option<Vec<String>> {
    let mut out = Vec::new();
    for e in readers {
        if e.kind != cairn_parser::EdgeKind::CopyFrom {
            return None;
        }
        let ins = df
            .stages
            .get(e.stage)?
            .instructions
            .iter()
            .find(|i| i.span == e.span)?;
        let InstructionKind::Copy(c) = &ins.kind else {
            return None;
        };
        for src in &c.sources {
            let cairn_parser::instruction::Source::Path(p) = src else {
                return None;
            };
            if p.contains('$') {
                return None;
            }
            out.push(source_prefix(p)?);
        }
    }
    Some(out)
}

/// The path (relative, cleaned) a COPY source reads below, up to its first wildcard; None for
/// the whole filesystem, or a source that climbs.
pub(crate) fn source_prefix(source: &str) -> Option<String> {
    let plain: Vec<&str> = source
        .split('/')
        .filter(|c| !c.is_empty() && *c != ".")
        .take_while(|c| !c.contains(['*', '?', '[', '\\']))
        .collect();
    if plain.is_empty() || plain.contains(&"..") {
        return None;
    }
    Some(plain.join("/"))
}

/// Whether every source of a COPY lies under one of the paths a stage was settled at.
pub(crate) fn covered(partial: &[String], sources: &[String]) -> bool {
    sources.iter().all(|s| {
        let parts: Vec<&str> = s
            .split('/')
            .filter(|c| !c.is_empty() && *c != ".")
            .collect();
        !parts.contains(&"..")
            && partial.iter().any(|p| {
                let p: Vec<&str> = p.split('/').collect();
                parts.len() >= p.len() && parts[..p.len()] == p[..]
            })
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn copy_from_prefixes_and_coverage() {
        let df = cairn_parser::parse(
            "Dockerfile",
            "FROM busybox AS gen\nRUN true\n\
             FROM busybox\nCOPY --from=gen /out/keep/ /data/\n\
             COPY --from=gen out/*.txt ./a/[ab] /x/\n",
        )
        .unwrap();
        let graph = StageGraph::new(&df, &BTreeMap::new()).unwrap();
        let readers: Vec<&cairn_parser::Edge> =
            graph.edges.iter().filter(|e| e.needs == 0).collect();
        let got = copy_prefixes(&df, &readers).unwrap();
        assert_eq!(got, ["out/keep", "out", "a"]);

        type Case<'a> = (&'a [&'a str], bool);
        let cases: &[Case<'_>] = &[
            (&["out/keep"], true),
            (&["/out/keep/f1.txt", "./out/keep/"], true),
            (&["out/keeper"], false),
            (&["out"], false),
            (&["out/keep/../skip"], false),
            (&["etc/passwd"], false),
        ];
        for (sources, want) in cases {
            let sources: Vec<String> = sources.iter().map(|s| s.to_string()).collect();
            assert_eq!(
                covered(&["out/keep".into()], &sources),
                *want,
                "{sources:?}"
            );
        }
        for bad in [
            "COPY --from=gen $X /d/",
            "COPY --from=gen * /d/",
            "COPY --from=gen ../.. /d",
        ] {
            let text = format!("FROM busybox AS gen\nFROM busybox\n{bad}\n");
            let df = cairn_parser::parse("Dockerfile", &text).unwrap();
            let graph = StageGraph::new(&df, &BTreeMap::new()).unwrap();
            let readers: Vec<&cairn_parser::Edge> =
                graph.edges.iter().filter(|e| e.needs == 0).collect();
            assert_eq!(copy_prefixes(&df, &readers), None, "{bad}");
        }
    }

    #[test]
    fn waves_and_settling() {
        type Case<'a> = (&'a str, &'a [&'a [usize]], &'a [(usize, Settle)]);
        let under = |p: &[&str]| Settle::Under(p.iter().map(|s| s.to_string()).collect());
        let cases: &[Case<'_>] = &[
            // FROM a stage reads its layers, not its files.
            (
                "FROM busybox AS a\nFROM a\n",
                &[&[0], &[1]],
                &[(0, Settle::Nothing), (1, Settle::Nothing)],
            ),
            // COPY --from of plain paths: those paths only.
            (
                "FROM busybox AS a\nFROM busybox AS b\nFROM busybox\n\
                 COPY --from=a /out /o\nCOPY --from=b /x/y/*.txt /z /d/\n",
                &[&[0, 1], &[2]],
                &[(0, under(&["out"])), (1, under(&["x/y", "z"]))],
            ),
            // A RUN mount, or a source known only when it runs: all of it.
            (
                "FROM busybox AS a\nFROM busybox AS b\nFROM busybox\n\
                 RUN --mount=from=a,target=/a true\nCOPY --from=b $X /d/\n",
                &[&[0, 1], &[2]],
                &[(0, Settle::All), (1, Settle::All)],
            ),
            // A stage the target does not need is not built, and reads nothing.
            (
                "FROM busybox AS a\nFROM busybox AS unused\nCOPY --from=a / /\nFROM busybox\n",
                &[&[2]],
                &[(0, Settle::Nothing), (2, Settle::Nothing)],
            ),
        ];
        for (text, waves, settle) in cases {
            let df = cairn_parser::parse("Dockerfile", text).unwrap();
            let graph = StageGraph::new(&df, &BTreeMap::new()).unwrap();
            let plan = Plan::new(&df, &graph, df.stages.len() - 1);
            let want: Vec<Vec<usize>> = waves.iter().map(|w| w.to_vec()).collect();
            assert_eq!(plan.waves, want, "{text}");
            for (index, how) in *settle {
                assert_eq!(plan.settle(*index), how, "{text}: stage {index}");
            }
        }
    }
}
