//! The RUN step: its command line (shell, exec and heredoc forms), environment, user and
//! mounts, executed in the sandbox over the stage's layers; its changes become one layer.

use std::path::PathBuf;

use cairn_layers::image::timestamp;
use cairn_layers::layer::write_layer_reusing;
use cairn_parser::instruction::{Instruction, NetworkMode, Run};
use cairn_parser::mount::{Mount, MountType};

use super::ctx::{Ctx, Outcome, add_layer, at, at_caused, at_with, at_with_context, timed, timing};
use super::mount::{Held, mount_source_identity, mount_spec, note_cache_mounts, set_mode};
use crate::error::{Error, Result, io_err};
use crate::meta;
use crate::progress::{Event, Phase};
use crate::sandbox::{self, MountSpec, Network, RunSpec, Sandbox, Stdio3, Tail};
use crate::stage::StageState;
use crate::users;

mod plan;

/// The build's sandbox, made at its first RUN.
fn sandbox<'a>(cx: &'a Ctx<'_>) -> Result<&'a Sandbox> {
    let made = cx.sandbox.get_or_init(|| {
        let helper = cx.opts.helper.clone().ok_or_else(|| {
            Error::Sandbox("this build has no sandbox helper, so it cannot run RUN steps".into())
        })?;
        let sb = Sandbox::new(
            helper,
            cx.store,
            cx.opts.snapshotter,
            cx.opts.limits.clone(),
            cx.opts.isolation,
        )?;
        (cx.progress)(Event::Note(sb.isolation.line()));
        for w in &sb.warnings {
            (cx.progress)(Event::Warning(w.clone()));
        }
        Ok(sb)
    });
    made.as_ref().map_err(|e| match &**e {
        Error::Sandbox(m) => Error::Sandbox(m.clone()),
        _ => Error::Shared(e.clone()),
    })
}

/// A run directory in the store's scratch space: the upper and work directories (or the
/// copy snapshotter's trees), the step's /etc files, secrets and heredoc scripts.
struct RunDir {
    path: PathBuf,
    /// Where the helper leaves the overlay upper directory for the store to adopt.
    keep: PathBuf,
    sandbox: Sandbox,
}

impl Drop for RunDir {
    fn drop(&mut self) {
        // The helper already removed what the container wrote; this is the rest, or everything
        // after a failure before the helper ran, and an upper directory the store did not take.
        for p in [&self.path, &self.keep] {
            if self.sandbox.mapping.kind.cairn_is_root() {
                if p.exists() {
                    sandbox::remove_in_background(p.clone());
                }
                continue;
            }
            if std::fs::remove_dir_all(p).is_err() && p.exists() {
                let _ = self.sandbox.remove(std::slice::from_ref(p));
            }
        }
    }
}

