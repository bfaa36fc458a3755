//! Git sources: a repository's ref resolved to a commit (`ls-remote`, no clone), then that
//! commit fetched and checked out by the host's `git`, fenced in: only the http, https, ssh
//! and git transports, no system or user configuration, no hooks, no submodules, a time limit
//! on every command and a size limit on what is fetched and checked out.

pub mod url;

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

pub use crate::error::GitError;
pub use url::{GitRef, Scheme, redact};

/// How long one git command may run and how large a repository may be.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GitLimits {
    pub timeout: Duration,
    /// The most bytes the fetched objects, and the checked-out files, may take.
    pub max_bytes: u64,
}

impl Default for GitLimits {
    fn default() -> Self {
        GitLimits {
            timeout: Duration::from_secs(600),
            max_bytes: 8 << 30,
        }
    }
}

/// What git may use to reach a repository: the ssh agent an ssh URL authenticates with.
#[derive(Debug, Clone, Default)]
pub struct Access {
    /// The socket of the build's `--ssh default` agent.
    pub ssh_agent: Option<PathBuf>,
}

/// A reference resolved on the remote: its commit, and the name that fetches it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resolved {
    pub commit: String,
    /// A `refs/...` name (or the commit itself, when the reference was one).
    pub fetch: String,
}

/// A checked-out commit, removed from disk when dropped.
#[derive(Debug)]
pub struct Checkout {
    dir: PathBuf,
    /// The tree to copy: the checkout, or its subdirectory.
    pub tree: PathBuf,
    /// The commit's committer time, every file's mtime.
    pub commit_time: i64,
}

