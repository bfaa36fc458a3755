//! Metadata instructions applied to an image config, with Docker's effects: ENV, LABEL, CMD,
//! ENTRYPOINT, WORKDIR, USER, EXPOSE, VOLUME, STOPSIGNAL, HEALTHCHECK, SHELL, MAINTAINER, ONBUILD.

use std::collections::{BTreeMap, BTreeSet};

use cairn_layers::image::{Empty, HealthConfig, ImageConfig};
use cairn_parser::expand::Lexer;
use cairn_parser::instruction::{Command, Healthcheck, InstructionKind};

use crate::envindex::{EnvIndex, Words};
use crate::error::{Error, Result};
use crate::history::{MetaLine, go_duration, go_list, go_quoted_list};

/// What a stage has done so far that changes how later instructions apply.
#[derive(Debug, Default, Clone)]
pub struct MetaState {
    /// CMD was set in this stage: a later ENTRYPOINT keeps it (Docker resets an inherited one).
    pub cmd_set: bool,
    /// Build args declared with a value after the stage's last ENV of the same name: BuildKit's
    /// ARG sets the step environment, so such an ARG wins over an inherited ENV until an ENV
    /// sets the name again.
    pub args_over_env: BTreeSet<String>,
    /// The stage's ARG declarations in order (BuildKit's `buildArgs`): what a RUN's history
    /// line lists, inherited by `FROM <stage>` with the values.
    pub arg_decls: Vec<(String, Option<String>)>,
    /// Where each name of the config's environment is, so a step looks a name up rather than
    /// copying the whole environment (see `envindex`).
    pub env_index: EnvIndex,
    /// The names ENV pairs and ARG values set, in turn (inherited by `FROM <stage>`): the
    /// order of a RUN's environment (see `envindex::ordered_env`).
    pub env_seq: Vec<String>,
}

/// The environment words expand with and RUN sees, as BuildKit's state holds it: the
/// stage's ARGs, overridden by its ENV, except for ARGs declared after that ENV.
pub fn words_env(
    config: &ImageConfig,
    args: &BTreeMap<String, String>,
    state: &MetaState,
) -> BTreeMap<String, String> {
    let mut env = args.clone();
    env.extend(env_map(config));
    for k in &state.args_over_env {
        if let Some(v) = args.get(k) {
            env.insert(k.clone(), v.clone());
        }
    }
    env
}

/// The config's environment as name → value (later entries win), for expansion.
pub fn env_map(config: &ImageConfig) -> BTreeMap<String, String> {
    config
        .config
        .env
        .iter()
        .map(|kv| match kv.split_once('=') {
            Some((k, v)) => (k.to_owned(), v.to_owned()),
            None => (kv.clone(), String::new()),
        })
        .collect()
}

/// Sets `key=value` in an env list, replacing an existing entry in place.
pub fn set_env(env: &mut Vec<String>, key: &str, value: &str) {
    let entry = format!("{key}={value}");
    match env
        .iter_mut()
        .find(|e| e.split_once('=').map_or(e.as_str(), |(k, _)| k) == key)
    {
        Some(e) => *e = entry,
        None => env.push(entry),
    }
}

/// The default shell for shell-form commands.
pub fn shell_of(config: &ImageConfig) -> Vec<String> {
    config
        .config
        .shell
        .clone()
        .unwrap_or_else(|| vec!["/bin/sh".to_owned(), "-c".to_owned()])
}

/// A command as argv: exec form as written, shell form through `shell`.
pub fn argv(command: &Command, shell: &[String]) -> Vec<String> {
    match command {
        Command::Exec(args) => args.clone(),
        Command::Shell(script) => {
            let mut v = shell.to_vec();
            v.push(script.clone());
            v
        }
    }
}

/// Lexically cleans an absolute path: `/a/./b/../c/` → `/a/c`.
pub fn clean_abs(path: &str) -> String {
    let mut parts: Vec<&str> = Vec::new();
    for c in path.split('/') {
        match c {
            "" | "." => {}
            ".." => {
                parts.pop();
            }
            c => parts.push(c),
        }
    }
    format!("/{}", parts.join("/"))
}

fn err(instruction: &str, message: impl Into<String>) -> Error {
    Error::Instruction {
        instruction: instruction.to_owned(),
        message: message.into(),
    }
}

