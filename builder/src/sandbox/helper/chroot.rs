//! A step under isolation `chroot`, where no namespace can be made: the copy snapshot's root
//! is staged with what mounts give a step elsewhere (device nodes, /etc files, RUN --mount
//! sources), the step is chrooted into it without the capabilities that would let it out,
//! and every staged thing is put back before the diff.

use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};

use rustix::fs::{AtFlags, FileType, Mode, OFlags, Timestamps};
use rustix::io::Errno;
use rustix::process::Signal;

use super::pid1::{self, UsernsSync};
use crate::sandbox::confine::{self, Made};
use cairn_layers::diff::{TreeRecord, write_recorded_diff};

use crate::sandbox::proto::{MountSpec, RootSpec, RunSpec};
use crate::sandbox::snapshot::IMAGE_FILE_LIMIT;
use crate::sandbox::sys::{self, HelperError};

/// Capabilities a chrooted step must not keep beyond Docker's default set: `CAP_SYS_CHROOT`
/// would let root out of the chroot (chroot into a subdirectory, then `..` past the old
/// root), and `CAP_MKNOD` would make device nodes no mount can make unusable.
const DROPPED: [u32; 2] = [18, 27];

/// The step's /dev nodes (name, major, minor): the ones runc gives a container.
const DEVICES: [(&str, u32, u32); 6] = [
    ("null", 1, 3),
    ("zero", 1, 5),
    ("full", 1, 7),
    ("random", 1, 8),
    ("urandom", 1, 9),
    ("tty", 5, 0),
];

pub(super) fn run(spec: &RunSpec, w: &mut UnixStream) -> Result<(), HelperError> {
    // The step runs in cairn's own pid namespace as the same user: unable to ptrace cairn or
    // this helper (and so read the registry credentials in their memory) only if neither is
    // dumpable. exec makes the step's own processes dumpable again.
    rustix::process::set_dumpable_behavior(rustix::process::DumpableBehavior::NotDumpable)
        .map_err(HelperError::call("prctl(PR_SET_DUMPABLE, 0)"))?;
    let RootSpec::Recorded { root } = &spec.root else {
        return Err("isolation chroot runs on a recorded copy of the root".into());
    };
    // Before anything is staged: the layer is what changed since, staging put back.
    let record = TreeRecord::take(root).map_err(|e| HelperError::from(e).context("record"))?;
    let root_fd = confine::open_host(root)?;
    let mut stage = Staging {
        root: root_fd.as_fd(),
        undo: Vec::new(),
        hidden: 0,
    };
    let staged = stage_all(&mut stage, spec);
    let outcome = staged.and_then(|()| super::run::start_and_wait(spec, root, w, child));
    // What staging wrote back over keeps no ctime of the record's: it is not the step's.
    let restored = stage.restored();
    stage.put_back();
    let (code, _) = outcome?;
    let skip: Vec<Vec<u8>> = restored
        .iter()
        .map(|p| p.as_os_str().as_encoded_bytes().to_vec())
        .collect();
    super::run::write_layer(spec, code, &mut |out, opts| {
        write_recorded_diff(&record, root, &skip, out, opts).map(drop)
    })?;
    Ok(())
}

fn stage_all(stage: &mut Staging<'_>, spec: &RunSpec) -> Result<(), HelperError> {
    if spec.console {
        return Err(
            "a terminal (-t) needs a devpts of the container's own, which isolation \
                    chroot cannot mount"
                .into(),
        );
    }
    let mut kept = Made::default();
    for d in ["proc", "dev", "sys"] {
        confine::ensure_in(stage.root, d, true, &mut kept)?;
    }
    stage.devices()?;
    for (p, file) in &spec.etc_files {
        let content = read_limited(&confine::open_host(file)?, file)?;
        stage.file(p, &content)?;
    }
    for m in &spec.mounts {
        match m {
            MountSpec::Bind {
                source,
                inside,
                target,
                create: Some((uid, gid, mode)),
                ..
            } if inside.is_none() => {
                super::run::ensure_cache_dir(source, *uid, *gid, *mode)?;
                stage.move_in(source, target)?;
            }
            MountSpec::Bind {
                target,
                owner: Some(_),
                ..
            } => {
                // A socket cannot be copied in, and moved in it would leave the run directory.
                return Err(HelperError::Refused(format!(
                    "an ssh agent socket ({target}) needs a mount namespace, which isolation \
                     chroot cannot make"
                )));
            }
            MountSpec::Bind {
                target,
                readonly: false,
                scratch: None,
                create: None,
                ..
            } => {
                // Staged as a copy, its writes would be lost without a word.
                return Err(HelperError::Refused(format!(
                    "a read-write volume ({target}) needs a mount namespace, which isolation \
                     chroot cannot make; mount it read-only (:ro)"
                )));
            }
            MountSpec::Bind {
                source,
                inside,
                target,
                ..
            } => {
                let src = confine::open_source(source, inside.as_deref())?;
                if confine::is_dir(src.as_fd()) {
                    let dir = stage.dir(target)?;
                    copy_tree(src.as_fd(), dir.as_fd(), target)?;
                } else {
                    let content = read_limited(&src, source)?;
                    stage.file(target, &content)?;
                }
            }
            MountSpec::Tmpfs { target, .. } => {
                stage.dir(target)?;
            }
        }
    }
    Ok(())
}

