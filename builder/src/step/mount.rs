//! RUN --mount: each mount as the sandbox mounts it (bind, cache, tmpfs, secret), and what a
//! bind mount's source is for the step's cache key.

use std::path::{Path, PathBuf};

use cairn_layers::image::Descriptor;
use cairn_parser::mount::{CacheSharing, Mount, MountType};

use super::ctx::Ctx;
use super::source::{Named, image_root, stage_root};
use crate::context_mount::ContextMount;
pub use crate::error::MountError;
use crate::error::{Error, Result, io_err};
use crate::meta;
use crate::options::NamedContext;
use crate::sandbox::MountSpec;
use crate::stage::StageResult;

/// The most a secret may hold, in bytes (BuildKit's limit): a secret is a token or a key, and
/// each RUN that mounts one writes it to a file.
pub const SECRET_LIMIT: u64 = 500 * 1024;

/// What a bind mount's source is, for the cache key: a stage by its key, an image by its
/// manifest, the context or a named context by the content below the source.
pub(crate) fn mount_source_identity(cx: &Ctx<'_>, m: &Mount, step_id: usize) -> Result<String> {
    let rel = m.source.clone().unwrap_or_default();
    let root = match m.from.as_deref() {
        None => cx.context.root().to_path_buf(),
        Some(from) => match mount_from(cx, from) {
            MountFrom::Stage(_, r) => return Ok(format!("stage:{}:{rel}", r.key.hex())),
            MountFrom::Dir(d) => d,
            MountFrom::Image => {
                let manifest = mount_image(cx, from, step_id)?;
                return Ok(format!("image:{}:{rel}", manifest.digest));
            }
        },
    };
    // The context as the step sees it: what .dockerignore keeps (the mount is checked for a
    // clear error when it is set up).
    if m.from.is_none() && !cx.context.matcher().is_empty() {
        let plan = ContextMount::plan(cx.context, &rel)?.map_err(MountError::Rule)?;
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
        let e = e.map_err(|e| MountError::Walk {
            path: source.clone(),
            source: e,
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
pub(crate) fn hash_tree_entry(
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

pub(crate) fn set_mode(p: &Path, mode: u32) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode)).map_err(io_err("chmod", p))
}

/// What a step's mounts hold while it runs: cache locks, ssh agent relays.
#[derive(Debug, Default)]
pub(crate) struct Held {
    locks: Vec<std::fs::File>,
    agents: Vec<crate::ssh_agent::AgentProxy>,
}

/// One `--mount` as the sandbox's mount, its environment and what it holds.
pub(crate) fn mount_spec(
    cx: &Ctx<'_>,
    workdir: &str,
    m: &Mount,
    base: &Path,
    out: &mut Vec<MountSpec>,
    env: &mut Vec<String>,
    held: &mut Held,
) -> Result<()> {
    let bad = |msg: String| Error::from(MountError::Rule(msg));
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
                owner: None,
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
            let (key, owner) = cache_key(m, &id, seed.as_ref().map(|(_, i)| i.as_str()));
            cx.cache.mount_used(&key, &id);
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
            // Under chroot the cache directory is moved into the step's root for the step:
            // a second step using it at the same time would find it gone, so it waits.
            let chroot = cx
                .sandbox
                .get()
                .and_then(|sb| sb.as_ref().ok())
                .is_some_and(|sb| sb.isolation.mode == crate::sandbox::IsolationMode::Chroot);
            let sharing = match m.sharing.unwrap_or(CacheSharing::Shared) {
                CacheSharing::Shared if chroot => CacheSharing::Locked,
                other => other,
            };
            let name = match sharing {
                // Any number of steps at once, in this build or another.
                CacheSharing::Shared => key.clone(),
                // One step at a time: the others wait.
                CacheSharing::Locked => {
                    let f = lock(&key)?;
                    f.lock().map_err(io_err("lock", &dir.join(&key)))?;
                    held.locks.push(f);
                    key.clone()
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
                                held.locks.push(f);
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
            // A cache `--cache-from` brought wins over a seed: it was the seed, and then some.
            if !source.exists()
                && !restore(cx, &key, &id, &source, owner)?
                && let Some((seed, _)) = &seed
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
                owner: None,
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
                owner: None,
            });
        }
        MountType::Ssh => {
            let id = m.id.clone().unwrap_or_else(|| "default".into());
            let Some(upstream) = cx.opts.ssh.get(&id) else {
                if m.required {
                    return Err(bad(format!(
                        "ssh agent {id} is required but was not given (cairn build --ssh {id})"
                    )));
                }
                // As BuildKit: an optional agent that is not there is no mount.
                return Ok(());
            };
            // The step gets a relay of cairn's, never the agent's own socket: it answers only
            // listing and signing, and has the mount's owner and mode.
            let socket = base.join(format!("ssh-{}.sock", out.len()));
            let agent = crate::ssh_agent::AgentProxy::start(
                upstream.clone(),
                &socket,
                m.mode.unwrap_or(0o600),
            )
            .map_err(io_err("listen at", &socket))?;
            held.agents.push(agent);
            let target = absolute(m.target.as_deref().unwrap_or("/run/buildkit/ssh_agent.0"));
            // BuildKit points SSH_AUTH_SOCK at the first agent, unless the step sets it.
            if !env.iter().any(|e| e.starts_with("SSH_AUTH_SOCK=")) {
                env.push(format!("SSH_AUTH_SOCK={target}"));
            }
            out.push(MountSpec::Bind {
                source: socket,
                inside: None,
                target,
                readonly: true,
                scratch: None,
                create: None,
                owner: Some((m.uid.unwrap_or(0), m.gid.unwrap_or(0))),
            });
        }
    }
    Ok(())
}