impl Drop for Checkout {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// The transports git may use, for the URL and any redirect or submodule it meets.
const ALLOWED_PROTOCOLS: &str = "http:https:ssh:git";

/// `git` with everything that could run code of the repository's or read the host's
/// configuration turned off.
fn git(access: &Access) -> Command {
    let mut c = Command::new("git");
    c.env_clear();
    for var in [
        "PATH",
        "HTTP_PROXY",
        "HTTPS_PROXY",
        "NO_PROXY",
        "ALL_PROXY",
        "http_proxy",
        "https_proxy",
        "no_proxy",
        "all_proxy",
    ] {
        if let Some(v) = std::env::var_os(var) {
            c.env(var, v);
        }
    }
    c.env("LC_ALL", "C")
        .env("GIT_TERMINAL_PROMPT", "0")
        .env("GIT_ASKPASS", "/bin/false")
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .env("HOME", "/dev/null")
        .env("GIT_ALLOW_PROTOCOL", ALLOWED_PROTOCOLS)
        .env("GIT_SSH_COMMAND", ssh_command(known_hosts().as_deref()));
    if let Some(sock) = &access.ssh_agent {
        c.env("SSH_AUTH_SOCK", sock);
    }
    for opt in [
        "protocol.file.allow=never",
        "protocol.ext.allow=never",
        "core.hooksPath=/dev/null",
        "core.fsmonitor=false",
        "submodule.recurse=false",
        "fetch.recurseSubmodules=false",
        "credential.helper=",
    ] {
        c.arg("-c").arg(opt);
    }
    c.stdin(Stdio::null());
    // Its own process group, so a time limit kills ssh and the remote helpers with it.
    std::os::unix::process::CommandExt::process_group(&mut c, 0);
    c
}

/// The user's known hosts: an ssh URL's host key is checked against them (and the system's),
/// never accepted unseen.
fn known_hosts() -> Option<PathBuf> {
    let home = std::env::var_os("HOME")?;
    Some(Path::new(&home).join(".ssh/known_hosts"))
}

/// The ssh git runs: no user configuration (`-F /dev/null`), never a prompt, host keys
/// checked strictly.
fn ssh_command(known_hosts: Option<&Path>) -> String {
    let mut s = "ssh -F /dev/null -o BatchMode=yes -o StrictHostKeyChecking=yes".to_owned();
    if let Some(k) = known_hosts {
        let quoted = k.to_string_lossy().replace('\'', r"'\''");
        s.push_str(&format!(" -o UserKnownHostsFile='{quoted}'"));
    }
    s
}

/// Runs `cmd` to its end within `limits.timeout`, killing its process group at the limit, and
/// while `watch` is given, when that directory grows past `limits.max_bytes`.
fn run(
    mut cmd: Command,
    action: &'static str,
    url: &str,
    limits: &GitLimits,
    watch: Option<&Path>,
) -> Result<Vec<u8>, GitError> {
    cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
    let mut child = cmd.spawn().map_err(|source| GitError::Spawn {
        action,
        url: redact(url),
        source,
    })?;
    let reader = |mut r: Box<dyn Read + Send>, cap: u64| {
        std::thread::spawn(move || {
            let mut buf = Vec::new();
            let _ = (&mut r).take(cap).read_to_end(&mut buf);
            // What is over the cap is drained, so git never blocks on a full pipe.
            let _ = std::io::copy(&mut r, &mut std::io::sink());
            buf
        })
    };
    let out = child
        .stdout
        .take()
        .map(|o| reader(Box::new(o), limits.max_bytes));
    let err = child.stderr.take().map(|e| reader(Box::new(e), 64 * 1024));
    let started = Instant::now();
    let mut last_check = started;
    let mut over = None;
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break Some(status),
            Ok(None) => {}
            Err(_) => break None,
        }
        if started.elapsed() > limits.timeout {
            over = Some(GitError::Timeout {
                action,
                url: redact(url),
                seconds: limits.timeout.as_secs(),
            });
        } else if let Some(dir) = watch
            && last_check.elapsed() > Duration::from_millis(200)
        {
            last_check = Instant::now();
            if dir_size(dir) > limits.max_bytes {
                over = Some(GitError::TooLarge {
                    url: redact(url),
                    what: "the fetched repository",
                    limit: limits.max_bytes,
                });
            }
        }
        if let Some(e) = over {
            let pid = rustix::process::Pid::from_raw(child.id() as i32);
            if let Some(pid) = pid {
                let _ = rustix::process::kill_process_group(pid, rustix::process::Signal::KILL);
            }
            let _ = child.wait();
            return Err(e);
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    let stdout = out.and_then(|t| t.join().ok()).unwrap_or_default();
    let stderr = err.and_then(|t| t.join().ok()).unwrap_or_default();
    // A transfer quicker than the first look is measured at its end.
    if let Some(dir) = watch
        && dir_size(dir) > limits.max_bytes
    {
        return Err(GitError::TooLarge {
            url: redact(url),
            what: "the fetched repository",
            limit: limits.max_bytes,
        });
    }
    match status {
        Some(s) if s.success() => Ok(stdout),
        s => {
            let text = String::from_utf8_lossy(&stderr);
            let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
            Err(GitError::Failed {
                action,
                url: redact(url),
                status: s.map_or("not run".to_owned(), |s| s.to_string()),
                stderr: redact_text(&lines[lines.len().saturating_sub(6)..].join(" / "), url),
            })
        }
    }
}

/// `text` with the URL's credentials, if git repeated them, hidden.
fn redact_text(text: &str, url: &str) -> String {
    let shown = redact(url);
    if shown == url {
        text.to_owned()
    } else {
        text.replace(url, &shown)
    }
}

fn dir_size(dir: &Path) -> u64 {
    walkdir::WalkDir::new(dir)
        .into_iter()
        .filter_map(|e| e.ok())
        .filter_map(|e| e.metadata().ok())
        .filter(|m| m.is_file())
        .map(|m| m.len())
        .sum()
}

fn is_commit_id(s: &str) -> bool {
    (s.len() == 40 || s.len() == 64) && s.bytes().all(|b| b.is_ascii_hexdigit())
}

/// The commit `r`'s reference names on its remote, found by `git ls-remote` (no objects are
/// fetched). A full commit id is taken as it is, and checked when it is fetched.
pub fn resolve(r: &GitRef, access: &Access, limits: &GitLimits) -> Result<Resolved, GitError> {
    check_access(r, access)?;
    if is_commit_id(&r.reference) {
        let commit = r.reference.to_ascii_lowercase();
        return Ok(Resolved {
            fetch: commit.clone(),
            commit,
        });
    }
    let mut cmd = git(access);
    cmd.args(["ls-remote", "--"]).arg(&r.remote);
    let out = run(cmd, "list the refs of", &r.remote, limits, None)?;
    let text = String::from_utf8_lossy(&out);
    let refs: Vec<(&str, &str)> = text.lines().filter_map(|l| l.split_once('\t')).collect();
    let find = |name: &str| refs.iter().find(|(_, n)| *n == name).map(|(c, _)| *c);
    let candidates: Vec<String> = if r.reference.is_empty() {
        vec!["HEAD".to_owned()]
    } else if r.reference.starts_with("refs/") {
        vec![r.reference.clone()]
    } else {
        vec![
            format!("refs/tags/{}", r.reference),
            format!("refs/heads/{}", r.reference),
            format!("refs/{}", r.reference),
        ]
    };
    for name in candidates {
        // An annotated tag's commit is on the line of its peeled name.
        let commit = find(&format!("{name}^{{}}")).or_else(|| find(&name));
        if let Some(c) = commit.filter(|c| is_commit_id(c)) {
            return Ok(Resolved {
                commit: c.to_owned(),
                fetch: name,
            });
        }
    }
    Err(GitError::NoRef {
        url: redact(&r.remote),
        reference: if r.reference.is_empty() {
            "HEAD".to_owned()
        } else {
            r.reference.clone()
        },
    })
}

fn check_access(r: &GitRef, access: &Access) -> Result<(), GitError> {
    if r.scheme == Scheme::Ssh && access.ssh_agent.is_none() {
        return Err(GitError::NoAgent {
            url: redact(&r.remote),
        });
    }
    Ok(())
}

/// Whether `commit` starts with the `--checksum` `want` (BuildKit takes a prefix).
pub fn check_checksum(r: &GitRef, resolved: &Resolved, want: &str) -> Result<(), GitError> {
    let want = want.to_ascii_lowercase();
    if want.is_empty() || !resolved.commit.starts_with(&want) {
        return Err(GitError::Checksum {
            url: redact(&r.remote),
            reference: if r.reference.is_empty() {
                "HEAD".to_owned()
            } else {
                r.reference.clone()
            },
            commit: resolved.commit.clone(),
            want,
        });
    }
    Ok(())
}

/// The resolved commit fetched (depth 1) into `dir` and checked out there; its files' times
/// set to the commit's time and their modes to git's 644/755. Without `keep_git_dir` the
/// `.git` directory is removed.
pub fn checkout(
    r: &GitRef,
    resolved: &Resolved,
    keep_git_dir: bool,
    dir: PathBuf,
    access: &Access,
    limits: &GitLimits,
) -> Result<Checkout, GitError> {
    check_access(r, access)?;
    let io = |action: &'static str, path: &Path| {
        let path = path.to_path_buf();
        move |source| GitError::Io {
            action,
            path,
            source,
        }
    };
    let templates = dir.join("templates");
    let work = dir.join("tree");
    std::fs::create_dir_all(&templates).map_err(io("create", &templates))?;
    let mut out = Checkout {
        dir,
        tree: work.clone(),
        commit_time: 0,
    };
    let url = r.remote.as_str();
    // No templates: the repository starts with no hooks or config but git's own.
    let mut cmd = git(access);
    cmd.args(["init", "-q"])
        .arg(format!("--template={}", templates.display()))
        .arg("--")
        .arg(&work);
    run(cmd, "make a repository for", url, limits, None)?;
    let in_work = |access: &Access| {
        let mut c = git(access);
        c.arg("-C").arg(&work);
        c
    };
    let mut cmd = in_work(access);
    cmd.args([
        "fetch",
        "-q",
        "--depth=1",
        "--no-tags",
        "--no-recurse-submodules",
        "--no-write-fetch-head",
        "--",
    ])
    .arg(url)
    .arg(format!("+{}:refs/cairn/fetched", resolved.fetch));
    run(cmd, "fetch", url, limits, Some(&work.join(".git")))?;
    let mut cmd = in_work(access);
    cmd.args(["rev-parse", "--verify", "-q", "refs/cairn/fetched^{commit}"]);
    let got = String::from_utf8_lossy(&run(cmd, "read the commit of", url, limits, None)?)
        .trim()
        .to_owned();
    if got != resolved.commit {
        return Err(GitError::Moved {
            url: redact(url),
            reference: resolved.fetch.clone(),
            expected: resolved.commit.clone(),
            got,
        });
    }
    // The files' sizes are known before they are written: a small pack of one huge,
    // compressible file is stopped here.
    let mut cmd = in_work(access);
    cmd.args(["ls-tree", "-r", "-l", "-z", "--", &resolved.commit]);
    let listing = run(cmd, "list the files of", url, limits, None)?;
    let total: u64 = listing
        .split(|&b| b == 0)
        .filter_map(|entry| {
            let meta = std::str::from_utf8(entry.split(|&b| b == b'\t').next()?).ok()?;
            meta.split_whitespace().nth(3)?.parse::<u64>().ok()
        })
        .sum();
    if total > limits.max_bytes {
        return Err(GitError::TooLarge {
            url: redact(url),
            what: "the checkout",
            limit: limits.max_bytes,
        });
    }
    if !r.subdir.is_empty() {
        let mut cmd = in_work(access);
        cmd.args(["cat-file", "-t", "--"])
            .arg(format!("{}:{}", resolved.commit, r.subdir));
        let kind = run(cmd, "find the subdirectory of", url, limits, None).ok();
        if kind
            .as_deref()
            .map(|k| String::from_utf8_lossy(k).trim().to_owned())
            != Some("tree".to_owned())
        {
            return Err(GitError::Subdir {
                url: redact(url),
                subdir: r.subdir.clone(),
                commit: resolved.commit.clone(),
            });
        }
    }
    let mut cmd = in_work(access);
    cmd.args(["checkout", "-q", "--detach", &resolved.commit, "--"]);
    run(cmd, "check out", url, limits, None)?;
    let mut cmd = in_work(access);
    cmd.args(["show", "-s", "--format=%ct", &resolved.commit, "--"]);
    let time = run(cmd, "read the commit time of", url, limits, None)?;
    let commit_time: i64 = String::from_utf8_lossy(&time).trim().parse().unwrap_or(0);
    if keep_git_dir {
        // The ref cairn fetched into is its own; the kept .git shows the commit as HEAD.
        let mut cmd = in_work(access);
        cmd.args(["update-ref", "-d", "refs/cairn/fetched"]);
        run(cmd, "tidy", url, limits, None)?;
    } else {
        let git_dir = work.join(".git");
        std::fs::remove_dir_all(&git_dir).map_err(io("remove", &git_dir))?;
    }
    normalize(&work, commit_time)?;
    let tree = if r.subdir.is_empty() {
        work
    } else {
        work.join(&r.subdir)
    };
    out.tree = tree;
    out.commit_time = commit_time;
    Ok(out)
}