/// `80`, `80/udp`, `8000-8002/tcp` → the ports Docker records (`80/tcp`, ...).
fn expose_ports(spec: &str) -> Result<Vec<String>> {
    let (ports, proto) = match spec.split_once('/') {
        Some((p, proto)) => (p, proto.to_ascii_lowercase()),
        None => (spec, "tcp".to_owned()),
    };
    if !matches!(proto.as_str(), "tcp" | "udp" | "sctp") {
        return Err(err(
            "EXPOSE",
            format!("invalid protocol in {spec:?} (use tcp, udp or sctp)"),
        ));
    }
    let parse = |p: &str| {
        p.parse::<u16>()
            .map_err(|_| err("EXPOSE", format!("invalid port {p:?} in {spec:?}")))
    };
    let (lo, hi) = match ports.split_once('-') {
        Some((a, b)) => (parse(a)?, parse(b)?),
        None => {
            let p = parse(ports)?;
            (p, p)
        }
    };
    if hi < lo {
        return Err(err("EXPOSE", format!("invalid port range {spec:?}")));
    }
    Ok((lo..=hi).map(|p| format!("{p}/{proto}")).collect())
}

/// Applies one metadata instruction to `config` and returns the history entry BuildKit gives
/// it. `lexer` expands words with the config's environment plus `args` (the stage's build
/// args); instructions that are not metadata (FROM, RUN, COPY, ADD, ARG) are refused.
pub fn apply(
    config: &mut ImageConfig,
    ins: &InstructionKind,
    original: &str,
    args: &BTreeMap<String, String>,
    lexer: &Lexer,
    state: &mut MetaState,
) -> Result<MetaLine> {
    // The environment is looked up in place, not copied: a stage of many ENV lines would
    // copy it once a line. It is out of the config while the words expand.
    state.env_index.sync(&config.config.env);
    let mut env = std::mem::take(&mut config.config.env);
    let words = Words {
        env: &env,
        index: &state.env_index,
        args,
        over: &state.args_over_env,
    };
    let set = apply_with(config, ins, original, &words, lexer, &mut state.cmd_set);
    if let Ok((pairs, _)) = &set {
        for (k, v) in pairs {
            state.env_index.set(&mut env, k, v);
            state.args_over_env.remove(k);
            state.env_seq.push(k.clone());
        }
    }
    config.config.env = env;
    set.map(|(_, line)| line)
}

