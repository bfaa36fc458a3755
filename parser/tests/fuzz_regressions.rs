//! Inputs that crash the parser under the fuzz target `fuzz/fuzz_targets/parse.rs` (see
//! `fuzz/run.sh`), each run here through the target's calls on a thread with the target's stack:
//! none may panic, overflow the stack or run away with time or memory, and every error must
//! render. The limits their fixes introduced are checked at their edges below.
//!
//! The fuzzer itself found none of these in its runs (no coverage grows with nesting depth or
//! value length, so it has nothing to climb towards them); they were found by reading the
//! parser's recursion and expansion, confirmed to crash the fuzz target, and the two overflows
//! minimised with `cargo fuzz tmin`.

use std::collections::BTreeMap;
use std::fmt::Display;

use cairn_parser::expand::Lexer;
use cairn_parser::{Pos, StageGraph, dump, parse, parse_ast};

const FILE: &str = "Dockerfile";

/// The stack the fuzz target parses on.
const STACK: usize = 256 * 1024;

/// What each input did before its fix, and the input.
const CRASHES: &[(&str, &str)] = &[
    (
        "stack overflow: `${a:-` nested 97 deep (cargo fuzz tmin)",
        "${a:-${a:-${a:-${a:-${a:-${a:-${a:-${a:-${a:-${a:-${a:-${a:-${a:-${a:-${a:-${a:-${a:-${a:\
        -${a:-${a:-${a:-${a:-${a:-${a:-${a:-${a:-${a:-${a:-${a:-${a:-${a:-${a:-${a:-${a:-${a:-${a:\
        -${a:-${a:-${a:-${a:-${a:-${a:-${a:-${a:-${a:-${a:-${a:-${a:-${a:-${a:-${a:-${a:-${a:-${a:\
        -${a:-${a:-${a:-${a:-${a:-${a:-${a:-${a:-${a:-${a:-${a:-${a:-${a:-${a:-${a:-${a:-${a:-${a:\
        -${a:-${a:-${a:-${a:-${a:-${a:-${a:-${a:-${a:-${a:-${a:-${a:-${a:-${a:-${a:-${a:-${a:-${a:\
        -${a:-${a:-${a:-${a:-${a:-${a:-${a:-}}}}}}}}}}",
    ),
    (
        "stack overflow: ONBUILD nested 241 deep (cargo fuzz tmin)",
        "FROM a\nONBUILD ONBUILD ONBUILD ONBUILD ONBUILD ONBUILD ONBUILD ONBUILD ONBUILD ONBUILD O\
        NBUILD ONBUILD ONBUILD ONBUILD ONBUILD ONBUILD ONBUILD ONBUILD ONBUILD ONBUILD ONBUILD ONB\
        UILD ONBUILD ONBUILD ONBUILD ONBUILD ONBUILD ONBUILD ONBUILD ONBUILD ONBUILD ONBUILD ONBUI\
        LD ONBUILD ONBUILD ONBUILD ONBUILD ONBUILD ONBUILD ONBUILD ONBUILD ONBUILD ONBUILD ONBUILD \
        ONBUILD ONBUILD ONBUILD ONBUILD ONBUILD ONBUILD ONBUILD ONBUILD ONBUILD ONBUILD ONBUILD ON\
        BUILD ONBUILD ONBUILD ONBUILD ONBUILD ONBUILD ONBUILD ONBUILD ONBUILD ONBUILD ONBUILD ONBU\
        ILD ONBUILD ONBUILD ONBUILD ONBUILD ONBUILD ONBUILD ONBUILD ONBUILD ONBUILD ONBUILD ONBUIL\
        D ONBUILD ONBUILD ONBUILD ONBUILD ONBUILD ONBUILD ONBUILD ONBUILD ONBUILD ONBUILD ONBUILD \
        ONBUILD ONBUILD ONBUILD ONBUILD ONBUILD ONBUILD ONBUILD ONBUILD ONBUILD ONBUILD ONBUILD ON\
        BUILD ONBUILD ONBUILD ONBUILD ONBUILD ONBUILD ONBUILD ONBUILD ONBUILD ONBUILD ONBUILD ONBU\
        ILD ONBUILD ONBUILD ONBUILD ONBUILD ONBUILD ONBUILD ONBUILD ONBUILD ONBUILD ONBUILD ONBUIL\
        D ONBUILD ONBUILD ONBUILD ONBUILD ONBUILD ONBUILD ONBUILD ONBUILD ONBUILD ONBUILD ONBUILD \
        ONBUILD ONBUILD ONBUILD ONBUILD ONBUILD ONBUILD ONBUILD ONBUILD ONBUILD ONBUILD ONBUILD ON\
        BUILD ONBUILD ONBUILD ONBUILD ONBUILD ONBUILD ONBUILD ONBUILD ONBUILD ONBUILD ONBUILD ONBU\
        ILD ONBUILD ONBUILD ONBUILD ONBUILD ONBUILD ONBUILD ONBUILD ONBUILD ONBUILD ONBUILD ONBUIL\
        D ONBUILD ONBUILD ONBUILD ONBUILD ONBUILD ONBUILD ONBUILD ONBUILD ONBUILD ONBUILD ONBUILD \
        ONBUILD ONBUILD ONBUILD ONBUILD ONBUILD ONBUILD ONBUILD ONBUILD ONBUILD ONBUILD ONBUILD ON\
        BUILD ONBUILD ONBUILD ONBUILD ONBUILD ONBUILD ONBUILD ONBUILD ONBUILD ONBUILD ONBUILD ONBU\
        ILD ONBUILD ONBUILD ONBUILD ONBUILD ONBUILD ONBUILD ONBUILD ONBUILD ONBUILD ONBUILD ONBUIL\
        D ONBUILD ONBUILD ONBUILD ONBUILD ONBUILD ONBUILD ONBUILD ONBUILD ONBUILD ONBUILD ONBUILD \
        ONBUILD ONBUILD ONBUILD ONBUILD ONBUILD ONBUILD ONBUILD ONBUILD ONBUILD ONBUILD ONBUILD ON\
        BUILD ONBUILD ONBUILD ONBUILD ONBUILD ONBUILD ONBUILUILD ONBUILD ONBUILD RUN x\n",
    ),
    (
        "timeout, then out of memory: each ENV makes the value ten times longer, up to 10 GB",
        "FROM a\n\
        ENV A=aaaaaaaaaa\n\
        ENV A=$A$A$A$A$A$A$A$A$A$A\n\
        ENV A=$A$A$A$A$A$A$A$A$A$A\n\
        ENV A=$A$A$A$A$A$A$A$A$A$A\n\
        ENV A=$A$A$A$A$A$A$A$A$A$A\n\
        ENV A=$A$A$A$A$A$A$A$A$A$A\n\
        ENV A=$A$A$A$A$A$A$A$A$A$A\n\
        ENV A=$A$A$A$A$A$A$A$A$A$A\n\
        ENV A=$A$A$A$A$A$A$A$A$A$A\n\
        ENV A=$A$A$A$A$A$A$A$A$A$A\n",
    ),
];