/// Every entry below `root`: files 644 or 755 (as git records them, whatever the umask),
/// directories 755, and the commit's time, so two checkouts of one commit are alike.
fn normalize(root: &Path, time: i64) -> Result<(), GitError> {
    use std::os::unix::fs::PermissionsExt;
    let ts = rustix::fs::Timespec {
        tv_sec: time as _,
        tv_nsec: 0,
    };
    let times = rustix::fs::Timestamps {
        last_access: ts,
        last_modification: ts,
    };
    // Children before their directory, whose time their changes would move.
    for e in walkdir::WalkDir::new(root).contents_first(true) {
        let e = e.map_err(|e| GitError::Io {
            action: "walk",
            path: root.to_path_buf(),
            source: e.into(),
        })?;
        let path = e.path();
        let ft = e.file_type();
        let io = |action| {
            let path = path.to_path_buf();
            move |source| GitError::Io {
                action,
                path,
                source,
            }
        };
        if !ft.is_symlink() {
            let meta = e.metadata().map_err(|e| GitError::Io {
                action: "stat",
                path: path.to_path_buf(),
                source: e.into(),
            })?;
            let mode = if ft.is_dir() || meta.permissions().mode() & 0o111 != 0 {
                0o755
            } else {
                0o644
            };
            std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
                .map_err(io("chmod"))?;
        }
        rustix::fs::utimensat(
            rustix::fs::CWD,
            path,
            &times,
            rustix::fs::AtFlags::SYMLINK_NOFOLLOW,
        )
        .map_err(|e| io("set the time of")(e.into()))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ssh_command_quotes_the_known_hosts_path() {
        for (path, want) in [
            (
                None,
                "ssh -F /dev/null -o BatchMode=yes -o StrictHostKeyChecking=yes",
            ),
            (
                Some("/h/it's/k"),
                "ssh -F /dev/null -o BatchMode=yes -o StrictHostKeyChecking=yes -o \
                 UserKnownHostsFile='/h/it'\\''s/k'",
            ),
        ] {
            assert_eq!(ssh_command(path.map(Path::new)), want);
        }
    }

    #[test]
    fn commit_ids() {
        for (s, is) in [
            ("0123456789abcdef0123456789abcdef01234567", true),
            ("0123456789abcdef0123456789abcdef0123456", false),
            ("main", false),
            ("g123456789abcdef0123456789abcdef01234567", false),
        ] {
            assert_eq!(is_commit_id(s), is, "{s}");
        }
    }
}