pub(crate) fn run_step(
    cx: &Ctx<'_>,
    st: &mut StageState,
    ins: &Instruction,
    run: &Run,
    step_id: usize,
) -> Result<Outcome> {
    let Ctx {
        store,
        opts,
        lexer,
        epoch,
        ..
    } = *cx;
    let fail = |m: String| at(opts, ins.span, "RUN", m);

    // The environment: the image's ENV, the stage's ARGs and the proxy build args.
    st.meta.env_index.sync(&st.config.config.env);
    let (mut env, proxy_env) = plan::process_env(&st.config, &st.args, &st.meta, &opts.build_args);
    let words_env = meta::words_env(&st.config, &st.args, &st.meta);
    let expand = |w: &str| lexer.process_word(w, &words_env).map_err(|e| e.to_string());

    // The network: a namespace of the step's own unless the Dockerfile says otherwise; the
    // host's only with the entitlement, as BuildKit rules (a Dockerfile is not the builder's
    // to trust with the host's local services).
    let network = match run.network {
        Some(NetworkMode::None) => Network::None,
        Some(NetworkMode::Host) => Network::Host,
        Some(NetworkMode::Default) | None => opts.network,
    };
    if network == Network::Host && !opts.allow_network_host {
        return Err(fail(
            "--network=host is not allowed: it needs the network.host entitlement, granted \
             with `cairn build --allow network.host`"
                .into(),
        ));
    }

    // The cache key: the command as written with its heredocs, everything the process sees
    // (environment, so the stage's ARGs; working directory; user; shell; network) and its
    // mounts as expanded, with the content behind a bind mount of the context.
    let mut key = crate::cache::KeyHasher::new("RUN", st.key());
    key.field("instruction", &ins.original);
    for h in &run.heredocs {
        key.field("heredoc", &h.name).field("body", &h.content);
    }
    for e in &env {
        key.field("env", e);
    }
    key.field("workdir", &st.config.config.working_dir)
        .field("user", &st.config.config.user)
        .field("shell", meta::shell_of(&st.config).join("\0"))
        .field("network", format!("{network:?}"));
    // `--add-host` lines are in the step's /etc/hosts: what it resolves may change its result.
    for (host, ip) in &opts.add_hosts {
        key.field("add-host", format!("{host}={ip}"));
    }
    // The step's limits are BuildKit's ExecOp's, so its key's too.
    for u in &opts.ulimits {
        key.field("ulimit", format!("{}={}:{}", u.name(), u.soft, u.hard));
    }
    if let Some(size) = opts.shm_size {
        key.field("shm-size", size.to_string());
    }
    // The history line lists the stage's ARGs as declared, which the environment alone does
    // not fix (order, names without a value); keyed only when there are any.
    let args_prefix = crate::history::run_prefix(&st.meta.arg_decls, &env);
    if !args_prefix.is_empty() {
        key.field("history-args", &args_prefix);
    }
    let parsed: Vec<Mount> = run
        .mounts
        .iter()
        .enumerate()
        .map(|(i, m)| Mount::parse_with(&m.raw, i, &expand))
        .collect::<std::result::Result<_, _>>()
        .map_err(&fail)?;
    // A mount's own failure, located at the step and naming the mount.
    let mount_err = |m: &Mount, e: Error| match e {
        Error::Mount(e) => at_with_context(opts, ins.span, "RUN", format!("--mount {}", m.raw), *e),
        other => other,
    };
    for m in &parsed {
        key.field("mount", serde_json::to_vec(m).unwrap_or_default());
        if m.kind == MountType::Bind {
            let identity = mount_source_identity(cx, m, step_id).map_err(|e| mount_err(m, e))?;
            key.field("source", identity);
        }
    }
    let (key, summary) = key.finish_with_summary();
    if st.use_cached(cx.cache, cx.store, cx.progress, &key, summary, step_id)? {
        note_cache_mounts(cx, &st.config.config.working_dir, &parsed);
        return Ok(Outcome::Cached);
    }
    // Another architecture's binaries run through the kernel's binfmt_misc: said before a
    // sandbox is made, and naming what to install, rather than as an exec format error.
    let binfmt = std::path::Path::new(crate::sandbox::emulation::BINFMT_DIR);
    crate::sandbox::emulation::check(&st.platform, binfmt)
        .map_err(|e| at_with(opts, ins.span, "RUN", e))?;
    let sb = sandbox(cx).map_err(|e| match e {
        Error::Sandbox(m) => fail(format!("sandbox: {m}")),
        other => at_with_context(opts, ins.span, "RUN", "sandbox", other),
    })?;

    let base = store.temp_path("run");
    std::fs::create_dir(&base).map_err(io_err("create", &base))?;
    let run_dir = RunDir {
        path: base.clone(),
        keep: base.with_extension("keep"),
        sandbox: sb.clone(),
    };

    // The command, heredocs included.
    let shell = meta::shell_of(&st.config);
    let mut mounts = Vec::new();
    let plan::Argv { argv, script } = plan::command_argv(run, &shell).map_err(&fail)?;
    if let Some(plan::Script { target, body }) = script {
        // The body is kept on the host under a name of cairn's, never the Dockerfile's.
        let script = base.join("pipes").join("script");
        std::fs::create_dir_all(base.join("pipes")).map_err(io_err("create", &base))?;
        std::fs::write(&script, &body).map_err(io_err("write", &script))?;
        set_mode(&script, 0o755)?;
        mounts.push(MountSpec::Bind {
            source: script,
            inside: None,
            target,
            readonly: true,
            scratch: None,
            create: None,
            owner: None,
        });
    }
    let shown = argv.join(" ");

    // The filesystem.
    let diff_ids = st.config.rootfs.diff_ids.clone();
    let root = timed(cx, step_id, Phase::Unpack, || {
        sb.prepare_root(store, st.layers(), &diff_ids, &base)
    })
    .map_err(|e| match e {
        Error::Sandbox(m) => fail(m),
        // The first line has the whole chain, as a step's error always showed it.
        Error::SandboxFailed(e) => at_caused(opts, ins.span, "RUN", e.report(), e),
        other => other,
    })?;
    let read_file = |rel: &str| root.read_image_file(rel);
    let user = users::resolve_exec(&st.config.config.user, &read_file).map_err(|e| {
        let user = format!("USER {}", st.config.config.user);
        at_with_context(opts, ins.span, "RUN", user, e)
    })?;
    env.extend(proxy_env);
    env.extend(users::home_for(&env, user.home.as_deref()));

    // BuildKit's name for every step's sandbox: packages that record the hostname in their
    // configs write the same thing under both builders.
    let hostname = "buildkitsandbox";
    let network = sb.network_for(network).map_err(&fail)?;
    let etc_files = sandbox::etc_files(&base, hostname, network, &opts.add_hosts)?;

    // RUN --mount.
    let mut held = Held::default();
    for m in &parsed {
        mount_spec(
            cx,
            &st.config.config.working_dir,
            m,
            &base,
            &mut mounts,
            &mut env,
            &mut held,
        )
        .map_err(|e| mount_err(m, e))?;
    }

    let keep_upper = root.keeps_diff().then(|| run_dir.keep.clone());
    let spec = RunSpec {
        root,
        argv,
        env,
        cwd: if st.config.config.working_dir.is_empty() {
            "/".into()
        } else {
            st.config.config.working_dir.clone()
        },
        uid: user.uid,
        gid: user.gid,
        groups: user.groups,
        hostname: hostname.into(),
        network,
        etc_files,
        mounts,
        ulimits: opts.ulimits.clone(),
        shm_size: opts.shm_size,
        diff: true,
        clamp_mtime: epoch,
        tty: false,
        console: false,
        cgroup_procs: Vec::new(),
        userns: sb.mapping.for_pid1(),
        keep_upper,
        cleanup: vec![base.clone()],
        // Root's builds remove the run directory themselves, in the background (`RunDir`).
        cleanup_on_failure_only: sb.mapping.kind.cairn_is_root(),
        suppress_sync: true,
        isolation: sb.isolation.mode,
    };
    let tail = Tail::default();
    let progress = cx.progress;
    let on_line = |line: &str| {
        tail.push(line);
        progress(Event::Log {
            id: step_id,
            line: line.to_owned(),
        });
    };
    // Unchanged stretches of what this step wrote last time are copied, not deflated again.
    let previous = cx.cache.last_layer(st.position());
    let layer_seconds = std::cell::Cell::new(0.0);
    let mut sink = |r: &mut dyn std::io::Read| -> Result<Option<_>> {
        let started = std::time::Instant::now();
        let _timed = Elapsed(&layer_seconds, started);
        let mut first = [0u8; 1];
        let n = r
            .read(&mut first)
            .map_err(io_err("read the step's changes", &base))?;
        if n == 0 {
            return Ok(None);
        }
        let mut all = std::io::Read::chain(&first[..n], r);
        let layer = write_layer_reusing(store, opts.layer_compression(), previous.as_ref(), |w| {
            // In 256 KiB pieces (io::copy takes a BufReader's own buffer): at its default
            // 8 KiB every piece of a large layer is a pipe read, a hash update and a write.
            let mut all = std::io::BufReader::with_capacity(256 * 1024, &mut all);
            std::io::copy(&mut all, w)
                .map(drop)
                .map_err(|e| cairn_layers::Error::Stream {
                    action: "copy the step's changes into the store".into(),
                    source: e,
                })
        })?;
        Ok(Some(layer))
    };
    let started = std::time::Instant::now();
    let ran = sb.run(spec, Stdio3::Capture, &on_line, Some(&mut sink));
    // The sink runs inside `run`, after the process: the rest is the process's.
    let layer_seconds = layer_seconds.get();
    let process_seconds = (started.elapsed().as_secs_f64() - layer_seconds).max(0.0);
    timing(cx, step_id, Phase::Process, process_seconds);
    timing(cx, step_id, Phase::Layer, layer_seconds);
    let (exit, layer) = ran.map_err(|e| match e {
        Error::Sandbox(m) => fail(format!("process \"{shown}\" could not run: {m}")),
        Error::SandboxFailed(e) => {
            let message = format!("process \"{shown}\" could not run: {}", e.report());
            at_caused(opts, ins.span, "RUN", message, e)
        }
        other => other,
    })?;
    drop(held);
    if !exit.success() {
        let mut msg = format!(
            "process \"{shown}\" did not complete successfully: exit code: {}",
            exit.status()
        );
        if exit.oom_killed {
            msg.push_str(" (killed by the kernel for going over the memory limit)");
        }
        let lines = tail.lines();
        if !lines.is_empty() {
            msg.push_str("\n  last output:");
            for l in lines {
                msg.push_str("\n  | ");
                msg.push_str(&l);
            }
        }
        return Err(fail(msg));
    }
    let created = timestamp(epoch);
    let created_by = history_line(&args_prefix, &shown);
    let recorded;
    match layer {
        Some(Some(layer)) if layer.uncompressed_size > 1024 => {
            recorded = Some(super::ctx::layer_record(&layer));
            cx.cache
                .put_last_layer(st.position(), &layer.descriptor.digest)?;
            if run_dir.keep.is_dir() {
                // The upper directory is this layer unpacked for overlay: the next step's
                // lowerdir, with no second pass over the blob. (Dropping run_dir removes it
                // if the store already had one.)
                let key = sb.mapping.store_key();
                timed(cx, step_id, Phase::Adopt, || {
                    store.adopt_unpacked(&layer.diff_id, &key, &run_dir.keep)
                })?;
            }
            add_layer(cx, step_id, st, layer, None, created, created_by);
        }
        // A step that changed nothing still adds a layer, an empty one, as BuildKit's
        // does (its history test has `RUN ls` as a layer): the image then has one layer
        // per RUN, which tools that count them expect. (The diff of an unchanged tree is
        // nothing, or a bare end-of-archive.)
        _ => {
            let layer = cairn_layers::layer::write_layer(store, opts.layer_compression(), |w| {
                super::workdir::dirs_tar(w, &[])
            })?;
            recorded = Some(super::ctx::layer_record(&layer));
            add_layer(cx, step_id, st, layer, None, created, created_by);
        }
    }
    st.record(cx.cache, key, recorded, None)?;
    Ok(Outcome::Ran)
}

/// Adds the time since its start to a total when dropped: the sink's time counts whether it
/// returns early, fails or finishes.
struct Elapsed<'a>(&'a std::cell::Cell<f64>, std::time::Instant);

impl Drop for Elapsed<'_> {
    fn drop(&mut self) {
        self.0.set(self.0.get() + self.1.elapsed().as_secs_f64());
    }
}

/// BuildKit's history line: `RUN |N K=V ... CMD # buildkit`, naming the stage's build args.
/// BuildKit's `RUN |N k=v ... argv # buildkit` (see [`crate::history::run_prefix`]).
fn history_line(prefix: &str, shown: &str) -> String {
    if prefix.is_empty() {
        format!("RUN {shown} # buildkit")
    } else {
        format!("RUN {prefix} {shown} # buildkit")
    }
}