/// A cache mount's directory name (its id, `from` seed and owner hashed) and the owner and
/// mode its directory is made with.
fn cache_key(m: &Mount, id: &str, seed: Option<&str>) -> (String, (u32, u32, u32)) {
    use sha2::Digest as _;
    let mut h = sha2::Sha256::new();
    h.update(id.as_bytes());
    if let Some(identity) = seed {
        h.update(b"\0from\0");
        h.update(identity.as_bytes());
    }
    // BuildKit's base for a cache with uid, gid or mode is `mkdir /cache` with them, and the
    // cache is keyed by its base: each owner and mode is a cache of its own.
    let owner = (
        m.uid.unwrap_or(0),
        m.gid.unwrap_or(0),
        m.mode.unwrap_or(0o755),
    );
    if m.uid.is_some() || m.gid.is_some() || m.mode.is_some() {
        h.update(format!("\0owner\0{}:{}:{:o}", owner.0, owner.1, owner.2).as_bytes());
    }
    (hex::encode(&h.finalize()[..16]), owner)
}

/// Notes the cache mounts of a step that was a cache hit as used, for `--cache-to
/// …,mounts=true`: the next build may run it. A mount seeded `from=` a stage or image is
/// left out (its key needs that filesystem, which a hit does not make).
pub(crate) fn note_cache_mounts(cx: &Ctx<'_>, workdir: &str, mounts: &[Mount]) {
    for m in mounts {
        if m.kind != MountType::Cache || m.from.is_some() {
            continue;
        }
        let Some(target) = m.target.as_deref() else {
            continue;
        };
        let target = if target.starts_with('/') {
            meta::clean_abs(target)
        } else {
            let wd = if workdir.is_empty() { "/" } else { workdir };
            meta::clean_abs(&format!("{wd}/{target}"))
        };
        let id = m.id.clone().unwrap_or(target);
        cx.cache.mount_used(&cache_key(m, &id, None).0, &id);
    }
}

