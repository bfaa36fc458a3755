//! Fuzzes the Dockerfile parser end to end: the raw AST and its dump, the typed parse, the stage
//! graph, and shell-word expansion of the input text. Every error is rendered, since the caret
//! rendering is code that could panic too. A panic, overflow or hang anywhere is a bug.

#![no_main]

use std::collections::BTreeMap;
use std::sync::mpsc::{self, Receiver, Sender};
use std::sync::{LazyLock, Mutex};

use cairn_parser::expand::Lexer;
use cairn_parser::{StageGraph, dump, parse, parse_ast};
use libfuzzer_sys::fuzz_target;

const FILE: &str = "Dockerfile";

/// The stack each input is parsed on. Small on purpose: libFuzzer calls the target on its main
/// thread (8 MiB) and this is an optimised build, so runaway recursion would only overflow on
/// inputs far longer than `-max_len`. The builder and `cargo test` parse on 2 MiB threads, and a
/// debug build needs several times the stack of this one, so a 4 KiB input that needs more than
/// this is a bug.
const STACK: usize = 256 * 1024;

fn env() -> BTreeMap<String, String> {
    [("A", "a b"), ("EMPTY", ""), ("P", "/usr/local/bin"), ("STAGE", "0")]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect()
}

fuzz_target!(|data: &[u8]| {
    let Ok(src) = std::str::from_utf8(data) else {
        return;
    };
    // A panic on the worker aborts through libfuzzer-sys's panic hook, and ASan reports a stack
    // overflow there, so reaching `done` means the input passed.
    let (inputs, done) = &*WORKER;
    let inputs = inputs.lock().expect("worker channel");
    inputs.send(src.to_owned()).expect("worker alive");
    done.lock().expect("worker channel").recv().expect("worker alive");
});

/// One long-lived thread with a `STACK`-sized stack that runs every input (a thread per input
/// would cost more than the parse under ASan): the inputs go in, and a unit comes back for each.
static WORKER: LazyLock<(Mutex<Sender<String>>, Mutex<Receiver<()>>)> = LazyLock::new(|| {
    let (input_tx, input_rx) = mpsc::channel::<String>();
    let (done_tx, done_rx) = mpsc::channel();
    std::thread::Builder::new()
        .name("parse".to_owned())
        .stack_size(STACK)
        .spawn(move || {
            for src in input_rx {
                exercise(&src);
                if done_tx.send(()).is_err() {
                    break;
                }
            }
        })
        .expect("spawn the fuzzing thread");
    (Mutex::new(input_tx), Mutex::new(done_rx))
});

fn exercise(src: &str) {
    let env = env();

    match parse_ast(FILE, src) {
        Ok(ast) => {
            let _ = dump(&ast);
        }
        Err(e) => {
            let _ = e.to_string();
        }
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
                                    let _ = graph.reachable(t);
                                }
                                Err(e) => {
                                    let _ = e.with_source(FILE, src).to_string();
                                }
                            }
                        }
                    }
                    // The graph does not know the source; give it the line for the caret.
                    Err(e) => {
                        let _ = e.with_source(FILE, src).to_string();
                    }
                }
            }
        }
        Err(e) => {
            let _ = e.to_string();
        }
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
            let _ = e.to_string();
        }
        if let Err(e) = lexer.process_words(src, &env) {
            let _ = e.to_string();
        }
    }
}