/// Reads a file cairn staged (an /etc file, a script, a secret), bounded.
fn read_limited(fd: &OwnedFd, path: &Path) -> Result<Vec<u8>, HelperError> {
    let mut f = File::open(sys::fd_path(fd.as_fd())).map_err(HelperError::at("open", path))?;
    let mut out = Vec::new();
    (&mut f)
        .take(IMAGE_FILE_LIMIT + 1)
        .read_to_end(&mut out)
        .map_err(HelperError::at("read", path))?;
    if out.len() as u64 > IMAGE_FILE_LIMIT {
        return Err(HelperError::Refused(format!(
            "{} is larger than {IMAGE_FILE_LIMIT} bytes, too large to stage into a chroot",
            path.display()
        )));
    }
    Ok(out)
}

/// What staging changed in the root, undone last first.
enum Undo {
    /// A name staging made (a file, a device node, a tree): removed.
    Remove(PathBuf),
    /// A directory made on the way to a staged name: removed if the step left it empty.
    RemoveEmpty(PathBuf),
    /// A file of the image whose contents staging replaced: written back.
    Contents(PathBuf, Vec<u8>),
    /// What stood at the first path, renamed to the second so that a staged directory starts
    /// empty as a mount would show it: renamed back.
    Unhide(PathBuf, PathBuf),
    /// A directory moved in from the host (a cache): moved back out.
    MoveOut(PathBuf, PathBuf),
    /// A directory's times before staging wrote into it.
    Times(PathBuf, Timestamps),
}

struct Staging<'a> {
    root: BorrowedFd<'a>,
    undo: Vec<Undo>,
    hidden: usize,
}

