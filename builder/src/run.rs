//! The RUN step: its command line (shell, exec and heredoc forms), environment, user and
//! mounts, executed in the sandbox over the stage's layers; its changes become one layer.

use std::path::{Path, PathBuf};

use cairn_layers::image::timestamp;
use cairn_layers::layer::write_layer_reusing;
use cairn_parser::instruction::{Command, Instruction, NetworkMode, Run};
use cairn_parser::mount::{CacheSharing, Mount, MountType};

use crate::build::{Ctx, Event, Outcome, StageState, add_layer, at};
use crate::context_mount::ContextMount;
use crate::error::{Error, Result, io_err};
use crate::meta;
use crate::sandbox::{self, MountSpec, Network, RootSpec, RunSpec, Sandbox, Stdio3, Tail};
use crate::users;

/// The most a secret may hold, in bytes (BuildKit's limit): a secret is a token or a key, and
/// each RUN that mounts one writes it to a file.
pub const SECRET_LIMIT: u64 = 500 * 1024;

/// The build's sandbox, made at its first RUN.
fn sandbox<'a>(cx: &'a Ctx<'_>) -> Result<&'a Sandbox> {
    let made = cx.sandbox.get_or_init(|| {
        let helper = cx.opts.helper.clone().ok_or_else(|| {
            "this build has no sandbox helper, so it cannot run RUN steps".to_owned()
        })?;
        let sb = Sandbox::new(
            helper,
            cx.store,
            cx.opts.snapshotter,
            cx.opts.limits.clone(),
        )
        .map_err(|e| e.to_string())?;
        for w in &sb.warnings {
            (cx.progress)(Event::Warning(w.clone()));
        }
        Ok(sb)
    });
    made.as_ref().map_err(|e| Error::Sandbox(e.clone()))
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

    // The environment: the image's ENV and the stage's ARGs, an ARG declared after an ENV of
    // its name winning (BuildKit's ARG sets the state's environment), in the order BuildKit's
    // state keeps them.
    st.meta.env_index.sync(&st.config.config.env);
    let mut env = crate::envindex::ordered_env(
        &st.config.config.env,
        &st.meta.env_seq,
        st.args.keys(),
        &crate::envindex::Words {
            env: &st.config.config.env,
            index: &st.meta.env_index,
            args: &st.args,
            over: &st.meta.args_over_env,
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
        let Some(v) = opts.build_args.get(lower).or(opts.build_args.get(&upper)) else {
            continue;
        };
        for k in [upper.as_str(), lower] {
            // One declared by ARG is the stage's, already in the environment and the key.
            if !st.args.contains_key(k) {
                proxy_env.push(format!("{k}={v}"));
            }
        }
    }
    if !env.iter().any(|e| e.starts_with("PATH=")) {
        env.push(format!("PATH={}", sandbox::DEFAULT_PATH));
    }
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
    let mut key = crate::cache::KeyHasher::new("RUN", &st.key);
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
    // The history line lists the stage's ARGs as declared, which the environment alone does
    // not fix (order, names without a value); keyed only when there are any.
    let args_prefix = crate::history::run_prefix(&st.meta.arg_decls, &env);
    if !args_prefix.is_empty() {
        key.field("history-args", &args_prefix);
    }
    for (i, m) in run.mounts.iter().enumerate() {
        let m = Mount::parse_with(&m.raw, i, &expand).map_err(&fail)?;
        key.field("mount", serde_json::to_vec(&m).unwrap_or_default());
        if m.kind == MountType::Bind {
            let identity = mount_source_identity(cx, &m, step_id).map_err(|e| match e {
                Error::Instruction { message, .. } => fail(format!("--mount {}: {message}", m.raw)),
                other => other,
            })?;
            key.field("source", identity);
        }
    }
    let (key, summary) = key.finish_with_summary();
    if crate::build::use_cached(cx, st, &key, summary, step_id)? {
        return Ok(Outcome::Cached);
    }
    let sb = sandbox(cx).map_err(|e| fail(e.to_string()))?;

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
    let argv = match &run.command {
        Command::Shell(line) if !run.heredocs.is_empty() => {
            let single = run.heredocs.len() == 1 && cairn_parser::raw::is_heredoc_word(line.trim());
            if single {
                let h = &run.heredocs[0];
                if h.content.starts_with("#!") {
                    // A script with its own interpreter runs as a file, as BuildKit does. The
                    // name is the Dockerfile's: it names the file inside only, never on the
                    // host, where the body is kept under a name of cairn's.
                    if !is_plain_file_name(&h.name) {
                        return Err(fail(format!(
                            "heredoc name {:?} cannot name a script file: use a plain word \
                             (letters, digits, '.', '_' or '-')",
                            h.name
                        )));
                    }
                    let script = base.join("pipes").join("script");
                    std::fs::create_dir_all(base.join("pipes")).map_err(io_err("create", &base))?;
                    std::fs::write(&script, &h.content).map_err(io_err("write", &script))?;
                    set_mode(&script, 0o755)?;
                    let target = format!("/dev/pipes/{}", h.name);
                    mounts.push(MountSpec::Bind {
                        source: script,
                        inside: None,
                        target: target.clone(),
                        readonly: true,
                        scratch: None,
                        create: None,
                    });
                    vec![target]
                } else {
                    meta::argv(&Command::Shell(h.content.clone()), &shell)
                }
            } else {
                // The shell reads the heredocs itself, as they stand in the Dockerfile.
                let mut script = line.clone();
                for h in &run.heredocs {
                    script.push('\n');
                    script.push_str(&h.content);
                    script.push_str(&h.name);
                }
                meta::argv(&Command::Shell(script), &shell)
            }
        }
        c => meta::argv(c, &shell),
    };
    let shown = argv.join(" ");

    // The filesystem.
    let diff_ids = st.config.rootfs.diff_ids.clone();
    let root = sb
        .prepare_root(store, &st.layers, &diff_ids, &base)
        .map_err(|e| match e {
            Error::Sandbox(m) => fail(m),
            Error::SandboxFailed(e) => fail(e.report()),
            other => other,
        })?;
    let read_file = {
        let root = root.clone();
        move |rel: &str| -> String { read_image_file(&root, rel) }
    };
    let user = users::resolve_exec(&st.config.config.user, &read_file)
        .map_err(|e| fail(format!("USER {}: {}", st.config.config.user, e.0)))?;
    // HOME as runc sets it for BuildKit's steps: the user's passwd entry, else `/`, unless
    // the environment has one. The step's key needs no field for it: it follows from the
    // user (keyed) and the image's files (the chain).
    env.extend(proxy_env);
    if !env.iter().any(|e| e.starts_with("HOME=")) {
        let home = user.home.clone().filter(|h| !h.is_empty());
        env.push(format!("HOME={}", home.as_deref().unwrap_or("/")));
    }

    // BuildKit's name for every step's sandbox: packages that record the hostname in their
    // configs write the same thing under both builders.
    let hostname = "buildkitsandbox";
    let etc_files = sandbox::etc_files(&base, hostname, network)?;

    // RUN --mount.
    let mut locks = Vec::new();
    for (i, m) in run.mounts.iter().enumerate() {
        let m = Mount::parse_with(&m.raw, i, &expand).map_err(&fail)?;
        mount_spec(
            cx,
            &st.config.config.working_dir,
            &m,
            &base,
            &mut mounts,
            &mut env,
            &mut locks,
        )
        .map_err(|e| match e {
            Error::Instruction { message, .. } => fail(format!("--mount {}: {message}", m.raw)),
            other => other,
        })?;
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
        diff: true,
        clamp_mtime: epoch,
        tty: false,
        console: false,
        cgroup_procs: Vec::new(),
        userns: sb.mapping.for_pid1(),
        keep_upper,
        cleanup: vec![base.clone()],
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
    let previous = cx.cache.last_layer(&st.position);
    let mut sink = |r: &mut dyn std::io::Read| -> Result<Option<_>> {
        let mut first = [0u8; 1];
        let n = r
            .read(&mut first)
            .map_err(io_err("read the step's changes", &base))?;
        if n == 0 {
            return Ok(None);
        }
        let mut all = std::io::Read::chain(&first[..n], r);
        let layer = write_layer_reusing(store, opts.compression, previous.as_ref(), |w| {
            std::io::copy(&mut all, w)
                .map(drop)
                .map_err(|e| cairn_layers::Error::Stream {
                    action: "copy the step's changes into the store".into(),
                    source: e,
                })
        })?;
        Ok(Some(layer))
    };
    let (exit, layer) = sb
        .run(spec, Stdio3::Capture, &on_line, Some(&mut sink))
        .map_err(|e| match e {
            Error::Sandbox(m) => fail(format!("process \"{shown}\" could not run: {m}")),
            Error::SandboxFailed(e) => {
                fail(format!("process \"{shown}\" could not run: {}", e.report()))
            }
            other => other,
        })?;
    drop(locks);
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
            recorded = Some(crate::build::layer_record(&layer));
            cx.cache
                .put_last_layer(&st.position, &layer.descriptor.digest)?;
            if run_dir.keep.is_dir() {
                // The upper directory is this layer unpacked for overlay: the next step's
                // lowerdir, with no second pass over the blob. (Dropping run_dir removes it
                // if the store already had one.)
                let key = sb.mapping.store_key();
                store.adopt_unpacked(&layer.diff_id, &key, &run_dir.keep)?;
            }
            add_layer(st, layer, None, ins, created)?;
            if let Some(h) = st.config.history.last_mut() {
                h.created_by = Some(created_by);
            }
        }
        // A step that changed nothing still adds a layer, an empty one, as BuildKit's
        // does (its history test has `RUN ls` as a layer): the image then has one layer
        // per RUN, which tools that count them expect. (The diff of an unchanged tree is
        // nothing, or a bare end-of-archive.)
        _ => {
            let layer = cairn_layers::layer::write_layer(store, opts.compression, |w| {
                crate::build::dirs_tar(w, &[])
            })?;
            recorded = Some(crate::build::layer_record(&layer));
            add_layer(st, layer, None, ins, created)?;
            if let Some(h) = st.config.history.last_mut() {
                h.created_by = Some(created_by);
            }
        }
    }
    crate::build::record(cx, st, key, recorded, None)?;
    Ok(Outcome::Ran)
}

