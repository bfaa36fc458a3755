//! Which paths of a stage the stages after it read, from the Dockerfile alone (no I/O): a
//! stage only they read is applied at those paths only.

use cairn_parser::Dockerfile;
use cairn_parser::instruction::InstructionKind;

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
            let plain: Vec<&str> = p
                .split('/')
                .filter(|c| !c.is_empty() && *c != ".")
                .take_while(|c| !c.contains(['*', '?', '[', '\\']))
                .collect();
            if plain.is_empty() || plain.contains(&"..") {
                return None;
            }
            out.push(plain.join("/"));
        }
    }
    Some(out)
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
mod partial_tests {
    use std::collections::BTreeMap;

    use cairn_parser::StageGraph;

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
}