impl Staging<'_> {
    /// The parent directory of `rel` (made as needed), opened, with its times saved.
    fn parent(&mut self, rel: &str) -> Result<(OwnedFd, PathBuf, PathBuf), HelperError> {
        let path = Path::new(rel);
        let name = path
            .file_name()
            .ok_or_else(|| HelperError::Refused(format!("{rel:?} names no file")))?;
        let parent = path.parent().map_or("/".into(), |p| p.to_string_lossy());
        let mut made = Made::default();
        let dir = confine::ensure_in(self.root, &parent, true, &mut made)?;
        for m in made.made {
            self.undo.push(Undo::RemoveEmpty(m));
        }
        let real = real_path(dir.as_fd(), self.root)?;
        self.save_times(&real)?;
        let dir = confine::open_beneath(self.root, &real, OFlags::DIRECTORY | OFlags::RDONLY)
            .map_err(HelperError::call(format!("open {parent}")))?;
        Ok((dir, real.clone(), real.join(name)))
    }

    fn save_times(&mut self, real: &Path) -> Result<(), HelperError> {
        let fd = confine::open_beneath(self.root, real, OFlags::PATH)
            .map_err(HelperError::call(format!("open /{}", real.display())))?;
        let st = rustix::fs::fstat(&fd).map_err(HelperError::call("stat"))?;
        let ts = Timestamps {
            last_access: rustix::fs::Timespec {
                tv_sec: st.st_atime as _,
                tv_nsec: st.st_atime_nsec as _,
            },
            last_modification: rustix::fs::Timespec {
                tv_sec: st.st_mtime as _,
                tv_nsec: st.st_mtime_nsec as _,
            },
        };
        self.undo.push(Undo::Times(real.to_path_buf(), ts));
        Ok(())
    }

    /// `rel` holds `content` for the step: a new file, or an image's file written over.
    fn file(&mut self, rel: &str, content: &[u8]) -> Result<(), HelperError> {
        let (dir, _, real) = self.parent(rel)?;
        let name = real.file_name().unwrap_or_default();
        let fail = |what: &str| HelperError::call(format!("{what} {rel} in the chroot"));
        let flags = OFlags::WRONLY | OFlags::NOFOLLOW | OFlags::CLOEXEC;
        let fd = match rustix::fs::openat(&dir, name, flags, Mode::empty()) {
            Ok(fd) => {
                let st = rustix::fs::fstat(&fd).map_err(fail("stat"))?;
                if FileType::from_raw_mode(st.st_mode) != FileType::RegularFile {
                    return Err(HelperError::Refused(format!(
                        "{rel} in the image is not a regular file; a chroot cannot cover it"
                    )));
                }
                let old = read_limited(&fd, Path::new(rel))?;
                self.undo.push(Undo::Contents(real.clone(), old));
                rustix::fs::ftruncate(&fd, 0).map_err(fail("truncate"))?;
                fd
            }
            Err(Errno::NOENT) => {
                let fd = rustix::fs::openat(
                    &dir,
                    name,
                    flags | OFlags::CREATE | OFlags::EXCL,
                    Mode::from_raw_mode(0o644),
                )
                .map_err(fail("create"))?;
                self.undo.push(Undo::Remove(real.clone()));
                fd
            }
            // A symlink (ELOOP with NOFOLLOW) or anything else the image put there.
            Err(e) => return Err(fail("open")(e)),
        };
        File::from(fd)
            .write_all(content)
            .map_err(HelperError::call(format!("write {rel} in the chroot")))
    }

    /// `rel` as an empty directory for the step (what an image had there is set aside).
    fn dir(&mut self, rel: &str) -> Result<OwnedFd, HelperError> {
        let (dir, real_parent, real) = self.parent(rel)?;
        let name = real.file_name().unwrap_or_default().to_owned();
        self.hide(&dir, &real_parent, &real)?;
        rustix::fs::mkdirat(&dir, &name, Mode::from_raw_mode(0o755))
            .map_err(HelperError::call(format!("create {rel} in the chroot")))?;
        self.undo.push(Undo::Remove(real.clone()));
        confine::open_beneath(self.root, &real, OFlags::DIRECTORY | OFlags::RDONLY)
            .map_err(HelperError::call(format!("open {rel} in the chroot")))
    }

    /// Renames what is at `real` to a sibling name, to be renamed back after the step.
    fn hide(&mut self, dir: &OwnedFd, parent: &Path, real: &Path) -> Result<(), HelperError> {
        let name = real.file_name().unwrap_or_default();
        if rustix::fs::statat(dir, name, AtFlags::SYMLINK_NOFOLLOW).is_err() {
            return Ok(());
        }
        self.hidden += 1;
        let aside = format!(".cairn-staged-{}-{}", std::process::id(), self.hidden);
        rustix::fs::renameat(dir, name, dir, aside.as_str())
            .map_err(HelperError::call(format!("set /{} aside", real.display())))?;
        self.undo
            .push(Undo::Unhide(parent.join(&aside), real.to_path_buf()));
        Ok(())
    }

    /// A host directory (a cache) moved to `rel` for the step and back after it.
    fn move_in(&mut self, source: &Path, rel: &str) -> Result<(), HelperError> {
        let (dir, real_parent, real) = self.parent(rel)?;
        self.hide(&dir, &real_parent, &real)?;
        let name = real.file_name().unwrap_or_default();
        let (src_parent, src_name) = split_host(source)?;
        let sp = confine::open_host(&src_parent)?;
        rustix::fs::renameat(&sp, src_name.as_str(), &dir, name).map_err(HelperError::call(
            format!("move {} to {rel}", source.display()),
        ))?;
        self.undo
            .push(Undo::MoveOut(real.to_path_buf(), source.to_path_buf()));
        Ok(())
    }

    /// The step's /dev: runc's device nodes where the image has none of that name.
    fn devices(&mut self) -> Result<(), HelperError> {
        self.save_times(Path::new("dev"))?;
        let dev = confine::open_beneath(self.root, Path::new("dev"), OFlags::DIRECTORY)
            .map_err(HelperError::call("open /dev in the chroot"))?;
        for (name, major, minor) in DEVICES {
            match rustix::fs::mknodat(
                &dev,
                name,
                FileType::CharacterDevice,
                Mode::from_raw_mode(0o666),
                rustix::fs::makedev(major, minor),
            ) {
                Ok(()) => {
                    // The umask trimmed the mode.
                    let _ = rustix::fs::chmodat(
                        &dev,
                        name,
                        Mode::from_raw_mode(0o666),
                        AtFlags::empty(),
                    );
                    self.undo.push(Undo::Remove(Path::new("dev").join(name)));
                }
                Err(Errno::EXIST) => {}
                Err(e) => {
                    return Err(HelperError::call(format!(
                        "create /dev/{name} in the chroot (which needs CAP_MKNOD)"
                    ))(e));
                }
            }
        }
        Ok(())
    }

    /// The image's own names that staging covered and puts back (their inode is not as the
    /// record has it, though the step never saw them).
    fn restored(&self) -> Vec<PathBuf> {
        self.undo
            .iter()
            .filter_map(|u| match u {
                Undo::Contents(real, _) | Undo::Unhide(_, real) => Some(real.clone()),
                _ => None,
            })
            .collect()
    }

    /// Undoes everything, last first; best effort, so that one failure does not keep the
    /// rest in the layer.
    fn put_back(&mut self) {
        while let Some(u) = self.undo.pop() {
            let _ = self.undo_one(u);
        }
    }

    fn undo_one(&self, u: Undo) -> Result<(), Errno> {
        match u {
            Undo::Remove(real) => {
                let (dir, name) = self.parent_of(&real)?;
                remove_at(dir.as_fd(), &name)
            }
            Undo::RemoveEmpty(real) => {
                let (dir, name) = self.parent_of(&real)?;
                rustix::fs::unlinkat(&dir, name.as_os_str(), AtFlags::REMOVEDIR)
            }
            Undo::Contents(real, old) => {
                let (dir, name) = self.parent_of(&real)?;
                let fd = rustix::fs::openat(
                    &dir,
                    name.as_os_str(),
                    OFlags::WRONLY | OFlags::TRUNC | OFlags::NOFOLLOW | OFlags::CLOEXEC,
                    Mode::empty(),
                )?;
                File::from(fd)
                    .write_all(&old)
                    .map_err(|e| Errno::from_io_error(&e).unwrap_or(Errno::IO))
            }
            Undo::Unhide(aside, real) => {
                let (dir, name) = self.parent_of(&real)?;
                let _ = remove_at(dir.as_fd(), &name);
                let aside_name = aside.file_name().unwrap_or_default();
                rustix::fs::renameat(&dir, aside_name, &dir, name.as_os_str())
            }
            Undo::MoveOut(real, source) => {
                let (dir, name) = self.parent_of(&real)?;
                let (src_parent, src_name) = split_host(&source).map_err(|_| Errno::INVAL)?;
                let sp = rustix::fs::open(&src_parent, OFlags::PATH, Mode::empty())?;
                rustix::fs::renameat(&dir, name.as_os_str(), &sp, src_name.as_str())
            }
            Undo::Times(real, ts) => {
                let fd = confine::open_beneath(self.root, &real, OFlags::RDONLY)?;
                rustix::fs::futimens(&fd, &ts)
            }
        }
    }

    /// The directory holding `real` (a path below the root), reached without a symlink: the
    /// step may have put one on the way.
    fn parent_of(&self, real: &Path) -> Result<(OwnedFd, std::ffi::OsString), Errno> {
        let parent = real.parent().unwrap_or(Path::new(""));
        let name = real.file_name().ok_or(Errno::INVAL)?.to_owned();
        let dir = confine::open_beneath(self.root, parent, OFlags::DIRECTORY | OFlags::RDONLY)?;
        Ok((dir, name))
    }
}