/// What a bind mount's source is, for the cache key: a stage by its key, an image by its
/// manifest, the context or a named context by the content below the source.
fn mount_source_identity(cx: &Ctx<'_>, m: &Mount, step_id: usize) -> Result<String> {
    let rel = m.source.clone().unwrap_or_default();
    let root = match m.from.as_deref() {
        None => cx.context.root().to_path_buf(),
        Some(from) => {
            if let Some(r) = cx.stage_named(from).and_then(|i| cx.results.get(&i)) {
                return Ok(format!("stage:{}:{rel}", r.key.hex()));
            }
            match cx.opts.contexts.get(from) {
                Some(crate::build::NamedContext::Dir(d)) => d.clone(),
                _ => {
                    let manifest = cx
                        .image(from, step_id, || {
                            format!("from={from}: no stage or image of that name")
                        })
                        .map_err(|message| Error::Instruction {
                            instruction: "RUN".into(),
                            message,
                        })?;
                    return Ok(format!("image:{}:{rel}", manifest.digest));
                }
            }
        }
    };
    // The context as the step sees it: what .dockerignore keeps (the mount is checked for a
    // clear error when it is set up).
    if m.from.is_none() && !cx.context.matcher().is_empty() {
        let plan = ContextMount::plan(cx.context, &rel)?.map_err(|message| Error::Instruction {
            instruction: "RUN".into(),
            message,
        })?;
        if plan.filtered() {
            let mut key = crate::cache::KeyHasher::new("TREE", &crate::cache::Key::root());
            for (sub, path, meta, withheld) in plan.keyed_entries(cx.context) {
                if withheld {
                    use std::os::unix::fs::PermissionsExt;
                    // Empty as the step sees it, whatever the file holds.
                    key.field("path", sub.as_bytes())
                        .field("withheld", (meta.permissions().mode() & 0o7777).to_string());
                    continue;
                }
                hash_tree_entry(cx, &mut key, sub.as_bytes(), &path, &meta)?;
            }
            return Ok(key.finish().hex());
        }
    }
    let source = resolve_in(&root, &rel)?;
    let mut key = crate::cache::KeyHasher::new("TREE", &crate::cache::Key::root());
    // Never through a link at the top: the source may have been swapped for one since it was
    // resolved, and the walk would then read the host.
    for e in walkdir::WalkDir::new(&source)
        .follow_root_links(false)
        .sort_by_file_name()
    {
        let e = e.map_err(|e| Error::Instruction {
            instruction: "RUN".into(),
            message: format!("reading {}: {e}", source.display()),
        })?;
        let meta = e
            .path()
            .symlink_metadata()
            .map_err(io_err("stat", e.path()))?;
        let rel = e.path().strip_prefix(&source).unwrap_or(e.path());
        hash_tree_entry(
            cx,
            &mut key,
            rel.as_os_str().as_encoded_bytes(),
            e.path(),
            &meta,
        )?;
    }
    Ok(key.finish().hex())
}

