//! The sandbox helper: cairn re-executed inside the build's user namespace, where it unpacks
//! layers with their real owners, mounts a container's root filesystem, runs the step's
//! process as pid 1 of fresh namespaces, and writes the step's changes as a layer tar.

use std::fs::File;
use std::io::BufReader;
use std::os::fd::FromRawFd;
use std::os::unix::fs::OpenOptionsExt;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicI32, Ordering};

use cairn_layers::IdMap;
use cairn_layers::apply::{ApplyOptions, Whiteouts};
use cairn_layers::compress::Compression;
use cairn_layers::pipeline::apply_blob;

use super::isolation::Mode;
use super::proto::{self, Go, LayerBlob, Network, Reply, Request};
use super::snapshot::overlay;
use super::sys::{self, HelperError};
use rustix::process::Signal;

mod chroot;
mod pid1;
mod run;
use run::run;

/// The hidden first argument that makes the cairn binary act as the helper.
pub const ARG: &str = "__sandbox";
/// The second argument when the helper is to make a user namespace of its own (whose maps
/// cairn writes); without it the helper stays in cairn's.
pub const ENTER_USERNS: &str = "userns";
/// The control socket's descriptor in the helper.
pub const CONTROL_FD: i32 = 3;
/// The layer tar's descriptor in the helper (Run with `diff`).
pub const DATA_FD: i32 = 4;
/// The socket that receives the container terminal's master (Run with `console`).
pub const CONSOLE_FD: i32 = 5;

thread_local! {
    /// The limits cgroup's `cgroup.procs` files, opened before the helper entered its user
    /// namespace (or why not): the kernel checks a migration with the opener's credentials,
    /// and mapped root may not write a file the host's root owns.
    static CGROUP_PROCS: std::cell::RefCell<Vec<(PathBuf, std::io::Result<File>)>> =
        const { std::cell::RefCell::new(Vec::new()) };
}

static CHILD: AtomicI32 = AtomicI32::new(0);
static CANCELLED: AtomicBool = AtomicBool::new(false);

extern "C" fn on_term(_: libc::c_int) {
    CANCELLED.store(true, Ordering::SeqCst);
    let pid = CHILD.load(Ordering::SeqCst);
    // kill is async-signal-safe (rustix makes the bare system call). Killing pid 1 of the
    // container's pid namespace kills every process in it.
    if let Some(pid) = rustix::process::Pid::from_raw(pid) {
        let _ = rustix::process::kill_process(pid, Signal::KILL);
    }
}

/// The helper's whole life; the cairn binary calls this when its first argument is [`ARG`].
pub fn main() -> ! {
    // Killed or interrupted cairn: stop the step and clean up rather than linger.
    sys::die_with_parent(Signal::TERM);
    // SAFETY: `on_term` only touches atomics and calls kill, both async-signal-safe; SIG_IGN
    // for SIGPIPE makes a closed pipe an EPIPE error instead. rustix has no signal handlers.
    unsafe {
        libc::signal(libc::SIGTERM, on_term as *const () as libc::sighandler_t);
        libc::signal(libc::SIGINT, on_term as *const () as libc::sighandler_t);
        libc::signal(libc::SIGPIPE, libc::SIG_IGN);
    }
    // SAFETY: cairn passes the control socket as fd 3 (`CONTROL_FD`, placed before exec), and
    // nothing else in the helper claims it.
    let control = unsafe { UnixStream::from_raw_fd(CONTROL_FD) };
    let code = match serve(control) {
        Ok(()) => 0,
        Err(_) => 1,
    };
    std::process::exit(code)
}

