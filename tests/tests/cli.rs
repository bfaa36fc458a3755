//! The command line's own outputs: shell completions and man pages, generated from the same
//! definitions the parser uses.
#![allow(clippy::unwrap_used)]

use std::process::Command;

use cairn_e2e::{cairn, cairn_bin, ok, texts};

#[test]
fn bash_completes_commands_and_flags() {
    let script = texts(&ok({
        let mut c = cairn();
        c.args(["completion", "bash"]);
        c
    }))
    .0;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("cairn.bash");
    std::fs::write(&file, script).unwrap();
    // What bash's completion would offer after `cairn bui` and `cairn build --plat`.
    let complete = |words: &str, cword: usize| -> String {
        let out = Command::new("bash")
            .arg("-c")
            .arg(format!(
                "source {}; COMP_WORDS=({words}); COMP_CWORD={cword}; COMP_LINE='{words}'; \
                 COMP_POINT=${{#COMP_LINE}}; _cairn cairn; echo \"${{COMPREPLY[@]}}\"",
                file.display()
            ))
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", texts(&out).1);
        texts(&out).0
    };
    assert!(
        complete("cairn bui", 1)
            .split_whitespace()
            .any(|w| w == "build")
    );
    assert!(complete("cairn build --plat", 2).contains("--platform"));
    for shell in ["zsh", "fish"] {
        let out = ok({
            let mut c = cairn();
            c.args(["completion", shell]);
            c
        });
        assert!(texts(&out).0.contains("build"), "{shell}");
    }
    // A bad shell is a usage error naming the choices.
    let bad = cairn().args(["completion", "tcsh"]).output().unwrap();
    assert!(!bad.status.success() && texts(&bad).1.contains("bash"));
}

#[test]
fn man_pages_document_every_command() {
    let dir = tempfile::tempdir().unwrap();
    let man = dir.path().join("man1");
    ok({
        let mut c = Command::new(cairn_bin());
        c.arg("man").arg(&man);
        c
    });
    for page in [
        "cairn.1",
        "cairn-build.1",
        "cairn-manifest-push.1",
        "cairn-image-ls.1",
    ] {
        assert!(man.join(page).is_file(), "{page}");
    }
    // roff source: the flag is there, its dashes escaped.
    let page = std::fs::read_to_string(man.join("cairn-build.1")).unwrap();
    assert!(page.contains("\\-\\-platform"), "{page}");
    assert!(page.contains(".TH cairn-build 1"), "{page}");
}