/// One entry of a bind mount's source in its cache key: path, mode and content.
fn hash_tree_entry(
    cx: &Ctx<'_>,
    key: &mut crate::cache::KeyHasher,
    rel: &[u8],
    path: &Path,
    meta: &std::fs::Metadata,
) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    key.field("path", rel)
        .field("mode", (meta.permissions().mode() & 0o7777).to_string());
    if meta.is_file() {
        key.field("file", cx.cache.file_digest(path, meta)?);
    } else if meta.file_type().is_symlink() {
        let target = std::fs::read_link(path).map_err(io_err("read link", path))?;
        key.field("link", target.as_os_str().as_encoded_bytes());
    } else if meta.is_dir() {
        key.field("type", "dir");
    }
    Ok(())
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

fn set_mode(p: &Path, mode: u32) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode)).map_err(io_err("chmod", p))
}

/// A file of the image below a step (etc/passwd), read through the layers top first: overlay
/// lowers hold whiteouts as 0/0 character devices.
pub(crate) fn read_image_file(root: &RootSpec, rel: &str) -> String {
    root.read_image_file(rel)
}

/// One `--mount` as the sandbox's mount, its environment and its locks.
fn mount_spec(
    cx: &Ctx<'_>,
    workdir: &str,
    m: &Mount,
    base: &Path,
    out: &mut Vec<MountSpec>,
    env: &mut Vec<String>,
    locks: &mut Vec<std::fs::File>,
) -> Result<()> {
    let bad = |msg: String| Error::Instruction {
        instruction: "RUN".into(),
        message: msg,
    };
    let absolute = |t: &str| {
        if t.starts_with('/') {
            meta::clean_abs(t)
        } else {
            meta::clean_abs(&format!(
                "{}/{t}",
                if workdir.is_empty() { "/" } else { &workdir }
            ))
        }
    };
    match m.kind {
        MountType::Tmpfs => {
            let target = m
                .target
                .as_deref()
                .ok_or_else(|| bad("tmpfs needs a target".into()))?;
            out.push(MountSpec::Tmpfs {
                target: absolute(target),
                size: m.size,
            });
        }
        MountType::Secret => {
            let id =
                m.id.clone()
                    .or_else(|| {
                        m.target
                            .as_deref()
                            .and_then(|t| t.rsplit('/').next())
                            .map(str::to_owned)
                    })
                    .ok_or_else(|| bad("a secret mount needs an id".into()))?;
            let Some(value) = cx.opts.secrets.get(&id) else {
                if m.required {
                    return Err(bad(format!(
                        "secret {id} is required but was not given (cairn build --secret id={id},src=FILE)"
                    )));
                }
                return Ok(());
            };
            if value.len() as u64 > SECRET_LIMIT {
                return Err(bad(format!(
                    "secret {id} is {} bytes, more than the {SECRET_LIMIT} bytes a secret may have",
                    value.len()
                )));
            }
            if let Some(var) = &m.env {
                env.push(format!("{var}={}", String::from_utf8_lossy(value)));
                if m.target.is_none() {
                    return Ok(());
                }
            }
            let file = base.join(format!("secret-{}", out.len()));
            std::fs::write(&file, value).map_err(io_err("write", &file))?;
            set_mode(&file, m.mode.unwrap_or(0o400))?;
            let target = m
                .target
                .as_deref()
                .map(absolute)
                .unwrap_or_else(|| format!("/run/secrets/{id}"));
            out.push(MountSpec::Bind {
                source: file,
                inside: None,
                target,
                readonly: true,
                scratch: None,
                create: None,
            });
        }
        MountType::Cache => {
            let target = m
                .target
                .as_deref()
                .ok_or_else(|| bad("cache needs a target".into()))?;
            let target = absolute(target);
            let id = m.id.clone().unwrap_or_else(|| target.clone());
            // `from` seeds a new cache with a stage's or image's files; like BuildKit, a cache
            // over another base is another cache.
            let seed = match m.from.as_deref() {
                None => None,
                Some(from) => {
                    let (root, identity) = from_root(cx, from, base)?;
                    let rel = m.source.clone().unwrap_or_default();
                    let source = resolve_in(&root, &rel)?;
                    if !source.is_dir() {
                        return Err(bad(format!(
                            "cache source {rel:?} in {from} is not a directory"
                        )));
                    }
                    Some((source, format!("{identity}\0{rel}")))
                }
            };
            use sha2::Digest as _;
            let mut h = sha2::Sha256::new();
            h.update(id.as_bytes());
            if let Some((_, identity)) = &seed {
                h.update(b"\0from\0");
                h.update(identity.as_bytes());
            }
            // BuildKit's base for a cache with uid, gid or mode is `mkdir /cache` with them,
            // and the cache is keyed by its base: each owner and mode is a cache of its own.
            let owner = (
                m.uid.unwrap_or(0),
                m.gid.unwrap_or(0),
                m.mode.unwrap_or(0o755),
            );
            if m.uid.is_some() || m.gid.is_some() || m.mode.is_some() {
                h.update(format!("\0owner\0{}:{}:{:o}", owner.0, owner.1, owner.2).as_bytes());
            }
            let key = hex::encode(&h.finalize()[..16]);
            let dir = cx.store.root().join("cache");
            std::fs::create_dir_all(&dir).map_err(io_err("create", &dir))?;
            let lock = |name: &str| -> Result<std::fs::File> {
                let path = dir.join(format!("{name}.lock"));
                std::fs::OpenOptions::new()
                    .create(true)
                    .truncate(false)
                    .write(true)
                    .open(&path)
                    .map_err(io_err("open", &path))
            };
            let name = match m.sharing.unwrap_or(CacheSharing::Shared) {
                // Any number of steps at once, in this build or another.
                CacheSharing::Shared => key,
                // One step at a time: the others wait.
                CacheSharing::Locked => {
                    let f = lock(&key)?;
                    f.lock().map_err(io_err("lock", &dir.join(&key)))?;
                    locks.push(f);
                    key
                }
                // A step never shares its cache with one running now: the first instance
                // nobody holds, a new one when all are held.
                CacheSharing::Private => {
                    let mut n = 0u32;
                    loop {
                        let name = if n == 0 {
                            key.clone()
                        } else {
                            format!("{key}.{n}")
                        };
                        let f = lock(&name)?;
                        match f.try_lock() {
                            Ok(()) => {
                                locks.push(f);
                                break name;
                            }
                            Err(std::fs::TryLockError::WouldBlock) => n += 1,
                            Err(std::fs::TryLockError::Error(e)) => {
                                return Err(io_err("lock", &dir.join(&name))(e));
                            }
                        }
                    }
                }
            };
            let source = dir.join(&name);
            if let Some((seed, _)) = &seed
                && !source.exists()
            {
                seed_cache(seed, &cx.store.tmp_dir(), &source)?;
            }
            out.push(MountSpec::Bind {
                source,
                inside: None,
                target,
                readonly: m.readonly,
                scratch: None,
                create: Some(owner),
            });
        }
        MountType::Bind => {
            let target = m
                .target
                .as_deref()
                .ok_or_else(|| bad("bind needs a target".into()))?;
            let source_rel = m.source.clone().unwrap_or_default();
            let (root, inside) = match m.from.as_deref() {
                // The context as BuildKit sends it: without what .dockerignore leaves out.
                None => ContextMount::plan(cx.context, &source_rel)?
                    .map_err(bad)?
                    .mount_source(cx.context, &base.join(format!("context-{}", out.len())))?,
                Some(from) => {
                    let root = from_root(cx, from, base)?.0;
                    // Checked here for a clear error; the helper resolves it again below the
                    // root and mounts what it opened, since the tree may change in between.
                    let source = resolve_in(&root, &source_rel)?;
                    if !source.exists() {
                        return Err(bad(format!("source {source_rel:?} does not exist")));
                    }
                    (root, meta::clean_abs(&format!("/{source_rel}")))
                }
            };
            let scratch = (!m.readonly).then(|| base.join(format!("bind-{}", out.len())));
            out.push(MountSpec::Bind {
                source: root,
                inside: Some(inside),
                target: absolute(target),
                readonly: true,
                scratch,
                create: None,
            });
        }
        MountType::Ssh => {
            return Err(bad("type=ssh is not supported by cairn yet".into()));
        }
    }
    Ok(())
}

