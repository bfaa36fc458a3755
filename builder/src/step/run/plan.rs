//! What a RUN's process is given, worked out without I/O: its environment, its argv (heredoc
//! forms included) and its HOME.

use std::collections::BTreeMap;

use cairn_layers::image::ImageConfig;
use cairn_parser::instruction::{Command, Run};

use crate::meta::{self, MetaState};
use crate::sandbox;

/// The process's environment before HOME and mounts: `env` goes into the step's key,
/// `proxy_env` reaches the process only.
pub(super) fn process_env(
    config: &ImageConfig,
    args: &BTreeMap<String, String>,
    state: &MetaState,
    build_args: &BTreeMap<String, String>,
) -> (Vec<String>, Vec<String>) {
    // The image's ENV and the stage's ARGs, an ARG declared after an ENV of its name winning
    // (BuildKit's ARG sets the state's environment), in the order BuildKit's state keeps them.
    let mut env = crate::envindex::ordered_env(
        &config.config.env,
        &state.env_seq,
        args.keys(),
        &crate::envindex::Words {
            env: &config.config.env,
            index: &state.env_index,
            args,
            over: &state.args_over_env,
        },
    );
    // Proxy build args reach the process under both spellings, as BuildKit's ProxyEnv gives
    // them, and stay out of the step's key: a changed proxy keeps the cached result.
    let mut proxy_env = Vec::new();
    for lower in [
        "http_proxy",
        "https_proxy",
        "ftp_proxy",
        "no_proxy",
        "all_proxy",
    ] {
        let upper = lower.to_ascii_uppercase();
        // BuildKit reads the args in sorted order, so the lowercase spelling wins.
        let Some(v) = build_args.get(lower).or(build_args.get(&upper)) else {
            continue;
        };
        for k in [upper.as_str(), lower] {
            // One declared by ARG is the stage's, already in the environment and the key.
            if !args.contains_key(k) {
                proxy_env.push(format!("{k}={v}"));
            }
        }
    }
    if !env.iter().any(|e| e.starts_with("PATH=")) {
        env.push(format!("PATH={}", sandbox::DEFAULT_PATH));
    }
    (env, proxy_env)
}

/// A RUN's command line, and the script file it runs when a `#!` heredoc is the command.
#[derive(Debug, PartialEq, Eq)]
pub(super) struct Argv {
    pub argv: Vec<String>,
    pub script: Option<Script>,
}

/// A heredoc run as a file: `body` mounted read-only and executable at `target`.
#[derive(Debug, PartialEq, Eq)]
pub(super) struct Script {
    pub target: String,
    pub body: String,
}

/// The command, heredocs included; the error is the step's message.
pub(super) fn command_argv(run: &Run, shell: &[String]) -> Result<Argv, String> {
    let plain = |argv| Argv { argv, script: None };
    Ok(match &run.command {
        Command::Shell(line) if !run.heredocs.is_empty() => {
            let single = run.heredocs.len() == 1 && cairn_parser::raw::is_heredoc_word(line.trim());
            if single {
                let h = &run.heredocs[0];
                if h.content.starts_with("#!") {
                    // A script with its own interpreter runs as a file, as BuildKit does. The
                    // name is the Dockerfile's: it names the file inside only, never on the
                    // host, where the body is kept under a name of cairn's.
                    if !is_plain_file_name(&h.name) {
                        return Err(format!(
                            "heredoc name {:?} cannot name a script file: use a plain word \
                             (letters, digits, '.', '_' or '-')",
                            h.name
                        ));
                    }
                    let target = format!("/dev/pipes/{}", h.name);
                    Argv {
                        argv: vec![target.clone()],
                        script: Some(Script {
                            target,
                            body: h.content.clone(),
                        }),
                    }
                } else {
                    plain(meta::argv(&Command::Shell(h.content.clone()), shell))
                }
            } else {
                // The shell reads the heredocs itself, as they stand in the Dockerfile.
                let mut script = line.clone();
                for h in &run.heredocs {
                    script.push('\n');
                    script.push_str(&h.content);
                    script.push_str(&h.name);
                }
                plain(meta::argv(&Command::Shell(script), shell))
            }
        }
        c => plain(meta::argv(c, shell)),
    })
}