/// Restores the cache mount under `key` from an imported cache (`--cache-from`) into
/// `dest`; false when none has it. A cache that cannot be restored is only a warning: the
/// step starts with an empty cache, as it would on a machine that never had one.
fn restore(cx: &Ctx<'_>, key: &str, id: &str, dest: &Path, owner: (u32, u32, u32)) -> Result<bool> {
    let Some(Ok(sb)) = cx.sandbox.get() else {
        return Ok(false);
    };
    match cx.cache.restore_mount(cx.store, sb, key, dest, owner) {
        Ok(restored) => Ok(restored),
        Err(e) => {
            (cx.progress)(crate::progress::Event::Warning(format!(
                "cache mount {id} is not restored, the step starts without it: {}",
                crate::error::sandbox::report(&e)
            )));
            Ok(false)
        }
    }
}

/// What `from=` names for a mount: a stage this build has built, a directory context, or
/// an image.
enum MountFrom<'a> {
    Stage(usize, &'a StageResult),
    Dir(PathBuf),
    Image,
}

fn mount_from<'a>(cx: &'a Ctx<'_>, from: &str) -> MountFrom<'a> {
    match cx.source(from) {
        Named::Stage(i, Some(r)) => MountFrom::Stage(i, r),
        Named::Context(NamedContext::Dir(d)) => MountFrom::Dir(d),
        // A stage not built by now (one only expansion at this step names): a directory
        // context of that name, else an image.
        Named::Stage(_, None) => match cx.opts.contexts.get(from) {
            Some(NamedContext::Dir(d)) => MountFrom::Dir(d.clone()),
            _ => MountFrom::Image,
        },
        // A mount reads no OCI layout: the name is looked up as an image's.
        Named::Context(NamedContext::OciLayout { .. }) | Named::Image => MountFrom::Image,
    }
}

/// The image `from=` names (see [`Ctx::image`]).
fn mount_image(cx: &Ctx<'_>, from: &str, step_id: usize) -> Result<Descriptor> {
    cx.image(from, step_id, cx.platform, || {
        format!("from={from}: no stage or image of that name")
    })
    .map_err(|e| MountError::Image(e).into())
}

/// The filesystem `from=` names (a stage of this build, a named context or an image in the
/// store) and a text that identifies its contents.
pub(crate) fn from_root(cx: &Ctx<'_>, from: &str, base: &Path) -> Result<(PathBuf, String)> {
    match mount_from(cx, from) {
        MountFrom::Stage(i, r) => {
            // A stage is known by its place in the Dockerfile: its layers differ from build to
            // build (file times), and a cache is seeded only when it is new anyway. One whose
            // last layers are not applied yet: its files, complete, in a copy.
            let complete = r.pending.is_empty() && r.partial.is_none();
            let copy = base.join(format!("from-stage-{i}"));
            Ok((
                stage_root(cx.store, r, complete, copy)?,
                format!("stage:{i}"),
            ))
        }
        MountFrom::Dir(d) => {
            let identity = format!("dir:{}", d.display());
            Ok((d, identity))
        }
        MountFrom::Image => {
            // The step's key has named the image already (pulling it if need be), so this
            // finds it without a word to the step's log.
            let manifest = mount_image(cx, from, 0)?;
            let (img, dir) = image_root(cx.store, &manifest, |id| base.join(format!("from-{id}")))?;
            Ok((dir, format!("image:{}", img.id())))
        }
    }
}

/// A new cache directory holding a copy of `seed`, made in scratch space and renamed into place
/// so a half-made copy is never used.
pub(crate) fn seed_cache(seed: &Path, tmp: &Path, dest: &Path) -> Result<()> {
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
        return Err(MountError::Rule(format!(
            "copying {} to seed a cache failed ({status})",
            seed.display()
        ))
        .into());
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
pub(crate) fn resolve_in(root: &Path, rel: &str) -> Result<PathBuf> {
    let clean = meta::clean_abs(&format!("/{rel}"));
    let p = root.join(clean.trim_start_matches('/'));
    let real = std::fs::canonicalize(&p).unwrap_or_else(|_| p.clone());
    let real_root = std::fs::canonicalize(root).unwrap_or_else(|_| root.to_path_buf());
    if !real.starts_with(&real_root) {
        return Err(MountError::Rule(format!("source {rel:?} leads outside its root")).into());
    }
    Ok(real)
}