/// The filesystem `from=` names (a stage of this build, a named context or an image in the
/// store) and a text that identifies its contents.
fn from_root(cx: &Ctx<'_>, from: &str, base: &Path) -> Result<(PathBuf, String)> {
    if let Some(i) = cx.stage_named(from)
        && let Some(r) = cx.results.get(&i)
    {
        // A stage is known by its place in the Dockerfile: its layers differ from build to
        // build (file times), and a cache is seeded only when it is new anyway.
        let identity = format!("stage:{i}");
        if r.pending.is_empty() && r.partial.is_none() {
            return Ok((r.rootfs.clone(), identity));
        }
        // A stage whose last layers are not applied yet: its files, complete, in a copy.
        let dir = base.join(format!("from-stage-{i}"));
        if !dir.exists() {
            crate::build::unpack_layers(cx.store, &r.layers, &dir)?;
        }
        return Ok((dir, identity));
    }
    if let Some(crate::build::NamedContext::Dir(d)) = cx.opts.contexts.get(from) {
        return Ok((d.clone(), format!("dir:{}", d.display())));
    }
    // The step's key has named the image already (pulling it if need be), so this finds it
    // without a word to the step's log.
    let manifest = cx
        .image(from, 0, || {
            format!("from={from}: no stage or image of that name")
        })
        .map_err(|message| Error::Instruction {
            instruction: "RUN".into(),
            message,
        })?;
    let img = cx.store.image(&manifest)?;
    let dir = base.join(format!("from-{}", img.id().hex()));
    if !dir.exists() {
        crate::build::unpack_layers(cx.store, &img.manifest.layers, &dir)?;
    }
    Ok((dir, format!("image:{}", img.id())))
}