fn serve(control: UnixStream) -> Result<(), HelperError> {
    let mut reader = BufReader::new(
        control
            .try_clone()
            .map_err(HelperError::call("dup the control socket"))?,
    );
    let mut w = control;
    let req: Request = proto::recv(&mut reader)
        .map_err(HelperError::call("read the request"))?
        .ok_or("no request")?;
    let (cleanup, on_failure_only) = match &req {
        Request::Run(spec) => (spec.cleanup.clone(), spec.cleanup_on_failure_only),
        _ => (Vec::new(), false),
    };
    // Root's helper stays in the host's user namespace: it needs root's reach into the store,
    // and its pid 1 alone enters a user namespace with the build's (unprivileged) maps. A
    // container's root that may not mount there enters one mapping every id to itself.
    let enter_userns = std::env::args().nth(2).as_deref() == Some(ENTER_USERNS);
    let host_root = rustix::process::getuid().is_root();
    if let Request::Run(spec) = &req {
        let opened = spec
            .cgroup_procs
            .iter()
            .map(|p| {
                let f = std::fs::OpenOptions::new()
                    .write(true)
                    .custom_flags(libc::O_CLOEXEC)
                    .open(p);
                (p.clone(), f)
            })
            .collect();
        CGROUP_PROCS.with(|c| *c.borrow_mut() = opened);
    }
    let result = (|| {
        if host_root
            && let Request::Run(spec) = &req
            && spec.userns.is_none()
            && spec.isolation == Mode::Userns
        {
            return Err("a step run by root needs an id mapping".into());
        }
        // A step with a network of its own gets its network namespace here, with the user
        // namespace where the helper makes one: cairn attaches pasta or slirp4netns to it
        // before its go-ahead, so the step starts with its network ready.
        let mut flags = if enter_userns { sys::CLONE_NEWUSER } else { 0 };
        if let Request::Run(spec) = &req
            && spec.network == Network::Private
        {
            flags |= sys::CLONE_NEWNET;
        }
        if flags != 0 {
            sys::unshare(flags)?;
        }
        proto::send(&mut w, &Reply::Ready).map_err(HelperError::call("answer cairn"))?;
        let _: Go = proto::recv(&mut reader)
            .map_err(HelperError::call("read cairn's go-ahead"))?
            .ok_or("cairn went away before writing the id maps")?;
        match &req {
            Request::Probe { dir } => {
                let overlay = overlay::probe(dir).map_err(|e| e.report());
                let _ = std::fs::remove_dir_all(dir);
                proto::send(&mut w, &Reply::Probed { overlay })
                    .map_err(HelperError::call("answer cairn"))
            }
            Request::Unpack {
                layers,
                target,
                overlay,
                ids,
            } => {
                let diff_ids = unpack(layers, target, *overlay, ids, false)?;
                proto::send(&mut w, &Reply::Unpacked { diff_ids })
                    .map_err(HelperError::call("answer cairn"))
            }
            Request::Remove { paths } => {
                for p in paths {
                    remove(p)?;
                }
                Ok(())
            }
            Request::Run(spec) if spec.isolation == Mode::Chroot => chroot::run(spec, &mut w),
            Request::Run(spec) => run(spec, &mut w),
            Request::Diff { root, id_map } => write_diff(root, id_map),
        }
    })();
    // A step stopped early may still have its overlay mounted under the run directory:
    // detach it first, or removing the directory would reach into the mount.
    if let Request::Run(spec) = &req {
        spec.root.open().detach();
    }
    if result.is_err() || !on_failure_only {
        for p in &cleanup {
            let _ = remove(p);
        }
    }
    let reply = match &result {
        Ok(()) => Reply::Done,
        // Text: the error crosses to another process as a line of JSON.
        Err(e) => Reply::Failed {
            message: e.report(),
        },
    };
    let _ = proto::send(&mut w, &reply);
    result
}

/// A kept container's changes as a layer tar on the data pipe (`cairn commit`).
fn write_diff(root: &super::proto::RootSpec, id_map: &IdMap) -> Result<(), HelperError> {
    use std::io::Write as _;
    // SAFETY: cairn places the layer pipe on fd 4 (`DATA_FD`) for a Diff, and this is its
    // only owner in the helper.
    let data = unsafe { File::from_raw_fd(DATA_FD) };
    let opts = cairn_layers::diff::TarOptions {
        id_map: id_map.clone(),
        clamp_mtime: None,
    };
    let mut out = std::io::BufWriter::with_capacity(1 << 20, data);
    root.open()
        .write_diff(&mut out, &opts)
        .map_err(|e| HelperError::from(e).context("diff"))?;
    out.into_inner()
        .map_err(|e| HelperError::call("write the layer")(e.into_error()))?
        .flush()
        .map_err(HelperError::call("write the layer"))
}

fn remove(p: &Path) -> Result<(), HelperError> {
    match std::fs::symlink_metadata(p) {
        Err(_) => Ok(()),
        Ok(m) if m.is_dir() => std::fs::remove_dir_all(p).map_err(HelperError::at("remove", p)),
        Ok(_) => std::fs::remove_file(p).map_err(HelperError::at("remove", p)),
    }
}

/// Applies layer blobs onto `target` in order, owners through `ids` (container ids to the ids
/// this process sees: itself inside the namespace, the mapped host range for root outside);
/// returns each layer's diff_id. `skip_devices` leaves device nodes out (a chroot's tree).
pub(super) fn unpack(
    layers: &[LayerBlob],
    target: &Path,
    overlay: bool,
    ids: &IdMap,
    skip_devices: bool,
) -> Result<Vec<String>, HelperError> {
    let opts = ApplyOptions {
        whiteouts: if overlay {
            Whiteouts::Overlay {
                opaque_xattr: overlay::OPAQUE_XATTR,
            }
        } else {
            Whiteouts::Apply
        },
        id_map: ids.clone(),
        chown: true,
        skip_devices,
    };
    std::fs::create_dir_all(target).map_err(HelperError::at("create", target))?;
    let mut out = Vec::new();
    for l in layers {
        let c = Compression::from_media_type(&l.media_type).ok_or_else(|| {
            HelperError::Refused(format!(
                "layer media type {} is not supported",
                l.media_type
            ))
        })?;
        let blob = File::open(&l.path).map_err(HelperError::at("open", &l.path))?;
        let diff_id = apply_blob(blob, c, target, &opts, &l.path.display().to_string())?;
        out.push(diff_id.to_string());
    }
    Ok(out)
}