/// [`apply`] with the words to expand with; returns the ENV pairs to set and the line.
fn apply_with(
    config: &mut ImageConfig,
    ins: &InstructionKind,
    original: &str,
    env: &Words<'_>,
    lexer: &Lexer,
    cmd_set: &mut bool,
) -> Result<(Vec<(String, String)>, MetaLine)> {
    let word = |w: &str| lexer.process_word(w, env).map_err(Error::Expand);
    let shell = shell_of(config);
    let c = &mut config.config;
    let mut set = Vec::new();
    // BuildKit's commit messages: the values as set, expanded, in Go's formats.
    let line = |l: String| MetaLine::Line(l);
    let line = match ins {
        InstructionKind::Env { vars } => {
            // Every pair expands with the environment before the instruction, as BuildKit
            // expands the whole command first: `ENV a=two b=$a` gives b the old a.
            for kv in vars {
                let v = word(&kv.value)?;
                let k = word(&kv.key)?;
                set.push((k, v));
            }
            let pairs: Vec<String> = set.iter().map(|(k, v)| format!(" {k}={v}")).collect();
            line(format!("ENV{}", pairs.concat()))
        }
        InstructionKind::Label { labels } => {
            let mut msg = String::from("LABEL");
            for kv in labels {
                let (k, v) = (word(&kv.key)?, word(&kv.value)?);
                msg.push_str(&format!(" {k}={v}"));
                c.labels.insert(k, v);
            }
            line(msg)
        }
        InstructionKind::Cmd { command } => {
            let args = argv(command, &shell);
            let msg = format!("CMD {}", go_quoted_list(&args));
            c.cmd = Some(args);
            *cmd_set = true;
            line(msg)
        }
        InstructionKind::Entrypoint { command } => {
            let args = argv(command, &shell);
            let msg = format!("ENTRYPOINT {}", go_quoted_list(&args));
            c.entrypoint = Some(args);
            if !*cmd_set {
                c.cmd = None;
            }
            line(msg)
        }
        InstructionKind::Workdir { path } => {
            // BuildKit's NormalizeWorkdir: an absolute path is recorded as written (`/app/`
            // stays), a relative one is joined to the current directory and cleaned.
            let p = word(path)?;
            c.working_dir = if p.starts_with('/') {
                p
            } else {
                clean_abs(&format!("/{}/{p}", c.working_dir))
            };
            line(format!("WORKDIR {}", c.working_dir))
        }
        InstructionKind::User { user } => {
            c.user = word(user)?;
            line(format!("USER {}", c.user))
        }
        InstructionKind::Expose { ports } => {
            let mut all = Vec::new();
            for p in ports {
                // A variable may hold several ports: BuildKit splits the expanded words.
                for spec in word(p)?.split_whitespace() {
                    for port in expose_ports(spec)? {
                        all.push(port.clone());
                        c.exposed_ports.insert(port, Empty {});
                    }
                }
            }
            line(format!("EXPOSE {}", go_list(&all)))
        }
        InstructionKind::Volume { paths } => {
            let mut volumes = Vec::new();
            for p in paths {
                let v = word(p)?;
                if v.trim().is_empty() {
                    return Err(err("VOLUME", "a volume path can not be empty"));
                }
                volumes.push(v.clone());
                c.volumes.insert(v, Empty {});
            }
            line(format!("VOLUME {}", go_list(&volumes)))
        }
        InstructionKind::StopSignal { signal } => {
            c.stop_signal = word(signal)?;
            line(format!("STOPSIGNAL {}", c.stop_signal))
        }
        InstructionKind::Healthcheck(h) => {
            c.healthcheck = Some(match h {
                Healthcheck::None => HealthConfig {
                    test: vec!["NONE".to_owned()],
                    ..HealthConfig::default()
                },
                Healthcheck::Cmd {
                    command,
                    interval,
                    timeout,
                    start_period,
                    start_interval,
                    retries,
                } => HealthConfig {
                    test: match command {
                        Command::Exec(a) => std::iter::once("CMD".to_owned())
                            .chain(a.iter().cloned())
                            .collect(),
                        Command::Shell(s) => vec!["CMD-SHELL".to_owned(), s.clone()],
                    },
                    interval: interval.unwrap_or(0) as i64,
                    timeout: timeout.unwrap_or(0) as i64,
                    start_period: start_period.unwrap_or(0) as i64,
                    start_interval: start_interval.unwrap_or(0) as i64,
                    retries: i64::from(retries.unwrap_or(0)),
                },
            });
            // Go's %+v of BuildKit's HealthcheckConfig.
            let h = c.healthcheck.as_ref().map(|h| {
                format!(
                    "HEALTHCHECK {{Test:{} Interval:{} Timeout:{} StartPeriod:{} StartInterval:{} \
                     Retries:{}}}",
                    go_list(&h.test),
                    go_duration(h.interval),
                    go_duration(h.timeout),
                    go_duration(h.start_period),
                    go_duration(h.start_interval),
                    h.retries
                )
            });
            h.map_or(MetaLine::AsWritten, MetaLine::Line)
        }
        InstructionKind::Shell { shell } => {
            c.shell = Some(shell.clone());
            line(format!("SHELL {}", go_list(shell)))
        }
        InstructionKind::Maintainer { name } => {
            config.author = Some(name.clone());
            line(format!("MAINTAINER {name}"))
        }
        InstructionKind::Onbuild { trigger } => {
            c.on_build
                .get_or_insert_with(Vec::new)
                .push(trigger.original.clone());
            MetaLine::Nothing
        }
        InstructionKind::From(_)
        | InstructionKind::Run(_)
        | InstructionKind::Copy(_)
        | InstructionKind::Add(_)
        | InstructionKind::Arg { .. } => {
            let kw = original.split_whitespace().next().unwrap_or("instruction");
            return Err(err(kw, "is not a metadata instruction"));
        }
    };
    Ok((set, line))
}

