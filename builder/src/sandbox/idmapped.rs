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
    let mut ready = [0; 2];
    let mut done = [0; 2];
    // SAFETY: pipe2 into two-int arrays; fork in the single-threaded helper; the child only
    // makes async-signal-safe calls before _exit.
    unsafe {
        if libc::pipe2(ready.as_mut_ptr(), libc::O_CLOEXEC) != 0
            || libc::pipe2(done.as_mut_ptr(), libc::O_CLOEXEC) != 0
        {
            return Err(HelperError::call("pipe")(std::io::Error::last_os_error()));
        }
        let pid = libc::fork();
        if pid < 0 {
            return Err(HelperError::call("fork")(std::io::Error::last_os_error()));
        }
        if pid == 0 {
            // Only the helper's end may hold `done` open: its close is this child's cue.
            libc::close(ready[0]);
            libc::close(done[1]);
            let ok = libc::unshare(libc::CLONE_NEWUSER) == 0;
            let byte: &[u8] = if ok { b"u" } else { b"x" };
            libc::write(ready[1], byte.as_ptr().cast(), 1);
            let mut b = 0u8;
            libc::read(done[0], (&raw mut b).cast(), 1);
            libc::_exit(0);
        }
        libc::close(ready[1]);
        libc::close(done[0]);
        let mut b = 0u8;
        let got = libc::read(ready[0], (&raw mut b).cast(), 1);
        let result = if got == 1 && b == b'u' {
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
        libc::close(done[1]);
        libc::close(ready[0]);
        let mut status = 0;
        libc::waitpid(pid, &mut status, 0);
        result
    }
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
