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

/// HOME as runc sets it for BuildKit's steps: the user's passwd entry (`home`), else `/`,
/// unless the environment has one. The step's key needs no field for it: it follows from
/// the user (keyed) and the image's files (the chain).
pub(super) fn home_for(env: &[String], home: Option<&str>) -> Option<String> {
    if env.iter().any(|e| e.starts_with("HOME=")) {
        return None;
    }
    let home = home.filter(|h| !h.is_empty());
    Some(format!("HOME={}", home.unwrap_or("/")))
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
    use super::is_plain_file_name;

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