/// Applies a run of metadata instructions in order (`cairn import --change`, ONBUILD-free
/// stages); an error names the instruction as written.
pub fn apply_all(
    config: &mut ImageConfig,
    instructions: &[cairn_parser::Instruction],
    args: &BTreeMap<String, String>,
    escape: char,
) -> Result<()> {
    let lexer = Lexer::new(escape);
    let mut state = MetaState::default();
    for ins in instructions {
        apply(config, &ins.kind, &ins.original, args, &lexer, &mut state).map_err(|e| match e {
            Error::Instruction { message, .. } => Error::Instruction {
                instruction: ins.original.clone(),
                message,
            },
            other => Error::InstructionFailed {
                instruction: ins.original.clone(),
                source: Box::new(other),
            },
        })?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(lines: &str) -> ImageConfig {
        let src = format!("FROM scratch\n{lines}");
        let df = cairn_parser::parse("Dockerfile", &src).unwrap();
        let mut config = ImageConfig::scratch();
        apply_all(
            &mut config,
            &df.stages[0].instructions,
            &BTreeMap::new(),
            '\\',
        )
        .unwrap();
        config
    }

    #[test]
    fn effects() {
        let c = run(
            "ENV A=1 B=\"two words\"\nENV C=$A-${B}\nENV A=3\nLABEL \"x y\"=\"$C\"\nWORKDIR /a\nWORKDIR b/../c\nUSER app:app\nEXPOSE 80 53/UDP 8000-8001\nVOLUME /data\nSTOPSIGNAL SIGINT\nSHELL [\"/bin/bash\",\"-c\"]\nCMD echo hi\nHEALTHCHECK --interval=5s CMD [\"true\"]\nMAINTAINER me\nONBUILD RUN make\n",
        );
        assert_eq!(c.config.env, ["A=3", "B=two words", "C=1-two words"]);
        assert_eq!(
            c.config.labels.get("x y").map(String::as_str),
            Some("1-two words")
        );
        assert_eq!(c.config.working_dir, "/a/c");
        assert_eq!(c.config.user, "app:app");
        let ports: Vec<&str> = c.config.exposed_ports.keys().map(String::as_str).collect();
        assert_eq!(ports, ["53/udp", "80/tcp", "8000/tcp", "8001/tcp"]);
        assert!(c.config.volumes.contains_key("/data"));
        assert_eq!(c.config.stop_signal, "SIGINT");
        assert_eq!(
            c.config.cmd.as_deref().unwrap(),
            ["/bin/bash", "-c", "echo hi"]
        );
        let h = c.config.healthcheck.unwrap();
        assert_eq!(
            (h.test, h.interval),
            (vec!["CMD".to_owned(), "true".to_owned()], 5_000_000_000)
        );
        assert_eq!(c.author.as_deref(), Some("me"));
        assert_eq!(c.config.on_build.unwrap(), ["RUN make"]);
    }

    #[test]
    fn entrypoint_resets_inherited_cmd_only() {
        let c = run("CMD [\"a\"]\nENTRYPOINT [\"e\"]\n");
        assert_eq!(
            c.config.cmd.as_deref().unwrap(),
            ["a"],
            "CMD set in this stage is kept"
        );
        let src = "FROM scratch\nENTRYPOINT [\"e\"]\n";
        let df = cairn_parser::parse("Dockerfile", src).unwrap();
        let mut config = ImageConfig::scratch();
        config.config.cmd = Some(vec!["inherited".into()]);
        let ins = &df.stages[0].instructions[0];
        apply(
            &mut config,
            &ins.kind,
            &ins.original,
            &BTreeMap::new(),
            &Lexer::new('\\'),
            &mut MetaState::default(),
        )
        .unwrap();
        assert_eq!(config.config.cmd, None);
    }

    #[test]
    fn workdir_spelling() {
        let cases = [
            ("WORKDIR /app/\n", "/app/"),
            ("WORKDIR /a/./b\n", "/a/./b"),
            ("WORKDIR rel/\n", "/rel"),
            ("WORKDIR /app/\nWORKDIR x/../y/\n", "/app/y"),
        ];
        for (lines, want) in cases {
            assert_eq!(run(lines).config.working_dir, want, "{lines}");
        }
    }

    #[test]
    fn env_expands_with_the_environment_before_it() {
        let c = run("ENV a=one\nENV a=two b=$a c=${a}x\n");
        assert_eq!(c.config.env, ["a=two", "b=one", "c=onex"]);
    }

    #[test]
    fn bad_ports() {
        for spec in ["80/icmp", "x", "9-8", "70000"] {
            assert!(expose_ports(spec).is_err(), "{spec}");
        }
    }

    #[test]
    fn shells_and_argv() {
        let sh = shell_of(&run(""));
        assert_eq!(sh, ["/bin/sh", "-c"]);
        let bash = shell_of(&run(r#"SHELL ["/bin/bash", "-eo", "pipefail", "-c"]"#));
        assert_eq!(bash, ["/bin/bash", "-eo", "pipefail", "-c"]);
        let line = Command::Shell("echo $HOME".into());
        let exec = Command::Exec(vec!["echo".into(), "$HOME".into()]);
        assert_eq!(argv(&line, &sh), ["/bin/sh", "-c", "echo $HOME"]);
        assert_eq!(
            argv(&line, &bash),
            ["/bin/bash", "-eo", "pipefail", "-c", "echo $HOME"]
        );
        assert_eq!(argv(&exec, &bash), ["echo", "$HOME"]);
    }
}