/// `fd`'s path below `root`, as the kernel names it (`/proc/self/fd`), relative.
fn real_path(fd: BorrowedFd<'_>, root: BorrowedFd<'_>) -> Result<PathBuf, HelperError> {
    let read = |fd: BorrowedFd<'_>| {
        std::fs::read_link(sys::fd_path(fd)).map_err(HelperError::call("read a descriptor's path"))
    };
    let (path, base) = (read(fd)?, read(root)?);
    path.strip_prefix(&base)
        .map(Path::to_path_buf)
        .map_err(|_| HelperError::Refused(format!("{} is outside the chroot", path.display())))
}

fn split_host(p: &Path) -> Result<(PathBuf, String), HelperError> {
    match (p.parent(), p.file_name()) {
        (Some(d), Some(n)) => Ok((d.to_path_buf(), n.to_string_lossy().into_owned())),
        _ => Err(HelperError::Refused(format!(
            "{} has no parent",
            p.display()
        ))),
    }
}

/// Removes `name` in `dir`, a whole tree for a directory, never following a symlink.
fn remove_at(dir: BorrowedFd<'_>, name: &std::ffi::OsStr) -> Result<(), Errno> {
    let st = rustix::fs::statat(dir, name, AtFlags::SYMLINK_NOFOLLOW)?;
    if FileType::from_raw_mode(st.st_mode) != FileType::Directory {
        return rustix::fs::unlinkat(dir, name, AtFlags::empty());
    }
    let sub = rustix::fs::openat(
        dir,
        name,
        OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::RDONLY | OFlags::CLOEXEC,
        Mode::empty(),
    )?;
    for n in entry_names(sub.as_fd())? {
        remove_at(sub.as_fd(), &n)?;
    }
    rustix::fs::unlinkat(dir, name, AtFlags::REMOVEDIR)
}