fn env() -> BTreeMap<String, String> {
    [
        ("A", "a b"),
        ("EMPTY", ""),
        ("P", "/usr/local/bin"),
        ("STAGE", "0"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.to_owned()))
    .collect()
}

/// Renders an error, which must name the file and a line when it comes from the parser.
fn render(err: impl Display, located: bool) {
    let text = err.to_string();
    assert!(!text.is_empty());
    if located {
        assert!(text.starts_with("Dockerfile:"), "{text}");
    }
}

/// The fuzz target's calls.
fn exercise(src: &str) {
    let env = env();
    match parse_ast(FILE, src) {
        Ok(ast) => {
            dump(&ast);
        }
        Err(e) => render(e, true),
    }
    match parse(FILE, src) {
        Ok(df) => {
            for args in [BTreeMap::new(), env.clone()] {
                match StageGraph::new(&df, &args) {
                    Ok(graph) => {
                        let first_name = df.stages.first().and_then(|s| s.name.as_deref());
                        for target in [None, first_name, Some("0")] {
                            match graph.target(&df, target) {
                                Ok(t) => {
                                    graph.reachable(t);
                                }
                                Err(e) => render(e.with_source(FILE, src), true),
                            }
                        }
                    }
                    Err(e) => render(e.with_source(FILE, src), true),
                }
            }
        }
        Err(e) => render(e, true),
    }
    let lexers = [
        Lexer::new('\\'),
        Lexer::new('`')
            .raw_quotes(true)
            .raw_escapes(true)
            .skip_unset_env(true),
        Lexer::new('\\').skip_process_quotes(true),
    ];
    for lexer in &lexers {
        if let Err(e) = lexer.process_word(src, &env) {
            render(e, false);
        }
        if let Err(e) = lexer.process_words(src, &env) {
            render(e, false);
        }
    }
}