/// A new cache directory holding a copy of `seed`, made in scratch space and renamed into place
/// so a half-made copy is never used.
fn seed_cache(seed: &Path, tmp: &Path, dest: &Path) -> Result<()> {
    // In the store's scratch space under this process's id, so a copy cut short by a crash
    // is removed by the next build.
    let copy = tmp.join(format!(
        "run-{}-seed-{}",
        std::process::id(),
        dest.file_name().unwrap_or_default().to_string_lossy()
    ));
    let status = std::process::Command::new("cp")
        .arg("-a")
        .arg("--")
        .arg(seed)
        .arg(&copy)
        .status()
        .map_err(io_err("run cp -a for", seed))?;
    if !status.success() {
        let _ = std::fs::remove_dir_all(&copy);
        return Err(Error::Instruction {
            instruction: "RUN".into(),
            message: format!(
                "copying {} to seed a cache failed ({status})",
                seed.display()
            ),
        });
    }
    let r = std::fs::rename(&copy, dest);
    let _ = std::fs::remove_dir_all(&copy);
    match r {
        // Another step seeded it first: theirs is as good.
        Err(e) if !dest.exists() => Err(io_err("rename into", dest)(e)),
        _ => Ok(()),
    }
}

/// `rel` inside `root`, never outside it (`..` stops at the root; symlinks are not followed
/// out because the path is only used as a bind source below `root`).
fn resolve_in(root: &Path, rel: &str) -> Result<PathBuf> {
    let clean = meta::clean_abs(&format!("/{rel}"));
    let p = root.join(clean.trim_start_matches('/'));
    let real = std::fs::canonicalize(&p).unwrap_or_else(|_| p.clone());
    let real_root = std::fs::canonicalize(root).unwrap_or_else(|_| root.to_path_buf());
    if !real.starts_with(&real_root) {
        return Err(Error::Instruction {
            instruction: "RUN".into(),
            message: format!("source {rel:?} leads outside its root"),
        });
    }
    Ok(real)
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