/// The names in the directory `dir`, but `.` and `..`.
fn entry_names(dir: BorrowedFd<'_>) -> Result<Vec<std::ffi::OsString>, Errno> {
    use std::os::unix::ffi::OsStrExt;
    Ok(rustix::fs::Dir::read_from(dir)?
        .filter_map(Result::ok)
        .map(|e| std::ffi::OsStr::from_bytes(e.file_name().to_bytes()).to_owned())
        .filter(|n| n != "." && n != "..")
        .collect())
}

/// Copies the tree below `src` into the empty directory `dst` (a bind mount's source staged
/// into the chroot): directories, files, symlinks as links; never following one.
fn copy_tree(src: BorrowedFd<'_>, dst: BorrowedFd<'_>, what: &str) -> Result<(), HelperError> {
    let fail =
        |e: Errno| HelperError::call(format!("copy the source of {what} into the chroot"))(e);
    let dir = rustix::fs::openat(
        src,
        ".",
        OFlags::DIRECTORY | OFlags::RDONLY | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .map_err(fail)?;
    for name in entry_names(dir.as_fd()).map_err(fail)? {
        let st = rustix::fs::statat(&dir, &name, AtFlags::SYMLINK_NOFOLLOW).map_err(fail)?;
        let mode = Mode::from_raw_mode(st.st_mode & 0o7777);
        match FileType::from_raw_mode(st.st_mode) {
            FileType::Directory => {
                rustix::fs::mkdirat(dst, &name, mode).map_err(fail)?;
                let s = rustix::fs::openat(
                    &dir,
                    &name,
                    OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::RDONLY | OFlags::CLOEXEC,
                    Mode::empty(),
                )
                .map_err(fail)?;
                let d = rustix::fs::openat(
                    dst,
                    &name,
                    OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::RDONLY | OFlags::CLOEXEC,
                    Mode::empty(),
                )
                .map_err(fail)?;
                copy_tree(s.as_fd(), d.as_fd(), what)?;
            }
            FileType::RegularFile => {
                let from = rustix::fs::openat(
                    &dir,
                    &name,
                    OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
                    Mode::empty(),
                )
                .map_err(fail)?;
                let to = rustix::fs::openat(
                    dst,
                    &name,
                    OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW,
                    mode,
                )
                .map_err(fail)?;
                std::io::copy(&mut File::from(from), &mut File::from(to))
                    .map_err(HelperError::call(format!("copy {what}")))?;
            }
            FileType::Symlink => {
                let target = rustix::fs::readlinkat(&dir, &name, Vec::new()).map_err(fail)?;
                rustix::fs::symlinkat(target.as_c_str(), dst, &name).map_err(fail)?;
            }
            // Sockets, fifos and devices of a context are not staged.
            _ => {}
        }
    }
    Ok(())
}

/// pid 1 of a chrooted step (it is not pid 1: there is no pid namespace). Returns only on
/// failure, with the message.
fn child(spec: &RunSpec, root: &Path, _sync: Option<UsernsSync>) -> String {
    match child_setup(spec, root) {
        Ok(never) => match never {},
        Err(e) => e.report(),
    }
}

fn child_setup(spec: &RunSpec, root: &Path) -> Result<std::convert::Infallible, HelperError> {
    sys::die_with_parent(Signal::KILL);
    sys::setsid()?;
    pid1::join_cgroups()?;
    pid1::default_signals();
    sys::chdir(root)?;
    rustix::process::chroot(".").map_err(HelperError::call("chroot"))?;
    sys::chdir(Path::new("/"))?;
    let cwd = if spec.cwd.is_empty() { "/" } else { &spec.cwd };
    if std::fs::metadata(cwd).map(|m| !m.is_dir()).unwrap_or(true) {
        let _ = std::fs::create_dir_all(cwd);
    }
    sys::chdir(Path::new(cwd))?;
    if spec.suppress_sync {
        // Only with CAP_SYS_ADMIN: without it the kernel wants no_new_privs, which would
        // break setuid programs in the step, so syncs then stay real.
        let _ = crate::sandbox::seccomp::suppress_sync();
    }
    pid1::become_and_exec(spec, &DROPPED)
}