#[test]
fn fuzz_crashes_do_not_crash() {
    for &(what, src) in CRASHES {
        // A stack overflow aborts the test binary; a panic fails the join.
        let worker = std::thread::Builder::new()
            .name(what.to_owned())
            .stack_size(STACK)
            .spawn(move || exercise(src))
            .expect("spawn a thread");
        assert!(worker.join().is_ok(), "{what}");
    }
}

#[test]
fn expansions_nest_up_to_32_deep() {
    let nested = |depth: usize| format!("{}x{}", "${A:-".repeat(depth), "}".repeat(depth));
    let lexer = Lexer::new('\\');
    let env = BTreeMap::new();
    assert_eq!(lexer.process_word(&nested(32), &env).unwrap(), "x");
    for depth in [33, 100_000] {
        let err = lexer.process_word(&nested(depth), &env).unwrap_err();
        assert!(
            err.message.starts_with("more than 32 nested expansions"),
            "{depth}: {}",
            err.message.chars().take(80).collect::<String>()
        );
        assert_eq!(err.offset, 33 * 5, "{depth}");
    }
}

#[test]
fn onbuild_triggers_nest_up_to_16_deep() {
    let ast = parse_ast(FILE, "FROM a\nONBUILD ONBUILD RUN x\n").unwrap();
    assert_eq!(dump(&ast), "(from \"a\")\n(onbuild (onbuild (run \"x\")))");
    let src = |depth: usize| format!("FROM a\n{}RUN x\n", "ONBUILD ".repeat(depth));
    assert!(parse_ast(FILE, &src(16)).is_ok());
    for depth in [17, 100_000] {
        let err = parse_ast(FILE, &src(depth)).unwrap_err();
        // The seventeenth ONBUILD, whose trigger would nest seventeen deep.
        assert_eq!(err.span.start, Pos::new(2, 16 * 8 + 1), "{depth}");
        assert!(
            err.to_string()
                .starts_with("Dockerfile:2:129: ONBUILD isn't allowed as an ONBUILD trigger"),
            "{depth}"
        );
    }
}

#[test]
fn expansions_stop_at_128_kib() {
    let lexer = Lexer::new('\\');
    let env: BTreeMap<String, String> = [("A".to_owned(), "a".repeat(64 * 1024))].into();
    assert_eq!(lexer.process_word("$A$A", &env).unwrap().len(), 128 * 1024);
    for word in [
        "$A$A$A",
        "\"$A$A$A\"",
        "x$A$A",
        "${A//*/\\$0\\$0\\$0}",
        "${A:-x}${A}${A}",
    ] {
        let err = lexer.process_word(word, &env).unwrap_err();
        assert!(
            err.message
                .starts_with("expansion longer than 131072 bytes"),
            "{word}: {err}"
        );
    }
    let (_, src) = CRASHES[2];
    let df = parse(FILE, src).unwrap();
    // The sixth ENV would make the value a million bytes long.
    let err = StageGraph::new(&df, &BTreeMap::new())
        .unwrap_err()
        .with_source(FILE, src);
    assert!(
        err.to_string()
            .starts_with("Dockerfile:7:1: expansion longer than 131072 bytes"),
        "{err}"
    );
}

/// Before each global ARG the stage graph now copies only the globals that ARG redeclares
/// without a default, not all of them (quadratic in their size once ARGs are long).
#[test]
fn redeclared_global_arg_keeps_its_value() {
    let df = parse(FILE, "ARG X=1\nARG Y=2\nARG X\nFROM $X$Y\n").unwrap();
    let graph = StageGraph::new(&df, &BTreeMap::new()).unwrap();
    assert_eq!(graph.bases, ["12"]);
}