/// A heredoc name that can stand as one file name in /dev/pipes: BuildKit makes the script
/// there under it, and fails for anything with a slash or a parent.
fn is_plain_file_name(name: &str) -> bool {
    !name.is_empty()
        && name != "."
        && name != ".."
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use cairn_parser::instruction::InstructionKind;

    use super::*;

    fn strings(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| (*s).to_owned()).collect()
    }

    fn map(v: &[(&str, &str)]) -> BTreeMap<String, String> {
        v.iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    fn default_path() -> String {
        format!("PATH={}", sandbox::DEFAULT_PATH)
    }

    struct EnvCase {
        what: &'static str,
        config_env: &'static [&'static str],
        seq: &'static [&'static str],
        args: &'static [(&'static str, &'static str)],
        over: &'static [&'static str],
        build_args: &'static [(&'static str, &'static str)],
        /// `None` stands for the default PATH.
        env: &'static [Option<&'static str>],
        proxy: &'static [&'static str],
    }

    #[test]
    fn process_environment() {
        let cases = [
            EnvCase {
                what: "ENV only, default PATH last",
                config_env: &["A=1", "B=2"],
                seq: &["A", "B"],
                args: &[],
                over: &[],
                build_args: &[],
                env: &[Some("A=1"), Some("B=2"), None],
                proxy: &[],
            },
            EnvCase {
                what: "a PATH of the image is kept, no default",
                config_env: &["PATH=/opt/bin", "A=1"],
                seq: &[],
                args: &[],
                over: &[],
                build_args: &[],
                env: &[Some("PATH=/opt/bin"), Some("A=1")],
                proxy: &[],
            },
            EnvCase {
                what: "a PATH from an ARG is kept too",
                config_env: &[],
                seq: &["PATH"],
                args: &[("PATH", "/arg/bin")],
                over: &[],
                build_args: &[],
                env: &[Some("PATH=/arg/bin")],
                proxy: &[],
            },
            EnvCase {
                what: "base names first, then in the order last set",
                config_env: &["BASE=b", "A=1", "C=3"],
                seq: &["C", "B", "A"],
                args: &[("B", "2")],
                over: &[],
                build_args: &[],
                env: &[Some("BASE=b"), Some("C=3"), Some("B=2"), Some("A=1"), None],
                proxy: &[],
            },
            EnvCase {
                what: "ENV over an earlier ARG",
                config_env: &["A=env"],
                seq: &["A", "A"],
                args: &[("A", "arg")],
                over: &[],
                build_args: &[],
                env: &[Some("A=env"), None],
                proxy: &[],
            },
            EnvCase {
                what: "an ARG declared after the ENV wins",
                config_env: &["A=env"],
                seq: &["A", "A"],
                args: &[("A", "arg")],
                over: &["A"],
                build_args: &[],
                env: &[Some("A=arg"), None],
                proxy: &[],
            },
            EnvCase {
                what: "undeclared build args stay out",
                config_env: &[],
                seq: &[],
                args: &[],
                over: &[],
                build_args: &[("FOO", "bar")],
                env: &[None],
                proxy: &[],
            },
            EnvCase {
                what: "a proxy arg under both spellings, out of env",
                config_env: &[],
                seq: &[],
                args: &[],
                over: &[],
                build_args: &[("HTTPS_PROXY", "up")],
                env: &[None],
                proxy: &["HTTPS_PROXY=up", "https_proxy=up"],
            },
            EnvCase {
                what: "the lowercase spelling wins",
                config_env: &[],
                seq: &[],
                args: &[],
                over: &[],
                build_args: &[("http_proxy", "low"), ("HTTP_PROXY", "up")],
                env: &[None],
                proxy: &["HTTP_PROXY=low", "http_proxy=low"],
            },
            EnvCase {
                what: "every proxy name, in BuildKit's order",
                config_env: &[],
                seq: &[],
                args: &[],
                over: &[],
                build_args: &[
                    ("all_proxy", "a"),
                    ("ftp_proxy", "f"),
                    ("http_proxy", "h"),
                    ("https_proxy", "s"),
                    ("no_proxy", "n"),
                ],
                env: &[None],
                proxy: &[
                    "HTTP_PROXY=h",
                    "http_proxy=h",
                    "HTTPS_PROXY=s",
                    "https_proxy=s",
                    "FTP_PROXY=f",
                    "ftp_proxy=f",
                    "NO_PROXY=n",
                    "no_proxy=n",
                    "ALL_PROXY=a",
                    "all_proxy=a",
                ],
            },
            EnvCase {
                what: "a declared proxy ARG keeps its own value, in env",
                config_env: &[],
                seq: &["http_proxy"],
                args: &[("http_proxy", "declared")],
                over: &[],
                build_args: &[("http_proxy", "given")],
                env: &[Some("http_proxy=declared"), None],
                proxy: &["HTTP_PROXY=given"],
            },
        ];
        for c in cases {
            let mut config = ImageConfig::scratch();
            config.config.env = strings(c.config_env);
            let mut state = MetaState {
                env_seq: strings(c.seq),
                args_over_env: c
                    .over
                    .iter()
                    .map(|s| (*s).to_owned())
                    .collect::<BTreeSet<_>>(),
                ..MetaState::default()
            };
            state.env_index.sync(&config.config.env);
            let (env, proxy) = process_env(&config, &map(c.args), &state, &map(c.build_args));
            let want: Vec<String> = c
                .env
                .iter()
                .map(|e| e.map_or_else(default_path, str::to_owned))
                .collect();
            assert_eq!(env, want, "{}", c.what);
            assert_eq!(proxy, strings(c.proxy), "{}", c.what);
        }
    }

    fn run_of(line: &str) -> Run {
        let src = format!("FROM scratch\n{line}");
        let df = cairn_parser::parse("Dockerfile", &src).unwrap();
        match &df.stages[0].instructions[0].kind {
            InstructionKind::Run(run) => run.clone(),
            other => panic!("not a RUN: {other:?}"),
        }
    }

    #[test]
    fn command_lines() {
        let sh = strings(&["/bin/sh", "-c"]);
        let bash = strings(&["/bin/bash", "-eo", "pipefail", "-c"]);
        let cases: &[(&str, &[String], &[&str])] = &[
            ("RUN echo hi", &sh, &["/bin/sh", "-c", "echo hi"]),
            (
                "RUN echo hi",
                &bash,
                &["/bin/bash", "-eo", "pipefail", "-c", "echo hi"],
            ),
            (r#"RUN ["echo", "hi"]"#, &sh, &["echo", "hi"]),
            (r#"RUN ["echo", "hi"]"#, &bash, &["echo", "hi"]),
            // A lone plain heredoc is the shell's script.
            (
                "RUN <<EOF\necho a\necho b\nEOF\n",
                &sh,
                &["/bin/sh", "-c", "echo a\necho b\n"],
            ),
            (
                "RUN <<EOF\necho a\nEOF\n",
                &bash,
                &["/bin/bash", "-eo", "pipefail", "-c", "echo a\n"],
            ),
            // A heredoc fed to a command, or several, stay on the line for the shell.
            (
                "RUN python3 <<EOF\nprint(1)\nEOF\n",
                &sh,
                &["/bin/sh", "-c", "python3 <<EOF\nprint(1)\nEOF"],
            ),
            (
                "RUN <<A <<B\na\nA\nb\nB\n",
                &sh,
                &["/bin/sh", "-c", "<<A <<B\na\nA\nb\nB"],
            ),
            (
                "RUN cat <<A >/a && cat <<B >/b\n#!x\nA\nb\nB\n",
                &sh,
                &["/bin/sh", "-c", "cat <<A >/a && cat <<B >/b\n#!x\nA\nb\nB"],
            ),
        ];
        for (line, shell, want) in cases {
            let got = command_argv(&run_of(line), shell).unwrap();
            assert_eq!(got.argv, strings(want), "{line:?}");
            assert_eq!(got.script, None, "{line:?}");
        }
    }

    #[test]
    fn a_lone_shebang_heredoc_runs_as_a_file() {
        for shell in [strings(&["/bin/sh", "-c"]), strings(&["/bin/bash", "-c"])] {
            let got = command_argv(
                &run_of("RUN <<run.sh\n#!/bin/sh\necho hi\nrun.sh\n"),
                &shell,
            );
            assert_eq!(
                got.unwrap(),
                Argv {
                    argv: strings(&["/dev/pipes/run.sh"]),
                    script: Some(Script {
                        target: "/dev/pipes/run.sh".into(),
                        body: "#!/bin/sh\necho hi\n".into(),
                    }),
                }
            );
        }
    }

    #[test]
    fn a_shebang_heredoc_needs_a_plain_name() {
        let shell = strings(&["/bin/sh", "-c"]);
        for name in ["../x", "a/b", ".."] {
            let mut run = run_of("RUN <<EOF\n#!/bin/sh\necho hi\nEOF\n");
            run.heredocs[0].name = name.into();
            let err = command_argv(&run, &shell).unwrap_err();
            assert_eq!(
                err,
                format!(
                    "heredoc name {name:?} cannot name a script file: use a plain word \
                     (letters, digits, '.', '_' or '-')"
                )
            );
        }
    }

    #[test]
    fn heredoc_script_names() {
        let cases = [
            ("EOF", true),
            ("run.sh", true),
            ("my-script_2", true),
            ("/tmp/pwned", false),
            ("../../x", false),
            ("a/b", false),
            ("..", false),
            (".", false),
            ("", false),
            ("sp ace", false),
        ];
        for (name, ok) in cases {
            assert_eq!(is_plain_file_name(name), ok, "{name:?}");
        }
    }
}
