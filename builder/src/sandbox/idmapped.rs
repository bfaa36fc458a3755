//! Root's builds: mounts of host-owned trees (the context, secrets, /etc files, caches, other
//! stages) shown to the step through an idmapped mount, so that what host root owns is the
//! container root's, as a user's files are the container root's in a rootless build.

use std::os::fd::{AsRawFd, BorrowedFd, OwnedFd};
use std::sync::atomic::{AtomicI32, Ordering};

use cairn_layers::IdMap;

use super::sys::HelperError;

/// The user namespace whose maps idmapped mounts use (-1: none, a user's build).
static USERNS: AtomicI32 = AtomicI32::new(-1);

/// Makes a user namespace with `ids` as its maps and keeps it for [`remap`]. Called by the
/// helper before it unshares its pid namespace (the child it forks here would otherwise
/// become that namespace's pid 1).
pub fn prepare(ids: &IdMap) -> Result<(), HelperError> {
    let fd = userns_with(ids)?;
    USERNS.store(fd.as_raw_fd(), Ordering::SeqCst);
    // Kept open for the helper's life: pid 1 inherits it.
    std::mem::forget(fd);
    Ok(())
}

fn userns_with(ids: &IdMap) -> Result<OwnedFd, HelperError> {
    use rustix::pipe::{PipeFlags, pipe_with};
    let (ready_r, ready_w) = pipe_with(PipeFlags::CLOEXEC).map_err(HelperError::call("pipe"))?;
    let (done_r, done_w) = pipe_with(PipeFlags::CLOEXEC).map_err(HelperError::call("pipe"))?;
    // SAFETY: the helper is single-threaded; the child below makes only system calls before
    // it leaves through _exit. rustix's fork is not public.
    let pid = unsafe { libc::fork() };
    if pid < 0 {
        return Err(HelperError::call("fork")(std::io::Error::last_os_error()));
    }
    if pid == 0 {
        // Only the helper's end may hold `done` open: its close is this child's cue.
        drop(ready_r);
        drop(done_w);
        let byte: &[u8] = match super::sys::unshare(libc::CLONE_NEWUSER) {
            Ok(()) => b"u",
            Err(_) => b"x",
        };
        let _ = rustix::io::write(&ready_w, byte);
        let _ = rustix::io::read(&done_r, &mut [0u8]);
        // SAFETY: leaving the forked child without running the helper's destructors or exit
        // handlers, which belong to the parent.
        unsafe { libc::_exit(0) }
    }
    drop(ready_w);
    drop(done_r);
    let mut b = [0u8];
    let got = rustix::io::read(&ready_r, &mut b);
    let result = if matches!(got, Ok(1)) && b[0] == b'u' {
        super::ids::write_maps(pid as u32, ids)
            .map_err(HelperError::call("write the idmap namespace's maps"))
            .and_then(|()| {
                std::fs::File::open(format!("/proc/{pid}/ns/user"))
                    .map(OwnedFd::from)
                    .map_err(HelperError::call("open the idmap namespace"))
            })
    } else {
        Err("the idmap namespace's process could not unshare".into())
    };
    drop(done_w);
    drop(ready_r);
    if let Some(pid) = rustix::process::Pid::from_raw(pid) {
        let _ = rustix::process::waitpid(Some(pid), rustix::process::WaitOptions::empty());
    }
    result
}

/// Makes a detached mount tree (from `open_tree(OPEN_TREE_CLONE)`) idmapped, when a root
/// build prepared a namespace. A filesystem that cannot be idmapped keeps its plain ids, its
/// files then owned by `nobody` in the step: that is the answer, not an error.
pub fn apply(tree: BorrowedFd<'_>) {
    let userns = USERNS.load(Ordering::SeqCst);
    if userns < 0 {
        return;
    }
    // EINVAL: this filesystem has no idmapped mounts; its plain ids stay.
    let _ = super::sys::set_mount_idmap(tree, userns);
}
