//! BuildKit's Dockerfile frontend tests (moby/buildkit frontend/dockerfile/*_test.go at commit
//! 73ed6825c4b7), ported as a table: each case is what one Go test builds and asserts, in
//! cairn's own words. Every Go test is listed in tests/buildkit-frontend-cases.md with its
//! status; a case cairn gets wrong today is marked `known` with the defect, is still run, and
//! must still fail (so whoever fixes the defect is told to drop the mark).
#![allow(clippy::unwrap_used)]

use std::fs;
use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};

use cairn_e2e::{Store, is_root, loaded_busybox, texts};

/// What goes in a case's build context besides the Dockerfile.
enum Entry {
    File(&'static str, &'static str, u32),
    Dir(&'static str, u32),
    Link(&'static str, &'static str),
    /// A tar archive (gzipped if the flag says so) of these entries, see [`tar_of`].
    Tar(&'static str, &'static [(&'static str, &'static str)], bool),
    /// A unix socket (left behind by a listener that is gone).
    Socket(&'static str),
}

/// What a case asserts about its build.
enum Check {
    /// The build fails and its error output contains this.
    Fails(&'static str),
    /// The build's output (standard error) contains this.
    Says(&'static str),
    /// The local output has a regular file here with this content.
    Has(&'static str, &'static str),
    /// The local output has a file here whose content contains this.
    Contains(&'static str, &'static str),
    /// The local output has a file here whose content does not contain this.
    Lacks(&'static str, &'static str),
    /// The local output's file here is (true) or is not (false) as the first build made it.
    Unchanged(&'static str, bool),
    /// The local output has nothing here.
    No(&'static str),
    /// The local output has a symlink here pointing at this.
    LinkTo(&'static str, &'static str),
    /// The local output has a file here modified at this time (seconds since the epoch).
    MTime(&'static str, u64),
    /// The local output has a file or directory here with these permission bits.
    Mode(&'static str, u32),
    /// `cairn inspect` of the image: the string at this JSON pointer contains this.
    ConfigHas(&'static str, &'static str),
    /// `cairn inspect` of the image: the value at this JSON pointer, as JSON text.
    Config(&'static str, &'static str),
}

struct Case {
    name: &'static str,
    dockerfile: &'static str,
    /// The Dockerfile's name; another name than `Dockerfile` gets a `Dockerfile` symlink to it.
    dockerfile_name: &'static str,
    /// Whether `Dockerfile` is made a symlink to another `dockerfile_name`.
    dockerfile_link: bool,
    /// Entries of a first context, built (and required to build) before the case's own.
    before: Vec<Entry>,
    /// Images built (from a context holding only this Dockerfile) and tagged before the case,
    /// each also written as an OCI layout to `{tmp}/NAME`.
    images: Vec<(&'static str, &'static str)>,
    /// Whether the case gets a store of its own (for cache mounts no other case touched).
    own_store: bool,
    /// Flags of a first build of the case's context, made before the one checked.
    before_flags: Option<Vec<&'static str>>,
    entries: Vec<Entry>,
    flags: Vec<&'static str>,
    checks: Vec<Check>,
    /// The defect that makes this case fail today; the case must keep failing until fixed.
    known: Option<&'static str>,
    /// Whom `known` applies to: `Some(true)` root only, `Some(false)` the unprivileged user
    /// only, `None` both.
    known_for_root: Option<bool>,
    /// A race this case hits only sometimes, in the run named (true: root): the case runs and
    /// its outcome is reported, but not asserted.
    flaky: Option<(bool, &'static str)>,
}

/// A case named after its Go test function: the Dockerfile alone must build.
fn case(name: &'static str, dockerfile: &'static str) -> Case {
    Case {
        name,
        dockerfile,
        dockerfile_name: "Dockerfile",
        dockerfile_link: true,
        before: Vec::new(),
        before_flags: None,
        own_store: false,
        images: Vec::new(),
        entries: Vec::new(),
        flags: Vec::new(),
        checks: Vec::new(),
        known: None,
        known_for_root: None,
        flaky: None,
    }
}

impl Case {
    fn file(mut self, path: &'static str, content: &'static str) -> Case {
        self.entries.push(Entry::File(path, content, 0o644));
        self
    }
    fn file_mode(mut self, path: &'static str, content: &'static str, mode: u32) -> Case {
        self.entries.push(Entry::File(path, content, mode));
        self
    }
    fn dir(mut self, path: &'static str, mode: u32) -> Case {
        self.entries.push(Entry::Dir(path, mode));
        self
    }
    fn dockerfile_at(mut self, name: &'static str) -> Case {
        self.dockerfile_name = name;
        self
    }
    fn tar(mut self, path: &'static str, entries: &'static [(&'static str, &'static str)]) -> Case {
        self.entries
            .push(Entry::Tar(path, entries, path.ends_with(".gz")));
        self
    }
    fn mtime(mut self, path: &'static str, secs: u64) -> Case {
        self.checks.push(Check::MTime(path, secs));
        self
    }
    /// The Dockerfile goes under this name, with no `Dockerfile` beside it.
    fn dockerfile_only_at(mut self, name: &'static str) -> Case {
        self.dockerfile_name = name;
        self.dockerfile_link = false;
        self
    }
    /// First builds the context with these entries (with `file`'s defaults) in the same store.
    fn first_with(mut self, files: &[(&'static str, &'static str)]) -> Case {
        for (p, content) in files {
            self.before.push(Entry::File(p, content, 0o644));
        }
        self
    }
    /// First builds the same context with these flags, in the same store.
    fn first_flags(mut self, flags: &[&'static str]) -> Case {
        self.before_flags = Some(flags.to_vec());
        self
    }
    /// First builds `dockerfile` as image `name` (use names no other case uses).
    fn image_first(mut self, name: &'static str, dockerfile: &'static str) -> Case {
        self.images.push((name, dockerfile));
        self
    }
    fn own_store(mut self) -> Case {
        self.own_store = true;
        self
    }
    /// The file is the same as the first build's (see `first_with`, `first_flags`).
    fn unchanged(mut self, path: &'static str) -> Case {
        self.checks.push(Check::Unchanged(path, true));
        self
    }
    /// The file differs from the first build's.
    fn changed(mut self, path: &'static str) -> Case {
        self.checks.push(Check::Unchanged(path, false));
        self
    }
    fn socket(mut self, path: &'static str) -> Case {
        self.entries.push(Entry::Socket(path));
        self
    }
    fn link(mut self, path: &'static str, target: &'static str) -> Case {
        self.entries.push(Entry::Link(path, target));
        self
    }
    /// Flags for `cairn build`; `{ctx}` stands for the context directory.
    fn flags(mut self, flags: &[&'static str]) -> Case {
        self.flags.extend_from_slice(flags);
        self
    }
    fn fails(mut self, error: &'static str) -> Case {
        self.checks.push(Check::Fails(error));
        self
    }
    fn says(mut self, text: &'static str) -> Case {
        self.checks.push(Check::Says(text));
        self
    }
    fn has(mut self, path: &'static str, content: &'static str) -> Case {
        self.checks.push(Check::Has(path, content));
        self
    }
    fn contains(mut self, path: &'static str, text: &'static str) -> Case {
        self.checks.push(Check::Contains(path, text));
        self
    }
    fn lacks(mut self, path: &'static str, text: &'static str) -> Case {
        self.checks.push(Check::Lacks(path, text));
        self
    }
    fn no(mut self, path: &'static str) -> Case {
        self.checks.push(Check::No(path));
        self
    }
    fn link_to(mut self, path: &'static str, target: &'static str) -> Case {
        self.checks.push(Check::LinkTo(path, target));
        self
    }
    fn mode(mut self, path: &'static str, mode: u32) -> Case {
        self.checks.push(Check::Mode(path, mode));
        self
    }
    fn config(mut self, pointer: &'static str, json: &'static str) -> Case {
        self.checks.push(Check::Config(pointer, json));
        self
    }
    fn config_has(mut self, pointer: &'static str, text: &'static str) -> Case {
        self.checks.push(Check::ConfigHas(pointer, text));
        self
    }
    /// Known as root only (ids mapped to a high host range) or only unprivileged.
    fn known_when_root(mut self, root: bool, defect: &'static str) -> Case {
        self.known_for_root = Some(root);
        self.known(defect)
    }
    fn flaky_when_root(mut self, root: bool, defect: &'static str) -> Case {
        self.flaky = Some((root, defect));
        self
    }
    fn known(mut self, defect: &'static str) -> Case {
        self.known = Some(defect);
        self
    }

    /// Builds the case in `store` as image `tag` and checks it; the error says what differed.
    fn run(&self, shared: &Store, tag: &str, url: &str) -> Result<(), String> {
        // Cache mounts are the store's: a case that relies on theirs being fresh has its own.
        let own = self.own_store.then(loaded_busybox);
        let store = own.as_ref().unwrap_or(shared);
        let ctx = tempfile::tempdir().unwrap();
        let root = ctx.path().join("ctx");
        let tmp = ctx.path().to_str().unwrap();
        for (name, dockerfile) in &self.images {
            let dir = ctx.path().join(format!("{name}.ctx"));
            fs::create_dir(&dir).unwrap();
            fs::write(dir.join("Dockerfile"), dockerfile).unwrap();
            let layout = format!("type=oci,dest={tmp}/{name}");
            let mut cmd = store.cmd(&["build", "-q", "-t", name, "-o", &layout]);
            let result = cmd.arg(&dir).output().unwrap();
            if !result.status.success() {
                return Err(format!("building {name} failed:\n{}", texts(&result).1));
            }
        }
        if !self.before.is_empty() || self.before_flags.is_some() {
            let entries = if self.before.is_empty() {
                &self.entries
            } else {
                &self.before
            };
            self.write_context(&root, entries, url);
            let mut cmd = store.cmd(&["build", "--progress", "plain", "-t", tag]);
            for f in self.before_flags.iter().flatten() {
                cmd.arg(f.replace("{ctx}", root.to_str().unwrap()));
            }
            let first = ctx.path().join("first");
            cmd.arg("-o")
                .arg(format!("type=local,dest={}", first.display()));
            let result = cmd.arg(&root).output().unwrap();
            if !result.status.success() {
                return Err(format!("the first build failed:\n{}", texts(&result).1));
            }
            fs::remove_dir_all(&root).unwrap();
        }
        self.write_context(&root, &self.entries, url);
        self.build_and_check(store, tag, &root, &ctx.path().join("out"), tmp)
    }

    /// Makes the context directory `root`: the Dockerfile and `entries`.
    fn write_context(&self, root: &Path, entries: &[Entry], url: &str) {
        fs::create_dir(root).unwrap();
        let dockerfile = self.dockerfile.replace("{url}", url);
        let at = root.join(self.dockerfile_name);
        fs::create_dir_all(at.parent().unwrap()).unwrap();
        fs::write(at, dockerfile).unwrap();
        if self.dockerfile_name != "Dockerfile" && self.dockerfile_link {
            std::os::unix::fs::symlink(self.dockerfile_name, root.join("Dockerfile")).unwrap();
        }
        for e in entries {
            match *e {
                Entry::File(p, content, mode) => {
                    let p = root.join(p);
                    fs::create_dir_all(p.parent().unwrap()).unwrap();
                    fs::write(&p, content).unwrap();
                    fs::set_permissions(&p, fs::Permissions::from_mode(mode)).unwrap();
                }
                Entry::Dir(p, mode) => {
                    let p = root.join(p);
                    fs::create_dir_all(&p).unwrap();
                    fs::set_permissions(&p, fs::Permissions::from_mode(mode)).unwrap();
                }
                Entry::Link(p, target) => {
                    let p = root.join(p);
                    fs::create_dir_all(p.parent().unwrap()).unwrap();
                    std::os::unix::fs::symlink(target, p).unwrap();
                }
                Entry::Tar(p, entries, gz) => fs::write(root.join(p), tar_of(entries, gz)).unwrap(),
                Entry::Socket(p) => {
                    drop(std::os::unix::net::UnixListener::bind(root.join(p)).unwrap());
                }
            }
        }
    }

    /// Builds the context at `root` (locally exported to `out` when a check reads files).
    fn build_and_check(
        &self,
        store: &Store,
        tag: &str,
        root: &Path,
        out: &Path,
        tmp: &str,
    ) -> Result<(), String> {
        let mut cmd = store.cmd(&["build", "--progress", "plain", "-t", tag]);
        let ctx_text = root.to_str().unwrap();
        for f in &self.flags {
            cmd.arg(f.replace("{ctx}", ctx_text).replace("{tmp}", tmp));
        }
        let wants_fs = self.checks.iter().any(|c| {
            matches!(
                c,
                Check::Has(..)
                    | Check::Unchanged(..)
                    | Check::Contains(..)
                    | Check::Lacks(..)
                    | Check::No(_)
                    | Check::LinkTo(..)
                    | Check::Mode(..)
                    | Check::MTime(..)
            )
        });
        if wants_fs {
            cmd.arg("-o")
                .arg(format!("type=local,dest={}", out.display()));
        }
        let result = cmd.arg(root).output().unwrap();
        let (_, stderr) = texts(&result);
        let tail = || -> String {
            let lines: Vec<&str> = stderr.lines().collect();
            lines[lines.len().saturating_sub(15)..].join("\n")
        };
        let errors: Vec<&str> = self
            .checks
            .iter()
            .filter_map(|c| match c {
                Check::Fails(e) => Some(*e),
                _ => None,
            })
            .collect();
        let missing = errors.iter().find(|e| !stderr.contains(**e));
        match (errors.first(), result.status.success()) {
            (Some(_), true) => return Err("the build succeeded; it should fail".into()),
            (Some(_), false) if missing.is_some() => {
                let e = missing.unwrap();
                return Err(format!("the build failed without {e:?}:\n{}", tail()));
            }
            (Some(_), false) => return Ok(()),
            (None, false) => return Err(format!("the build failed:\n{}", tail())),
            (None, true) => {}
        }
        let mut config = None;
        for check in &self.checks {
            match *check {
                Check::Fails(_) => {}
                Check::Says(text) if !stderr.contains(text) => {
                    return Err(format!("the build did not say {text:?}:\n{}", tail()));
                }
                Check::Says(_) => {}
                Check::Has(p, want) => match fs::read(out.join(p)) {
                    Ok(got) if got == want.as_bytes() => {}
                    Ok(got) => {
                        let got = String::from_utf8_lossy(&got);
                        return Err(format!("{p} holds {got:?}, not {want:?}"));
                    }
                    Err(e) => return Err(format!("{p}: {e}")),
                },
                Check::Contains(p, text) | Check::Lacks(p, text) => {
                    let got = fs::read_to_string(out.join(p)).map_err(|e| format!("{p}: {e}"))?;
                    let want = matches!(check, Check::Contains(..));
                    if got.contains(text) != want {
                        return Err(format!(
                            "{p} holds {got:?}: contains {text:?} is not {want}"
                        ));
                    }
                }
                Check::Unchanged(p, same) => {
                    let first = out.with_file_name("first").join(p);
                    let (a, b) = (fs::read(first), fs::read(out.join(p)));
                    let (Ok(a), Ok(b)) = (a, b) else {
                        return Err(format!("{p} is missing from a build"));
                    };
                    if (a == b) != same {
                        return Err(format!("{p} unchanged is not {same}: {a:?} then {b:?}"));
                    }
                }
                Check::No(p) => {
                    if fs::symlink_metadata(out.join(p)).is_ok() {
                        return Err(format!("{p} is there; it should not be"));
                    }
                }
                Check::LinkTo(p, want) => match fs::read_link(out.join(p)) {
                    Ok(got) if got == Path::new(want) => {}
                    Ok(got) => return Err(format!("{p} points at {got:?}, not {want:?}")),
                    Err(e) => return Err(format!("{p} as a symlink: {e}")),
                },
                Check::MTime(p, want) => match fs::symlink_metadata(out.join(p)) {
                    Ok(m) if m.mtime() as u64 == want => {}
                    Ok(m) => return Err(format!("{p} was modified at {}, not {want}", m.mtime())),
                    Err(e) => return Err(format!("{p}: {e}")),
                },
                Check::Mode(p, want) => match fs::symlink_metadata(out.join(p)) {
                    Ok(m) if m.permissions().mode() & 0o7777 == want => {}
                    Ok(m) => {
                        let got = m.permissions().mode() & 0o7777;
                        return Err(format!("{p} has mode {got:o}, not {want:o}"));
                    }
                    Err(e) => return Err(format!("{p}: {e}")),
                },
                Check::ConfigHas(pointer, text) => {
                    let config = config.get_or_insert_with(|| store.inspect(tag));
                    let got = config
                        .pointer(pointer)
                        .and_then(|v| v.as_str())
                        .unwrap_or("");
                    if !got.contains(text) {
                        return Err(format!("{pointer} is {got:?}, without {text:?}"));
                    }
                }
                Check::Config(pointer, want) => {
                    let config = config.get_or_insert_with(|| store.inspect(tag));
                    let want: serde_json::Value = serde_json::from_str(want).unwrap();
                    let got = config.pointer(pointer).cloned().unwrap_or_default();
                    if got != want {
                        return Err(format!("{pointer} is {got}, not {want}"));
                    }
                }
            }
        }
        Ok(())
    }
}

/// An archive of `entries`: a name ending in `/` is a directory (0755), content `-> T` a
/// symlink to T, `=> T` a hard link to T, anything else a file (0644) with that content.
fn tar_of(entries: &[(&str, &str)], gz: bool) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    for (name, content) in entries {
        let mut h = tar::Header::new_ustar();
        h.set_mtime(1_600_000_000);
        h.set_uid(0);
        h.set_gid(0);
        if name.ends_with('/') {
            h.set_entry_type(tar::EntryType::Directory);
            h.set_mode(0o755);
            h.set_size(0);
            b.append_data(&mut h, name, std::io::empty()).unwrap();
        } else if let Some(target) = content.strip_prefix("-> ") {
            h.set_entry_type(tar::EntryType::Symlink);
            h.set_mode(0o777);
            h.set_size(0);
            b.append_link(&mut h, name, target).unwrap();
        } else if let Some(target) = content.strip_prefix("=> ") {
            h.set_entry_type(tar::EntryType::Link);
            h.set_mode(0o644);
            h.set_size(0);
            b.append_link(&mut h, name, target).unwrap();
        } else {
            h.set_entry_type(tar::EntryType::Regular);
            h.set_mode(0o644);
            h.set_size(content.len() as u64);
            b.append_data(&mut h, name, content.as_bytes()).unwrap();
        }
    }
    let bytes = b.into_inner().unwrap();
    if !gz {
        return bytes;
    }
    let mut z = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    z.write_all(&bytes).unwrap();
    z.finish().unwrap()
}

/// The archive BuildKit's ADD tests serve and put in contexts: `foo` holding `content0`.
const FOO_TAR: &[(&str, &str)] = &[("foo", "content0")];

/// `Last-Modified` of the server's `/`, as seconds since the epoch.
const SERVED_MTIME: u64 = 1_445_412_480;

/// Serves the files the ADD cases fetch over plain HTTP on a loopback port (the stand-in for
/// BuildKit's test server); returns its base URL. Serves until the test process ends.
fn serve() -> String {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(mut conn) = conn else { continue };
            let mut reader = BufReader::new(conn.try_clone().unwrap());
            let mut line = String::new();
            if reader.read_line(&mut line).is_err() {
                continue;
            }
            // The headers are read and ignored.
            let mut h = String::new();
            while reader.read_line(&mut h).is_ok_and(|n| n > 2) {
                h.clear();
            }
            let mut words = line.split_whitespace();
            let (method, path) = (words.next().unwrap_or(""), words.next().unwrap_or(""));
            let (body, extra): (Vec<u8>, &str) = match path {
                "/foo" => (b"content1".to_vec(), ""),
                "/" => (
                    b"content2".to_vec(),
                    "Last-Modified: Wed, 21 Oct 2015 07:28:00 GMT\r\n",
                ),
                "/t.tar.gz" => (tar_of(FOO_TAR, true), ""),
                _ => {
                    let _ = conn.write_all(
                        b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
                    );
                    continue;
                }
            };
            let head = format!(
                "HTTP/1.1 200 OK\r\nContent-Length: {}\r\n{extra}Connection: close\r\n\r\n",
                body.len()
            );
            let _ = conn.write_all(head.as_bytes());
            if method != "HEAD" {
                let _ = conn.write_all(&body);
            }
        }
    });
    url
}

/// The ported cases, in the order of tests/buildkit-frontend-cases.md.
fn cases() -> Vec<Case> {
    let mut all = Vec::new();
    all.extend(copy_cases());
    all.extend(add_cases());
    all.extend(core_cases());
    all.extend(args_cases());
    all.extend(workdir_and_cmd_cases());
    all.extend(mount_cases());
    all.extend(multistage_and_onbuild_cases());
    all.extend(dockerignore_and_heredoc_cases());
    all.extend(parents_history_image_cases());
    all.extend(secrets_and_platform_cases());
    all.extend(errors_exclude_run_cases());
    all
}

fn copy_cases() -> Vec<Case> {
    vec![
        case(
            "testDockerfileCopyFromArgs",
            "FROM scratch\nCOPY --from=$FOO . .\n",
        )
        .fails("variable expansion is not supported for --from")
        .known(FROM_EXPANDS),
        case(
            "testEmptyDestDir",
            "FROM busybox\nENV empty=\"\"\nCOPY testfile $empty\n\
             RUN [ \"$(cat testfile)\" == \"contents0\" ]\n",
        )
        .file("testfile", "contents0"),
        case(
            "testPreserveDestDirSlash",
            "FROM busybox\nCOPY testfile /sample/\n\
             RUN [ \"$(cat /sample/testfile)\" == \"contents0\" ]\n",
        )
        .file("testfile", "contents0"),
        case(
            "testCopyLinkDotDestDir",
            "FROM busybox\nWORKDIR /var/www\nCOPY --link testfile .\n\
             RUN [ \"$(cat testfile)\" == \"contents0\" ]\n",
        )
        .file("testfile", "contents0"),
        case(
            "testCopyLinkEmptyDestDir",
            "FROM busybox\nWORKDIR /var/www\nENV empty=\"\"\nCOPY --link testfile $empty\n\
             RUN [ \"$(cat testfile)\" == \"contents0\" ]\n",
        )
        .file("testfile", "contents0"),
        // Owners survive COPY --from (new entries keep theirs, existing ones are left alone),
        // and --chown applies to what the copy makes only. Built by target, Dockerfile a link.
        case("testCopyChownExistingDir", COPY_CHOWN_EXISTING_DIR)
            .dockerfile_at("Dockerfile.web")
            .flags(&["--target", "copy_from"]),
        case("testCopyChownExistingDir", COPY_CHOWN_EXISTING_DIR)
            .dockerfile_at("Dockerfile.web")
            .flags(&["--target", "copy_from_chowned"]),
        // A changed file copied after the RUN keeps it cached; one copied before runs it again.
        case("testCopyWildcardCache", WILDCARD_CACHE)
            .first_with(&[
                ("foo1", "foo1-data"),
                ("foo2", "foo2-data"),
                ("bar", "bar-data"),
            ])
            .file("foo1", "foo1-data")
            .file("foo2", "foo2-data")
            .file("bar", "bar-data-mod")
            .unchanged("unique"),
        case("testCopyWildcardCache", WILDCARD_CACHE)
            .first_with(&[
                ("foo1", "foo1-data"),
                ("foo2", "foo2-data"),
                ("bar", "bar-data"),
            ])
            .file("foo1", "foo1-data")
            .file("foo2", "foo2-data-mod")
            .file("bar", "bar-data")
            .changed("unique"),
        case("testEmptyWildcard", "FROM scratch\nCOPY foo nomatch* /\n")
            .file("foo", "contents0")
            .has("foo", "contents0"),
        case(
            "testCopyChownCreateDest",
            "FROM busybox\nARG group\nENV owner user01\nRUN echo user:x:1000:1000::/:/bin/sh \
             >> /etc/passwd && echo user:x:1000: >> /etc/group\n\
             RUN echo user01:x:1001:1001::/:/bin/sh >> /etc/passwd && \
             echo user01:x:1001: >> /etc/group\nCOPY --chown=user:user . /dest\n\
             COPY --chown=${owner}:${group} . /dest01\n\
             RUN [ \"$(stat -c \"%U %G\" /dest)\" == \"user user\" ]\n\
             RUN [ \"$(stat -c \"%U %G\" /dest01)\" == \"user01 user\" ]\n",
        )
        // busybox has no adduser here: the users are written into passwd and group.
        .flags(&["--build-arg", "group=user"]),
        case(
            "testCopyThroughSymlinkContext",
            "FROM scratch\nCOPY link/foo .\n",
        )
        .link("link", "sub")
        .dir("sub", 0o700)
        .file("sub/foo", "contents")
        .has("foo", "contents"),
        case(
            "testCopyThroughSymlinkMultiStage",
            "FROM busybox AS build\nRUN mkdir -p /out/sub && ln -s /out/sub /sub && \
             ln -s out/sub /sub2 && echo -n \"data\" > /sub/foo\n\
             FROM scratch\nCOPY --from=build /sub/foo .\nCOPY --from=build /sub2/foo bar\n",
        )
        .has("foo", "data")
        .has("bar", "data"),
        case("testCopySocket", "FROM scratch\nCOPY . /\n")
            .socket("socket.sock")
            .has("socket.sock", "")
            .known("a socket in the context is left out, where BuildKit writes an empty file"),
        case(
            "testCopyFollowAllSymlinks",
            "FROM scratch\nCOPY foo /\nCOPY foo/sub bar\n",
        )
        .file("bar", "bar-contents")
        .dir("foo", 0o700)
        .link("foo/sub", "../bar")
        .has("bar", "bar-contents"),
        case(
            "testCopySymlinks",
            "FROM scratch\nCOPY foo /\nCOPY sub/l* alllinks/\n",
        )
        .file("bar", "bar-contents")
        .link("foo", "bar")
        .file("sub/lfile", "lfile-contents")
        .link("sub/l0", "subfile")
        .file("sub/subfile", "subfile-contents")
        .link("sub/l1", "second")
        .link("sub/second", "baz")
        .file("sub/baz", "baz-contents")
        .has("foo", "bar-contents")
        .has("alllinks/l0", "subfile-contents")
        .has("alllinks/lfile", "lfile-contents")
        .has("alllinks/l1", "baz-contents"),
        case(
            "testCopyChown",
            "FROM busybox AS base\nENV owner 1000\nRUN mkdir -m 0777 /out\n\
             RUN sed -i s/^nogroup:/nobody:/ /etc/group\n\
             COPY --chown=daemon foo /\nCOPY --chown=1000:nobody bar /baz\nARG group\n\
             COPY --chown=${owner}:${group} foo /foobis\n\
             RUN stat -c \"%U %G\" /foo  > /out/fooowner\n\
             RUN stat -c \"%u %G\" /baz/sub  > /out/subowner\n\
             RUN stat -c \"%u %G\" /foobis  > /out/foobisowner\n\
             FROM scratch\nCOPY --from=base /out /\n",
        )
        .file("foo", "foo-contents")
        .dir("bar", 0o700)
        .file("bar/sub", "")
        // The fixture's group 65534 is nogroup, the busybox image's is nobody: renamed.
        .flags(&["--build-arg", "group=nobody"])
        .has("fooowner", "daemon daemon\n")
        .has("subowner", "1000 nobody\n")
        .has("foobisowner", "1000 nobody\n"),
        case(
            "testCopyChmod",
            "FROM busybox AS base\nRUN mkdir -m 0777 /out\nCOPY --chmod=0644 foo /\n\
             COPY --chmod=777 bar /baz\nCOPY --chmod=0 foo /foobis\n\
             COPY --chmod=777 foo /parent/foo\nCOPY --chmod=770 foo /parent/sub/foo\n\
             ARG mode\nCOPY --chmod=${mode} foo /footer\n\
             RUN stat -c \"%04a\" /foo /baz /foobis /parent /parent/sub /footer > /out/perms\n\
             FROM scratch\nCOPY --from=base /out /\n",
        )
        .file_mode("foo", "foo-contents", 0o600)
        .file_mode("bar", "bar-contents", 0o700)
        .flags(&["--build-arg", "mode=755"])
        // BuildKit gives the parents a COPY makes the --chmod mode too.
        .has("perms", "0644\n0777\n0000\n0777\n0770\n0755\n")
        .known(
            "parents a COPY --chmod makes stay 0755 (deliberate in copy.rs: moby/buildkit#5943); \
             --chmod is being worked on in issue 15",
        ),
        case(
            "testCopyInvalidChmod",
            "FROM scratch\nCOPY --chmod=64a foo /\n",
        )
        .file("foo", "foo-contents")
        .fails("64a"),
        case(
            "testCopyInvalidChmod",
            "FROM scratch\nCOPY --chmod=10000 foo /\n",
        )
        .file("foo", "foo-contents")
        .fails("10000"),
        case(
            "testCopyOverrideFiles",
            "FROM scratch AS base\nCOPY sub sub\nCOPY sub sub\nCOPY files/foo.go dest/foo.go\n\
             COPY files/foo.go dest/foo.go\nCOPY files dest\n",
        )
        .file("sub/dir1/dir2/foo", "foo-contents")
        .file("files/foo.go", "foo.go-contents")
        .has("sub/dir1/dir2/foo", "foo-contents")
        .has("dest/foo.go", "foo.go-contents"),
        case(
            "testCopyVarSubstitution",
            "FROM scratch AS base\nENV FOO bar\nCOPY $FOO baz\n",
        )
        .file("bar", "bar-contents")
        .has("baz", "bar-contents"),
        case(
            "testCopyWildcards",
            "FROM scratch AS base\nCOPY *.go /gofiles/\nCOPY f*.go foo2.go\n\
             COPY sub/* /subdest/\nCOPY sub/*/dir2/foo /subdest2/\n\
             COPY sub/*/dir2/foo /subdest3/bar\nCOPY . all/\nCOPY sub/dir1/ subdest4\n\
             COPY sub/dir1/. subdest5\nCOPY sub/dir1 subdest6\n",
        )
        .file("foo.go", "foo-contents")
        .file("bar.go", "bar-contents")
        .file("sub/dir1/dir2/foo", "foo-contents")
        .has("gofiles/foo.go", "foo-contents")
        .has("gofiles/bar.go", "bar-contents")
        .has("foo2.go", "foo-contents")
        .has("subdest/dir2/foo", "foo-contents")
        .has("subdest2/foo", "foo-contents")
        .has("subdest3/bar", "foo-contents")
        .has("all/foo.go", "foo-contents")
        .has("subdest4/dir2/foo", "foo-contents")
        .has("subdest5/dir2/foo", "foo-contents")
        .has("subdest6/dir2/foo", "foo-contents"),
        case(
            "testCopyRelative",
            "FROM busybox\nWORKDIR /test1\nWORKDIR test2\n\
             RUN sh -c \"[ \"$PWD\" = '/test1/test2' ]\"\nCOPY foo ./\n\
             RUN sh -c \"[ $(cat /test1/test2/foo) = 'hello' ]\"\nADD foo ./bar/baz\n\
             RUN sh -c \"[ $(cat /test1/test2/bar/baz) = 'hello' ]\"\nCOPY foo ./bar/baz2\n\
             RUN sh -c \"[ $(cat /test1/test2/bar/baz2) = 'hello' ]\"\nWORKDIR ..\n\
             COPY foo ./\nRUN sh -c \"[ $(cat /test1/foo) = 'hello' ]\"\n\
             COPY foo /test3/\nRUN sh -c \"[ $(cat /test3/foo) = 'hello' ]\"\n\
             WORKDIR /test4\nCOPY . .\nRUN sh -c \"[ $(cat /test4/foo) = 'hello' ]\"\n\
             WORKDIR /test5/test6\nCOPY foo ../\n\
             RUN sh -c \"[ $(cat /test5/foo) = 'hello' ]\"\n",
        )
        .file("foo", "hello"),
        case(
            "testCopyUnicodePath",
            "FROM scratch\nCOPY test-äöü.txt /\nCOPY test-%C3%A4%C3%B6%C3%BC.txt /\n\
             COPY test+aou.txt /\n",
        )
        .file("test-äöü.txt", "foo")
        .file("test-%C3%A4%C3%B6%C3%BC.txt", "bar")
        .file("test+aou.txt", "baz")
        .has("test-äöü.txt", "foo")
        .has("test-%C3%A4%C3%B6%C3%BC.txt", "bar")
        .has("test+aou.txt", "baz"),
        // A symbolic --chmod gives what chmod(1) gives the same source (alpine there).
        case("testChmodNonOctal", CHMOD_NON_OCTAL).known_when_root(
            false,
            "unprivileged, COPY --from cannot read a directory of the stage its owner may not \
             read (mode 0124): permission denied",
        ),
        // A named context stands in for a stage: BuildKit's context:base=local:basedir.
        case(
            "testLocalCustomSessionID",
            "FROM scratch AS base\nFROM scratch\nCOPY out /out1\nCOPY --from=base /another /out2\n",
        )
        .file("out", "contents1")
        .file("basedir/another", "contents2")
        .flags(&["--build-context", "base={ctx}/basedir"])
        .has("out1", "contents1")
        .has("out2", "contents2")
        .known(NAMED_STAGE),
        // The named context reads its own .dockerignore.
        case(
            "testNamedLocalContext",
            "FROM busybox AS base\nRUN cat /etc/alpine-release > /out\nFROM scratch\n\
             COPY --from=base /o* /\n",
        )
        .file("basedir/out", "first")
        .file("basedir/out2", "second")
        .file("basedir/.dockerignore", "out2\n")
        .flags(&["--build-context", "base={ctx}/basedir"])
        .has("out", "first")
        .no("out2")
        .known(NAMED_STAGE),
        // BuildKit names the layout's manifest by digest; it holds one, which cairn takes.
        case(
            "testNamedOCILayoutContext",
            "FROM busybox AS base\nRUN cat /etc/alpine-release > out\n\
             FROM foo AS imported\nRUN echo -n $foo > outfoo\n\
             FROM scratch\nCOPY --from=base /test/o* /\nCOPY --from=imported /test/outfoo /\n",
        )
        .image_first(
            "bk-oci-layout-context",
            "FROM busybox:latest\nWORKDIR /test\nRUN sh -c \"echo -n first > out\"\n\
             RUN sh -c \"echo -n second > out2\"\nENV foo=bar\n",
        )
        .flags(&[
            "--build-context",
            "base=oci-layout://{tmp}/bk-oci-layout-context",
            "--build-context",
            "foo=oci-layout://{tmp}/bk-oci-layout-context",
        ])
        .has("out", "first")
        .has("out2", "second")
        .has("outfoo", "bar")
        .known(NAMED_STAGE),
        case(
            "testNamedOCILayoutContextExport",
            "FROM nonexistent AS base\n",
        )
        .image_first(
            "bk-oci-layout-export",
            "FROM scratch\nWORKDIR /test\nENV foo=bar\n",
        )
        .flags(&[
            "--build-context",
            "nonexistent=oci-layout://{tmp}/bk-oci-layout-export",
        ])
        .config("/Config/WorkingDir", r#""/test""#)
        .config("/Config/Env/1", r#""foo=bar""#),
    ]
}

fn add_cases() -> Vec<Case> {
    vec![
        case("testDockerfileADDFromURL", "FROM scratch\nADD {url}/foo /dest/\n")
            .has("dest/foo", "content1"),
        // A URL without a file name: the file is __unnamed__, dated by Last-Modified.
        case("testDockerfileADDFromURL", "FROM scratch\nADD {url}/ /dest/\n")
            .has("dest/__unnamed__", "content2")
            .mtime("dest/__unnamed__", SERVED_MTIME),
        case("testDockerfileAddArchive", "FROM scratch\nADD t.tar /\n")
            .tar("t.tar", FOO_TAR)
            .has("foo", "content0"),
        case("testDockerfileAddArchive", "FROM scratch\nADD t.tar.gz /\n")
            .tar("t.tar.gz", FOO_TAR)
            .has("foo", "content0"),
        case("testDockerfileAddArchive", "FROM scratch\nADD --unpack=false t.tar.gz /\n")
            .tar("t.tar.gz", FOO_TAR)
            .no("foo")
            .mode("t.tar.gz", 0o644),
        case("testDockerfileAddArchive", "FROM scratch\nCOPY t.tar.gz /\n")
            .tar("t.tar.gz", FOO_TAR)
            .no("foo")
            .mode("t.tar.gz", 0o644),
        case("testDockerfileAddArchive", "FROM scratch\nADD {url}/t.tar.gz /\n")
            .no("foo")
            .mode("t.tar.gz", 0o600),
        case("testDockerfileAddArchive", "FROM scratch\nADD --unpack=true {url}/t.tar.gz /dest/\n")
            .has("dest/foo", "content0"),
        case("testDockerfileAddArchive", "FROM scratch\nADD {url}/t.tar.gz /newname.tar.gz\n")
            .no("foo")
            .mode("newname.tar.gz", 0o600),
        case("testDockerfileAddArchiveWithImpliedParentDir", "FROM scratch\nADD t.tar.gz /\n")
            .tar("t.tar.gz", &[("etc/dnf/", ""), ("etc/dnf/dnf.conf", "content0")])
            .has("etc/dnf/dnf.conf", "content0"),
        // The second archive's var/run/... goes through the first's var/run -> /run symlink.
        case(
            "testDockerfileAddArchiveThroughAbsoluteSymlink",
            "FROM scratch\nADD rootfs.tar /\nADD payload.tar /\n",
        )
        .tar("rootfs.tar", &[("run/", ""), ("var/", ""), ("var/run", "-> /run")])
        .tar(
            "payload.tar",
            &[
                ("var/run/act/", ""),
                ("var/run/act/actions/", ""),
                ("var/run/act/actions/broad/", ""),
                ("var/run/act/actions/broad/.git/", ""),
                ("var/run/act/actions/broad/.git/HEAD", "ref: refs/heads/main\n"),
                ("var/run/act/actions/broad/.git/HEAD.link", "=> var/run/act/actions/broad/.git/HEAD"),
            ],
        )
        .has("run/act/actions/broad/.git/HEAD", "ref: refs/heads/main\n")
        .has("run/act/actions/broad/.git/HEAD.link", "ref: refs/heads/main\n"),
        // BuildKit reads the owners from a tar export; a RUN reads them here.
        case(
            "testDockerfileAddChownArchive",
            "FROM busybox\nADD --chown=100:200 t.tar /out/\n\
             RUN [ \"$(stat -c %u:%g /out /out/foo | tr '\\n' ' ')\" = '100:200 100:200 ' ]\n\
             RUN [ \"$(cat /out/foo)\" = content0 ]\n",
        )
        .tar("t.tar", FOO_TAR),
        case("testDockerfileAddArchiveWildcard", "FROM scratch\nADD *.tar /dest\n")
            .tar("t.tar", FOO_TAR)
            .tar("b.tar", &[("bar", "content1")])
            .has("dest/foo", "content0")
            .has("dest/bar", "content1"),
        case(
            "testDockerfileAddChownExpand",
            "FROM busybox\nRUN sed -i s/^nogroup:/nobody:/ /etc/group\nARG group\n\
             ENV owner 1000\nADD --chown=${owner}:${group} foo /\n\
             RUN [ \"$(stat -c \"%u %G\" /foo)\" == \"1000 nobody\" ]\n",
        )
        .file("foo", "foo-contents")
        .flags(&["--build-arg", "group=nobody"]),
        case(
            "testAddURLChmod",
            "FROM busybox AS build\nADD --chmod=644 {url}/foo /tmp/foo1\n\
             ADD --chmod=755 {url}/foo /tmp/foo2\nADD --chmod=0413 {url}/foo /tmp/foo3\n\
             ARG mode\nADD --chmod=${mode} {url}/foo /tmp/foo4\n\
             RUN stat -c \"%04a\" /tmp/foo1 /tmp/foo2 /tmp/foo3 /tmp/foo4 > /dest\n\
             FROM scratch\nCOPY --from=build /dest /dest\n",
        )
        .flags(&["--build-arg", "mode=400"])
        .has("dest", "0644\n0755\n0413\n0400\n"),
        case("testAddInvalidChmod", "FROM scratch\nADD --chmod=64a foo /\n")
            .file("foo", "foo-contents")
            .fails("64a"),
        case("testAddInvalidChmod", "FROM scratch\nADD --chmod=10000 foo /\n")
            .file("foo", "foo-contents")
            .fails("10000"),
        case("testAddChecksum", concat!("FROM scratch\nADD --checksum=sha256:", "d0b425e00e15a0d36b9b361f02bab63563aed6cb4665083905386c55d5b679fa", " {url}/foo /tmp/foo\n"))
            .has("tmp/foo", "content1"),
        case("testAddChecksum", concat!("FROM scratch\nENV DIGEST=sha256:", "d0b425e00e15a0d36b9b361f02bab63563aed6cb4665083905386c55d5b679fa", "\nENV LINK={url}/foo\nADD --checksum=${DIGEST} ${LINK} /tmp/foo\n"))
            .has("tmp/foo", "content1"),
        // The digest of nothing.
        case("testAddChecksum", "FROM scratch\nADD --checksum=sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855 {url}/foo /tmp/foo\n")
            .fails(""),
        case("testAddChecksum", "FROM scratch\nADD --checksum=md5:7e55db001d319a94b0b713529a756623 {url}/foo /tmp/foo\n")
            .fails(""),
        case("testAddChecksum", "FROM scratch\nADD --checksum=unknown:d0b425e00e15a0d36b9b361f02bab63563aed6cb4665083905386c55d5b679fa {url}/foo /tmp/foo\n")
            .fails(""),
        case("testAddChecksum", "FROM scratch\nADD --checksum=d0b425e00e15a0d36b9b361f02bab63563aed6cb4665083905386c55d5b679fa {url}/foo /tmp/foo\n")
            .fails(""),
        case("testAddChecksum", "FROM scratch\nADD --checksum=sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855 foo /tmp/foo\n")
            .file("foo", "local file")
            .fails(""),
    ]
}

fn core_cases() -> Vec<Case> {
    vec![
        case(
            "testDockerfileDirs",
            "FROM busybox\nCOPY foo /foo2\nCOPY foo /\nRUN echo -n bar > foo3\nRUN test -f foo\n\
             RUN cmp -s foo foo2\nRUN cmp -s foo foo3\n",
        )
        .file("foo", "bar"),
        // The Dockerfile and the context in different directories.
        case(
            "testDockerfileDirs",
            "FROM busybox\nCOPY foo /foo2\nRUN cmp -s /foo2 /foo2\nRUN [ \"$(cat /foo2)\" = bar ]\n",
        )
        .dockerfile_only_at("df/Dockerfile")
        .file("foo", "bar")
        .flags(&["-f", "{ctx}/df/Dockerfile"]),
        case("testSymlinkedDockerfile", "FROM scratch\nENV foo bar\n")
            .dockerfile_at("Dockerfile.web")
            .config(
                "/Config/Env",
                r#"["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin","foo=bar"]"#,
            ),
        case("testSymlinkDestination", "FROM scratch\nADD t.tar /\nCOPY foo /symlink/\n")
            .file("foo", "content0")
            .tar("t.tar", &[("symlink", "-> ../tmp/symlink-target")])
            .has("tmp/symlink-target/foo", "content0")
            .known(
                "COPY to a destination that is a symlink in the image replaces the link with a \
                 directory, where BuildKit follows it (within the root)",
            ),
        // A context path that was a directory in an earlier build is a file now.
        case("testContextChangeDirToFile", "FROM scratch\nCOPY foo /\n")
            .first_with(&[("foo/bar", "contents")])
            .file("foo", "contents2")
            .has("foo", "contents2"),
        case(
            "testExposeExpansion",
            "FROM scratch\nARG PORTS=\"3000 4000/udp\"\nEXPOSE $PORTS\nEXPOSE 5000\n",
        )
        .config(
            "/Config/ExposedPorts",
            r#"{"3000/tcp":{},"4000/udp":{},"5000/tcp":{}}"#,
        ),
        case("testDockerfileLowercase", "FROM scratch\nENV a=b\n").dockerfile_only_at("dockerfile"),
        case("testLabels", "FROM scratch\nLABEL foo=bar\n")
            .flags(&["--label", "bar=baz"])
            .config("/Config/Labels", r#"{"foo":"bar","bar":"baz"}"#),
        case("testUser", TEST_USER)
            .has("rootuser", "root\n")
            .has("daemonuser", "daemon\n")
            .config("/Config/User", r#""nobody""#),
        case(
            "testUserAdditionalGids",
            "FROM busybox\nRUN echo wheel:x:10:root >> /etc/group\n\
             SHELL [\"/bin/sh\", \"-euxc\"]\n\
             RUN [ \"$(id)\" = \"uid=0(root) gid=0(root) groups=0(root),10(wheel)\" ]\n\
             USER 1234\nRUN [ \"$(id)\" = \"uid=1234 gid=0(root) groups=0(root)\" ]\n\
             USER 1234:1234\nRUN [ \"$(id)\" = \"uid=1234 gid=1234 groups=1234\" ]\n\
             USER daemon\nRUN [ \"$(id)\" = \"uid=1(daemon) gid=1(daemon) groups=1(daemon)\" ]\n",
        ),
        // The build argument form; BuildKit's hostname frontend option has no cairn flag.
        case(
            "testDockerfileCheckHostname",
            "FROM busybox\nRUN cat /etc/hosts | grep foo\nRUN echo $HOSTNAME | grep foo\n\
             RUN echo $(hostname) | grep foo\n",
        )
        .flags(&["--build-arg", "BUILDKIT_SANDBOX_HOSTNAME=foo"])
        .known("the BUILDKIT_SANDBOX_HOSTNAME build argument is not honoured"),
        case(
            "testStepNames",
            "FROM busybox AS base\nWORKDIR /out\nRUN echo \"base\" > base\nFROM scratch\n\
             COPY --from=base --chmod=0644 /out /out\n",
        )
        .says("[base 3/3] RUN echo \"base\" > base")
        .says("[stage-1 1/1] COPY --from=base --chmod=0644 /out /out"),
        case(
            "testTargetMistype",
            "FROM scratch AS build\nCOPY Dockerfile /out\nFROM scratch\nCOPY --from=build /out /\n",
        )
        .flags(&["--target", "bulid"])
        .fails("did you mean build"),
    ]
}

fn args_cases() -> Vec<Case> {
    let target_stage = "FROM busybox AS base\nWORKDIR /out\n\
        RUN echo -n \"value:$TARGETSTAGE\" > /out/first\nARG TARGETSTAGE\n\
        RUN echo -n \"value:$TARGETSTAGE\" > /out/second\n\
        FROM scratch AS foo\nCOPY --from=base /out/ /\nFROM scratch\nCOPY --from=base /out/ /\n";
    let builtin = "FROM busybox AS build\nARG FOO\nARG BAR\nARG BAZ=bazcontent\n\
        RUN echo -n $HTTP_PROXY::$NO_PROXY::$FOO::$BAR::$BAZ > /out\n\
        FROM scratch\nCOPY --from=build /out /\n";
    let builtin_flags = &[
        "--build-arg",
        "FOO=foocontents",
        "--build-arg",
        "http_proxy=hpvalue",
        "--build-arg",
        "NO_PROXY=npvalue",
    ];
    let default_env = "ARG image=idlebox\nFROM busy${image#idle} AS build\nARG my_arg\n\
        ENV my_arg \"my_arg=${my_arg:-def_val}\"\nENV my_trimmed_arg \"${my_arg%%e*}\"\n\
        COPY myscript.sh myscript.sh\nRUN ./myscript.sh $my_arg $my_trimmed_arg\n\
        FROM scratch\nCOPY --from=build /out /out\n";
    // The fixture has no /usr/bin/env: sh is named directly.
    let script = "#!/bin/sh\necho -n $my_arg $* > /out\n";
    vec![
        case("testGlobalArg", "ARG tag=nosuchtag\nFROM busybox:${tag}\n")
            .flags(&["--build-arg", "tag=latest"]),
        case("testGlobalArgErrors", "ARG FOO=${FOO:?\"custom error\"}\nFROM busybox\n")
            .fails("FOO: custom error"),
        case("testGlobalArgErrors", "ARG FOO=${FOO:?\"custom error\"}\nFROM busybox\n")
            .flags(&["--build-arg", "FOO=bar"]),
        case("testArgDefaultExpansion", "FROM scratch\nARG FOO\nARG BAR=${FOO:?\"foo missing\"}\n")
            .fails("FOO: foo missing"),
        case("testArgDefaultExpansion", "FROM scratch\nARG FOO\nARG BAR=${FOO:?\"foo missing\"}\n")
            .flags(&["--build-arg", "FOO=123"]),
        case("testArgDefaultExpansion", "FROM scratch\nARG FOO\nARG BAR=${FOO:?\"foo missing\"}\n")
            .flags(&["--build-arg", "BAR=123"]),
        case(
            "testMultiArgs",
            "ARG a1=\"foo bar\" a2=box\nARG a3=\"$a2-foo\"\nFROM busy$a2 AS build\n\
             ARG a3 a4=\"123 456\" a1\nRUN echo -n \"$a1:$a3:$a4\" > /out\n\
             FROM scratch\nCOPY --from=build /out .\n",
        )
        .has("out", "foo bar:box-foo:123 456"),
        case(
            "testQuotedMetaArgs",
            "ARG a1=\"box\"\nARG a2=\"$a1-foo\"\nFROM busy$a1 AS build\nARG a2\n\
             ARG a3=\"bar-$a2\"\nRUN echo -n $a3 > /out\nFROM scratch\nCOPY --from=build /out .\n",
        )
        .has("out", "bar-box-foo"),
        case("testTargetStageNameArg", target_stage)
            .flags(&["--target", "foo"])
            .has("first", "value:")
            .has("second", "value:foo")
            .known(TARGETSTAGE),
        case("testTargetStageNameArg", target_stage)
            .has("first", "value:")
            .has("second", "value:default")
            .known(TARGETSTAGE),
        case(
            "testTargetStageNameArg",
            "FROM busybox AS base\nWORKDIR /out\n\
             RUN echo -n \"value:$TARGETSTAGE\" > /out/first\nARG TARGETSTAGE\n\
             RUN echo -n \"value:$TARGETSTAGE\" > /out/second\n\
             FROM scratch AS foo\nCOPY --from=base /out/ /\nFROM scratch\nCOPY --from=base /out/ /\n\
             FROM scratch AS final\nCOPY --from=base /out/ /\n",
        )
        .has("first", "value:")
        .has("second", "value:final")
            .known(TARGETSTAGE),
        case("testBuiltinArgs", builtin)
            .flags(builtin_flags)
            .has("out", "hpvalue::npvalue::foocontents::::bazcontent"),
        // A changed proxy argument alone keeps the cached step.
        case("testBuiltinArgs", builtin)
            .first_flags(builtin_flags)
            .flags(&["--build-arg", "FOO=foocontents", "--build-arg", "http_proxy=hpvalue2"])
            .has("out", "hpvalue::npvalue::foocontents::::bazcontent"),
        case("testBuiltinArgs", builtin)
            .first_flags(builtin_flags)
            .flags(&["--build-arg", "FOO=foocontents2", "--build-arg", "http_proxy=hpvalue2"])
            .has("out", "hpvalue2::::foocontents2::::bazcontent"),
        case("testDefaultEnvWithArgs", default_env)
            .file_mode("myscript.sh", script, 0o700)
            .has("out", "my_arg=def_val my_arg=def_val my_arg=d"),
        case("testDefaultEnvWithArgs", default_env)
            .file_mode("myscript.sh", script, 0o700)
            .flags(&["--build-arg", "my_arg="])
            .has("out", "my_arg=def_val my_arg=def_val my_arg=d"),
        case("testDefaultEnvWithArgs", default_env)
            .file_mode("myscript.sh", script, 0o700)
            .flags(&["--build-arg", "my_arg=override"])
            .has("out", "my_arg=override my_arg=override my_arg=ov"),
        case(
            "testEmptyStringArgInEnv",
            "FROM busybox AS build\nARG FOO\nARG BAR=\nRUN env > env.txt\n\
             FROM scratch\nCOPY --from=build env.txt .\n",
        )
        .contains("env.txt", "BAR=")
        .lacks("env.txt", "FOO="),
        case(
            "testEnvEmptyFormatting",
            "FROM busybox AS build\nENV myenv foo%sbar\nRUN [ \"$myenv\" = 'foo%sbar' ]\n",
        ),
    ]
}

fn workdir_and_cmd_cases() -> Vec<Case> {
    vec![
        case(
            "testWorkdirCreatesDir",
            "FROM scratch\nWORKDIR /foo\nWORKDIR /\n",
        )
        .mode("foo", 0o755),
        case(
            "testWorkdirUser",
            "FROM busybox\nRUN echo user:x:1000:1000::/home/user:/bin/sh >> /etc/passwd && \
             echo user:x:1000: >> /etc/group\nUSER user\nWORKDIR /mydir\n\
             RUN [ \"$(stat -c \"%U %G\" /mydir)\" == \"user user\" ]\n",
        ),
        case(
            "testWorkdirCopyIgnoreRelative",
            "FROM scratch AS base\nWORKDIR /foo\nCOPY Dockerfile /\nFROM scratch\n\
             COPY --from=base Dockerfile .\n",
        ),
        case(
            "testWorkdirExists",
            "FROM busybox\nRUN echo user:x:1000:1000::/home/user:/bin/sh >> /etc/passwd && \
             echo user:x:1000: >> /etc/group\nRUN mkdir /mydir && chown user:user /mydir\n\
             WORKDIR /mydir\nRUN [ \"$(stat -c \"%U %G\" /mydir)\" == \"user user\" ]\n",
        ),
        // BuildKit builds the base as an image of its own; a stage stands in for it.
        case(
            "testCmdShell",
            "FROM scratch AS base\nCMD [\"test\"]\nFROM base\nSHELL [\"ls\"]\n\
             ENTRYPOINT my entrypoint\n",
        )
        .config("/Config/Cmd", "null")
        .config("/Config/Entrypoint", r#"["ls","my entrypoint"]"#),
        case(
            "testDefaultShellAndPath",
            "FROM scratch\nENTRYPOINT foo bar\nCOPY Dockerfile .\n",
        )
        .config("/Config/Entrypoint", r#"["/bin/sh","-c","foo bar"]"#)
        .config(
            "/Config/Env",
            r#"["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"]"#,
        ),
        case(
            "testIgnoreEntrypoint",
            "FROM busybox\nENTRYPOINT [\"/nosuchcmd\"]\nRUN [\"ls\"]\n",
        ),
        case(
            "testInvalidJSONCommands",
            "FROM busybox\nRUN [\"echo\", \"hello\"]this is invalid\n",
        )
        .fails("this is invalid"),
        case(
            "testInvalidJSONCommands",
            "FROM busybox\nENTRYPOINT []random string\n",
        )
        .config(
            "/Config/Entrypoint",
            r#"["/bin/sh","-c","[]random string"]"#,
        ),
        case(
            "testDockerfileInvalidCommand",
            "FROM busybox\nRUN invalidcmd\n",
        )
        .fails("/bin/sh -c invalidcmd")
        .fails("did not complete successfully"),
        case(
            "testDockerfileInvalidInstruction",
            "FROM scratch\nFNTRYPOINT [\"/bin/sh\", \"-c\", \"echo invalidinstruction\"]\n",
        )
        .fails("unknown instruction: FNTRYPOINT")
        .fails("did you mean ENTRYPOINT?"),
    ]
}

fn mount_cases() -> Vec<Case> {
    let rw_cache = "from busybox AS build\ncopy cachebust /\nrun mkdir out && echo foo > out/foo\n\
        from busybox as second\n\
        RUN --mount=from=build,src=out,target=/out,rw touch /out/bar && \
        cat /dev/urandom | head -c 100 | sha256sum > /unique\n\
        from scratch\nCOPY --from=second /unique /unique\n";
    let duplicate = "FROM busybox AS base\nRUN --mount=source=.,target=/tmp/test \\\n\
        --mount=source=b.txt,target=/tmp/b.txt \\\n\
        cat /tmp/test/a.txt /tmp/b.txt > /combined.txt\n\
        FROM scratch\nCOPY --from=base /combined.txt /\n";
    vec![
        case(
            "testMountContext",
            "FROM busybox\nRUN --mount=target=/context [ \"$(cat /context/testfile)\" == \"contents0\" ]\n",
        )
        .file("testfile", "contents0"),
        case(
            "testMountTmpfs",
            "FROM busybox\nRUN --mount=target=/mytmp,type=tmpfs touch /mytmp/foo\nRUN [ ! -f /mytmp/foo ]\n",
        ),
        case("testMountInvalid", "FROM scratch\nRUN --mont=target=/mytmp,type=tmpfs /bin/true\n")
            .fails("unknown flag: --mont")
            .fails("did you mean mount?")
            .known("the suggestion is spelled --mount, where BuildKit says mount"),
        case("testMountInvalid", "FROM scratch\nRUN --mount=typ=tmpfs /bin/true\n")
            .fails("unexpected key 'typ'")
            .fails("did you mean type?"),
        case("testMountInvalid", "FROM scratch\nRUN --mount=type=tmp /bin/true\n")
            .fails("unsupported mount type \"tmp\"")
            .fails("did you mean tmpfs?")
            .known("an unknown mount type gets no suggestion (BuildKit suggests tmpfs for tmp)"),
        // A changed context file that gives the same mounted content keeps the cached RUN.
        case("testMountRWCache", rw_cache)
            .first_with(&[("cachebust", "0")])
            .file("cachebust", "1")
            .unchanged("unique")
            .known(
                "RUN --mount=from=STAGE is keyed on the stage's steps, not the mounted \
                 content, so an equivalent rebuilt stage runs it again",
            ),
        case(
            "testCacheMountUser",
            "FROM busybox\nRUN --mount=type=cache,target=/mycache,uid=1001,gid=1002,mode=0751 \
             [ \"$(stat -c \"%u %g %f\" /mycache)\" == \"1001 1002 41e9\" ]\n",
        )
        .own_store(),
        case(
            "testCacheMountDefaultID",
            "FROM busybox\nRUN --mount=type=cache,target=/mycache touch /mycache/foo\n\
             RUN --mount=type=cache,target=/mycache2 [ ! -f /mycache2/foo ]\n\
             RUN --mount=type=cache,target=/mycache [ -f /mycache/foo ]\n",
        )
        .own_store(),
        case(
            "testMountEnvVar",
            "FROM busybox\nENV SOME_PATH=/mycache\nRUN --mount=type=cache,target=/mycache touch /mycache/foo\n\
             RUN --mount=type=cache,target=$SOME_PATH [ -f $SOME_PATH/foo ]\n",
        )
        .own_store(),
        case(
            "testMountArg",
            "FROM busybox\nARG MNT_TYPE=cache\nRUN --mount=type=$MNT_TYPE,target=/mycache2 touch /mycache2/foo\n\
             RUN --mount=type=cache,target=/mycache2 [ -f /mycache2/foo ]\n",
        )
        .own_store(),
        case(
            "testMountEnvAcrossStages",
            "FROM busybox as stage1\nENV MNT_ID=mycache\nENV MNT_TYPE2=cache\n\
             RUN --mount=type=cache,id=mycache,target=/abcabc touch /abcabc/foo\n\
             RUN --mount=type=$MNT_TYPE2,id=$MNT_ID,target=/cbacba [ -f /cbacba/foo ]\n\
             FROM stage1\nRUN --mount=type=$MNT_TYPE2,id=$MNT_ID,target=/whatever [ -f /whatever/foo ]\n",
        )
        .own_store(),
        case(
            "testMountMetaArg",
            "ARG META_PATH=/tmp/meta\nFROM busybox\nARG META_PATH\n\
             RUN --mount=type=cache,id=mycache,target=/tmp/meta touch /tmp/meta/foo\n\
             RUN --mount=type=cache,id=mycache,target=$META_PATH [ -f /tmp/meta/foo ]\n",
        )
        .own_store(),
        case(
            "testMountFromError",
            "FROM busybox as test\nRUN touch /tmp/test\nFROM busybox\nENV ttt=test\n\
             RUN --mount=from=$ttt,type=cache,target=/tmp ls\n",
        )
        .fails("'from' doesn't support variable expansion, define alias stage instead")
        .known(FROM_EXPANDS),
        case(
            "testMountTmpfsSize",
            "FROM busybox AS base\nRUN --mount=type=tmpfs,target=/dev/shm,size=128m \
             mount | grep /dev/shm > /tmpfssize\nFROM scratch\nCOPY --from=base /tmpfssize /\n",
        )
        .contains("tmpfssize", "size=131072k"),
        case("testMountDuplicate", duplicate)
            .file("a.txt", "foo\n")
            .file("b.txt", "bar\n")
            .has("combined.txt", "foo\nbar\n"),
        // A second build in the same store sees the changed a.txt.
        case("testMountDuplicate", duplicate)
            .first_with(&[("a.txt", "foo\n"), ("b.txt", "bar\n")])
            .file("a.txt", "updated\n")
            .file("b.txt", "bar\n")
            .has("combined.txt", "updated\nbar\n"),
        // Once, not BuildKit's twenty times; busybox for alpine.
        case(
            "testCacheMountParallel",
            "FROM busybox AS b1\nRUN --mount=type=cache,target=/foo/bar --mount=type=cache,target=/foo/bar/baz echo 1\n\
             FROM busybox AS b2\nRUN --mount=type=cache,target=/foo/bar --mount=type=cache,target=/foo/bar/baz echo 2\n\
             FROM scratch\nCOPY --from=b1 /etc/passwd p1\nCOPY --from=b2 /etc/passwd p2\n",
        )
        .own_store()
        .flaky_when_root(
            false,
            "unprivileged, nested cache mounts in parallel stages sometimes fail",
        )
        .known_when_root(
            true,
            "as root, nested cache mounts (/foo/bar and /foo/bar/baz) fail to make the inner \
             mount point (EOVERFLOW): cache mounts are being worked on in issue 15",
        ),
        // A cache mount's source= that resolves through a symlink out of the cache fails.
        case(
            "testCacheMountSourceEscape",
            "FROM busybox AS init\nRUN --mount=type=cache,id=sourceescape,target=/cache mkdir -p /cache/sel && \
             echo benign > /cache/sel/benign.txt\n\
             FROM init AS link\nRUN --mount=type=cache,id=sourceescape,target=/cache rm -rf /cache/sel && \
             ln -s /etc /cache/sel\n\
             FROM link AS victim\nRUN --mount=type=cache,id=sourceescape,source=sel,target=/victim cat /victim/hostname\n\
             FROM scratch\nCOPY --from=victim /etc/hostname /hostname\n",
        )
        .own_store()
        .fails(""),
    ]
}

fn multistage_and_onbuild_cases() -> Vec<Case> {
    let out_of_order = |src: &'static str| {
        let df = if src == "/" {
            "FROM busybox AS target\nCOPY --from=build / /out\nFROM busybox AS build\n\
             COPY /Dockerfile /d2\nFROM target\n"
        } else {
            "FROM busybox AS target\nCOPY --from=build /d2 /out\nFROM busybox AS build\n\
             COPY /Dockerfile /d2\nFROM target\n"
        };
        case("testOutOfOrderStage", df)
            .fails("cannot copy from stage")
            .fails("needs to be defined before current stage")
    };
    vec![
        case("testMultiStageImplicitFrom", "FROM scratch\nCOPY --from=busybox /etc/passwd test\n")
            .contains("test", "root"),
        case(
            "testMultiStageImplicitFrom",
            "FROM busybox AS golang\nRUN mkdir -p /usr/bin && echo -n foo > /usr/bin/go\n\
             FROM scratch\nCOPY --from=golang /usr/bin/go go\n",
        )
        .has("go", "foo"),
        case(
            "testMultiStageCaseInsensitive",
            "FROM scratch AS STAge0\nCOPY foo bar\nFROM scratch AS staGE1\n\
             COPY --from=staGE0 bar baz\nFROM scratch\nCOPY --from=stage1 baz bax\n",
        )
        .file("foo", "foo-contents")
        .flags(&["--target", "Stage1"])
        .has("baz", "foo-contents"),
        out_of_order("/"),
        out_of_order("/d2"),
        case("testEmptyStages", "ARG foo=bar")
            .fails("dockerfile contains no stages to build")
            .known("the error says \"FROM is missing: a Dockerfile needs at least one stage\""),
        // Images BuildKit pushes to a registry are tagged in the store here.
        case(
            "testOnBuildCleared",
            "FROM bk-onbuild-cleared-child AS base\nFROM scratch\nCOPY --from=base /out /\n",
        )
        .image_first(
            "bk-onbuild-cleared-base",
            "FROM busybox\nONBUILD RUN mkdir -p /out && echo -n 11 >> /out/foo\n",
        )
        .image_first("bk-onbuild-cleared-child", "FROM bk-onbuild-cleared-base\n")
        .has("foo", "11"),
        case(
            "testOnBuildWithChildStage",
            "FROM bk-onbuild-child-base AS base\nRUN [ -f /out/didrun ] && touch /step1\n\
             RUN rm /out/didrun\nRUN [ ! -f /out/didrun ] && touch /step2\n\
             FROM base AS child\nRUN [ ! -f /out/didrun ] && touch /step3\n\
             FROM scratch\nCOPY --from=child /step* /\n",
        )
        .image_first(
            "bk-onbuild-child-base",
            "FROM busybox\nONBUILD RUN mkdir -p /out && echo -n yes >> /out/didrun\n",
        )
        .has("step1", "")
        .has("step2", "")
        .has("step3", ""),
        case(
            "testOnBuildNamedContext",
            "FROM busybox AS otherstage\nRUN echo -n \"hello\" > /testfile\n\
             FROM base AS inputstage\nFROM scratch\nCOPY --from=inputstage /out/foo /bar\n",
        )
        .image_first(
            "bk-onbuild-named-context",
            "FROM busybox:latest\nONBUILD COPY --from=otherstage /testfile /out/foo\n",
        )
        .flags(&["--build-context", "base=oci-layout://{tmp}/bk-onbuild-named-context"])
        .has("bar", "hello")
        .known(ONBUILD_DEPS),
        case(
            "testOnBuildInheritedStageRun",
            "FROM busybox AS base\nONBUILD RUN mkdir -p /out && echo -n 11 >> /out/foo\n\
             FROM base AS mid\nRUN cp /out/foo /out/bar\nFROM scratch\nCOPY --from=mid /out/bar /\n",
        )
        .has("bar", "11"),
        case(
            "testOnBuildInheritedStageWithFrom",
            "FROM busybox AS src\nRUN mkdir -p /in && echo -n 12 > /in/file\n\
             FROM busybox AS base\nONBUILD COPY --from=src /in/file /out/foo\n\
             FROM base AS mid\nRUN cp /out/foo /out/bar\nFROM scratch\nCOPY --from=mid /out/bar /\n",
        )
        .has("bar", "12")
        .known(ONBUILD_DEPS),
        // busybox's /etc/passwd stands in for alpine's /etc/alpine-release.
        case(
            "testOnBuildNewDeps",
            "FROM bk-onbuild-deps-base AS base\nRUN cat /out/passwd2 > /out/passwd3\n\
             FROM scratch\nCOPY --from=base /out /\n",
        )
        .image_first(
            "bk-onbuild-deps-base",
            "FROM busybox\nONBUILD COPY --from=busybox /etc/passwd /out/passwd2\n",
        )
        .contains("passwd3", "root:x:0:0"),
        case(
            "testOnBuildNewDeps",
            "FROM bk-onbuild-deps-base2 AS inputstage\nRUN cat /out/passwd2 > /out/passwd4\n\
             RUN echo -n foo > /foo\nFROM bk-onbuild-deps-base3 AS base\n\
             RUN echo -n bar3 > /out/bar3\nFROM scratch\nCOPY --from=base /out /\n",
        )
        .image_first(
            "bk-onbuild-deps-base2",
            "FROM busybox\nONBUILD COPY --from=busybox /etc/passwd /out/passwd2\n",
        )
        .image_first(
            "bk-onbuild-deps-base3",
            "FROM busybox\nONBUILD RUN --mount=type=bind,target=/in,from=inputstage mkdir /out && \
             cat /in/foo > /out/bar && cat /in/out/passwd2 > /out/bar2\n",
        )
        .has("bar", "foo")
        .contains("bar2", "root:x:0:0")
        .has("bar3", "bar3")
        .known(ONBUILD_DEPS),
        case(
            "testOnBuildWithCacheMount",
            "FROM bk-onbuild-cache-base\n\
             RUN --mount=type=cache,target=/cache [ \"$(cat /cache/foo)\" = \"42\" ] && \
             [ \"$(cat /bar)\" = \"11\" ]\n",
        )
        .image_first(
            "bk-onbuild-cache-base",
            "FROM busybox\nONBUILD RUN --mount=type=cache,target=/cache echo -n 42 >> /cache/foo && \
             echo -n 11 >> /bar\n",
        )
        .own_store(),
    ]
}

fn dockerignore_and_heredoc_cases() -> Vec<Case> {
    let heredoc_files = |c: Case, files: &[(&'static str, &'static str)]| {
        files.iter().fold(c, |c, (p, content)| c.has(p, content))
    };
    vec![
        case("testDockerignore", "FROM scratch\nCOPY . .\n")
            .file("foo", "foo-contents")
            .file("bar", "bar-contents")
            .file("baz", "baz-contents")
            .file("bay", "bay-contents")
            .file(".dockerignore", "ba*\nDockerfile\n!bay\n.dockerignore\n")
            .has("foo", "foo-contents")
            .no(".dockerignore")
            .no("Dockerfile")
            .no("bar")
            .no("baz")
            .has("bay", "bay-contents"),
        case("testDockerignoreInvalid", "FROM scratch\nCOPY . .\n")
            .file(".dockerignore", "!\n")
            .fails(""),
        // NAME.dockerignore beside the Dockerfile NAME wins over .dockerignore.
        case(
            "testDockerignoreOverride",
            "FROM busybox\nCOPY . .\nRUN [ -f foo ] && [ ! -f bar ]\n",
        )
        .file("Dockerfile.dockerignore", "bar\n")
        .file("Dockerfile2", "FROM busybox\nCOPY . .\nRUN [ ! -f foo ] && [ -f bar ]\n")
        .file("Dockerfile2.dockerignore", "foo\n")
        .file("foo", "contents0")
        .file("bar", "contents0"),
        case(
            "testDockerignoreOverride",
            "FROM busybox\nCOPY . .\nRUN [ -f foo ] && [ ! -f bar ]\n",
        )
        .file("Dockerfile.dockerignore", "bar\n")
        .file("Dockerfile2", "FROM busybox\nCOPY . .\nRUN [ ! -f foo ] && [ -f bar ]\n")
        .file("Dockerfile2.dockerignore", "foo\n")
        .file("foo", "contents0")
        .file("bar", "contents0")
        .flags(&["-f", "{ctx}/Dockerfile2"]),
        heredoc_files(
            case("testCopyHeredoc", COPY_HEREDOC),
            &[
                ("single", "single file\n"),
                ("double/EOF", "first file\n"),
                ("double/EOF2", "second file\n"),
                ("perms", "0777\n0644\nuser:user\n"),
            ],
        ),
        heredoc_files(
            case("testCopyHeredocSpecialSymbols", COPY_HEREDOC_SYMBOLS),
            &[
                ("quotefile", "\"quotes in file\"\n"),
                ("slashfile1", "\n"),
                ("slashfile2", "\\\n"),
                ("slashfile3", "$\n"),
                ("rawslashfile1", "\\\n"),
                ("rawslashfile2", "\\\\\n"),
                ("rawslashfile3", "\\$\n"),
            ],
        ),
        case(
            "testRunBasicHeredoc",
            "FROM busybox AS build\nRUN <<EOF\necho \"i am\" >> /dest\nwhoami >> /dest\nEOF\n\
             FROM scratch\nCOPY --from=build /dest /dest\n",
        )
        .has("dest", "i am\nroot\n"),
        case(
            "testRunFakeHeredoc",
            "FROM busybox AS build\nSHELL [\"/bin/awk\"]\nRUN <<EOF\nBEGIN {\n\tprint \"foo\" > \"/dest\"\n}\nEOF\n\
             FROM scratch\nCOPY --from=build /dest /dest\n",
        )
        .has("dest", "foo\n"),
        heredoc_files(
            case("testRunShebangHeredoc", RUN_SHEBANG_HEREDOC),
            &[("out1", "hello\nworld\n"), ("out2", "hello\nworld\n")],
        ),
        heredoc_files(
            case("testRunComplexHeredoc", RUN_COMPLEX_HEREDOC),
            &[
                ("out1", "hello world\n"),
                ("out2", "HELLO WORLD\n"),
                ("fd3", "hello world\n"),
                ("fd4", "HELLO WORLD\n"),
            ],
        ),
        heredoc_files(
            case("testHeredocIndent", HEREDOC_INDENT),
            &[
                ("foo-copy", "\tfoo\n"),
                ("foo-run", "\n\tfoo\n"),
                ("foo2-run", "\n\tfoo\n"),
                ("foo3-run", "\n\tfoo\n"),
                ("bar-copy", "bar\n"),
                ("bar-run", "\nbar\n"),
                ("bar2-run", "\nbar\n"),
                ("bar3-run", "\nbar\n"),
            ],
        ),
        heredoc_files(
            case("testHeredocVarSubstitution", HEREDOC_VARS),
            &[
                ("c1", "Hello world!\n"),
                ("c2", "Hello ${name}!\n"),
                ("c3", "Hello ${name}!\n"),
                ("q1", "Hello 'world'!\n"),
                ("q2", "Hello \"world\"!\n"),
                ("qsingle1", "Hello '${name}'!\n"),
                ("qsingle2", "Hello \"${name}\"!\n"),
                ("qdouble1", "Hello '${name}'!\n"),
                ("qdouble2", "Hello \"${name}\"!\n"),
                ("r1", "Hello world!\n"),
                ("r2", "Hello new world!\n"),
            ],
        ),
        case(
            "testOnBuildHeredoc",
            "FROM bk-onbuild-heredoc-base AS base\nFROM scratch\nCOPY --from=base /dest /dest\n",
        )
        .image_first(
            "bk-onbuild-heredoc-base",
            "FROM busybox\nONBUILD RUN <<EOF\necho \"hello world\" >> /dest\nEOF\n",
        )
        .has("dest", "hello world\n")
        .known("an ONBUILD heredoc trigger keeps only its first line, so its body is lost"),
    ]
}

/// testCopyHeredoc's Dockerfile (the user written into passwd: no adduser in the fixture).
const COPY_HEREDOC: &str = r#"FROM busybox AS build
RUN echo user:x:1000:1000::/home/user:/bin/sh >> /etc/passwd && echo user:x:1000: >> /etc/group
WORKDIR /dest
COPY <<EOF single
single file
EOF
COPY <<EOF <<EOF2 double/
first file
EOF
second file
EOF2
RUN mkdir -p /permfiles
COPY --chmod=777 <<EOF /permfiles/all
dummy content
EOF
COPY --chmod=0644 <<EOF /permfiles/rw
dummy content
EOF
COPY --chown=user:user <<EOF /permfiles/owned
dummy content
EOF
RUN stat -c "%04a" /permfiles/all >> perms && \
	stat -c "%04a" /permfiles/rw >> perms && \
	stat -c "%U:%G" /permfiles/owned >> perms
FROM scratch
COPY --from=build /dest /
"#;

const COPY_HEREDOC_SYMBOLS: &str = r#"FROM scratch
COPY <<EOF quotefile
"quotes in file"
EOF
COPY <<EOF slashfile1
\
EOF
COPY <<EOF slashfile2
\\
EOF
COPY <<EOF slashfile3
\$
EOF
COPY <<"EOF" rawslashfile1
\
EOF
COPY <<"EOF" rawslashfile2
\\
EOF
COPY <<"EOF" rawslashfile3
\$
EOF
"#;

const RUN_SHEBANG_HEREDOC: &str = "FROM busybox AS build
WORKDIR /dest
RUN <<EOF
#!/bin/awk -f
BEGIN {
\tprint \"hello\" >> \"./out1\"
\tprint \"world\" >> \"./out1\"
}
EOF
RUN <<-EOF
\t#!/bin/awk -f
\tBEGIN {
\t\tprint \"hello\" >> \"./out2\"
\t\tprint \"world\" >> \"./out2\"
\t}
EOF
FROM scratch
COPY --from=build /dest /
";

const RUN_COMPLEX_HEREDOC: &str = "FROM busybox AS build
WORKDIR /dest
RUN cat <<EOF1 | tr '[:upper:]' '[:lower:]' > ./out1; \\
\tcat <<EOF2 | tr '[:lower:]' '[:upper:]' > ./out2
hello WORLD
EOF1
HELLO world
EOF2
RUN <<EOF 3<<IN1 4<<IN2 awk -f -
BEGIN {
\twhile ((getline line < \"/proc/self/fd/3\") > 0)
\t\tprint tolower(line) > \"./fd3\"
\twhile ((getline line < \"/proc/self/fd/4\") > 0)
\t\tprint toupper(line) > \"./fd4\"
}
EOF
hello WORLD
IN1
HELLO world
IN2
FROM scratch
COPY --from=build /dest /
";

const HEREDOC_INDENT: &str = "FROM busybox AS build
COPY <<EOF /dest/foo-copy
\tfoo
EOF
COPY <<-EOF /dest/bar-copy
\tbar
EOF
RUN <<EOF
echo \"
\tfoo\" > /dest/foo-run
EOF
RUN <<-EOF
echo \"
\tbar\" > /dest/bar-run
EOF
RUN <<EOF
#!/bin/sh
echo \"
\tfoo\" > /dest/foo2-run
EOF
RUN <<-EOF
#!/bin/sh
echo \"
\tbar\" > /dest/bar2-run
EOF
RUN <<EOF sh > /dest/foo3-run
echo \"
\tfoo\"
EOF
RUN <<-EOF sh > /dest/bar3-run
echo \"
\tbar\"
EOF
FROM scratch
COPY --from=build /dest /
";

const HEREDOC_VARS: &str = r#"FROM busybox as build
ARG name=world
COPY <<EOF /dest/c1
Hello ${name}!
EOF
COPY <<'EOF' /dest/c2
Hello ${name}!
EOF
COPY <<"EOF" /dest/c3
Hello ${name}!
EOF
COPY <<EOF /dest/q1
Hello '${name}'!
EOF
COPY <<EOF /dest/q2
Hello "${name}"!
EOF
COPY <<'EOF' /dest/qsingle1
Hello '${name}'!
EOF
COPY <<'EOF' /dest/qsingle2
Hello "${name}"!
EOF
COPY <<"EOF" /dest/qdouble1
Hello '${name}'!
EOF
COPY <<"EOF" /dest/qdouble2
Hello "${name}"!
EOF
RUN <<EOF
greeting="Hello"
echo "${greeting} ${name}!" > /dest/r1
EOF
RUN <<EOF
name="new world"
echo "Hello ${name}!" > /dest/r2
EOF
FROM scratch
COPY --from=build /dest /
"#;

fn parents_history_image_cases() -> Vec<Case> {
    let relative = |target: &'static str| {
        case("testCopyRelativeParents", COPY_RELATIVE_PARENTS).flags(&["--target", target])
    };
    let missing = |target: &'static str| {
        case("testCopyParentsMissingDirectory", COPY_PARENTS_MISSING).flags(&["--target", target])
    };
    vec![
        case(
            "testCopyParents",
            "FROM scratch\nCOPY --parents foo1/foo2/bar /\nWORKDIR /test\n\
             COPY --parents foo1/foo2/ba* .\n",
        )
        .file("foo1/foo2/bar", "testing")
        .file("foo1/foo2/baz", "testing2")
        .has("foo1/foo2/bar", "testing")
        .has("test/foo1/foo2/bar", "testing")
        .has("test/foo1/foo2/baz", "testing2"),
        relative("middle"),
        relative("end"),
        relative("start"),
        relative("double"),
        relative("wildcard"),
        relative("doublewildcard"),
        relative("doubleinputs"),
        missing("normal"),
        missing("withpivot"),
        missing("nonexistentfile").fails("/test/nonexistent-file"),
        missing("wildcard-nonexistent"),
        missing("wildcard-afterpivot"),
        // The history as `cairn inspect` shows it: busybox's one entry, then the stage's.
        case(
            "testExportedHistory",
            "FROM busybox AS base\nENV foo=bar\nCOPY foo /foo2\nFROM busybox\nLABEL lbl=val\n\
             COPY --from=base foo2 foo3\nWORKDIR /\nRUN echo bar > foo4\nRUN [\"ls\"]\n\
             EXPOSE 2375 5000 1234/udp\n",
        )
        .file("foo", "contents0")
        .config_has("/History/1/created_by", "lbl=val")
        .config("/History/1/empty_layer", "true")
        .config_has("/History/2/created_by", "COPY foo2 foo3")
        .config_has("/History/3/created_by", "WORKDIR /")
        .config("/History/3/empty_layer", "true")
        .config_has("/History/4/created_by", "echo bar > foo4")
        .config_has("/History/5/created_by", "RUN ls")
        .config_has(
            "/History/6/created_by",
            "EXPOSE [1234/udp 2375/tcp 5000/tcp]",
        )
        .config("/History/6/empty_layer", "true")
        .config("/History/7", "null")
        .config("/RootFS/Layers/3", "null")
        .config_has("/RootFS/Layers/2", "sha256:")
        .known(
            "the history line of COPY --from keeps the flag (BuildKit: COPY foo2 foo3): history \
             is being worked on in issue 15",
        ),
        case(
            "testExportedHistoryFlattenArgs",
            "FROM busybox\nARG foo=bar\nARG bar=123\nARG foo=bar2\nRUN ls /etc/\n",
        )
        .config("/History/1/created_by", r#""ARG foo=bar""#)
        .config_has("/History/2/created_by", "ARG bar=123")
        .config_has("/History/3/created_by", "ARG foo=bar2")
        .config_has("/History/4/created_by", "RUN |2 foo=bar2 bar=123 ")
        .config_has("/History/4/created_by", "ls /etc/")
        .config("/History/5", "null"),
        // BuildKit pushes the first image to a registry; here it is tagged in the store.
        case(
            "testPullScratch",
            "FROM bk-pull-scratch\nLABEL bar=baz\nCOPY foo .\n",
        )
        .image_first("bk-pull-scratch", "FROM scratch\nLABEL foo=bar\n")
        .file("foo", "foo-contents")
        .config("/Config/Labels", r#"{"foo":"bar","bar":"baz"}"#)
        .config_has("/RootFS/Layers/0", "sha256:")
        .config("/RootFS/Layers/1", "null"),
        case("testDockerfileScratchConfig", "FROM scratch\nENV foo=bar\n")
            .config_has("/Os", "linux")
            .config("/RootFS/Layers", "[]")
            .config_has("/History/0/created_by", "ENV foo=bar")
            .config("/History/0/empty_layer", "true")
            .config("/History/1", "null")
            .config_has("/Config/Env/0", "PATH=")
            .config("/Config/Env/1", r#""foo=bar""#)
            .config("/Config/WorkingDir", r#""/""#),
    ]
}

/// testCopyRelativeParents' Dockerfile, busybox for alpine; built by target.
const COPY_RELATIVE_PARENTS: &str = "FROM busybox AS base
WORKDIR /test
RUN <<eot
\tset -ex
\tmkdir -p a/b/c/d/e
\tmkdir -p a/b2/c/d/e
\tmkdir -p a/b/c2/d/e
\tmkdir -p a/b/c2/d/e2
\ttouch a/b/c/d/foo
\ttouch a/b/c/d/e/bay
\ttouch a/b2/c/d/e/bar
\ttouch a/b/c2/d/e/baz
\ttouch a/b/c2/d/e2/baz
eot
FROM busybox AS middle
COPY --from=base --parents /test/a/b/./c/d /out/
RUN set -ex; [ -d /out/c/d/e ]; [ -f /out/c/d/foo ]; [ ! -d /out/a ]; [ ! -d /out/e ]
FROM busybox AS end
COPY --from=base --parents /test/a/b/c/d/. /out/
RUN set -ex; [ -d /out/test/a/b/c/d/e ]; [ -f /out/test/a/b/c/d/foo ]
FROM busybox AS start
COPY --from=base --parents ./test/a/b/c/d /out/
RUN set -ex; [ -d /out/test/a/b/c/d/e ]; [ -f /out/test/a/b/c/d/foo ]
FROM busybox AS double
COPY --from=base --parents /test/a/./b/./c /out/
RUN set -ex; [ -d /out/b/c/d/e ]; [ -f /out/b/c/d/foo ]
FROM busybox AS wildcard
COPY --from=base --parents /test/a/./*/c /out/
RUN set -ex; [ -d /out/b/c/d/e ]; [ -f /out/b2/c/d/e/bar ]
FROM busybox AS doublewildcard
COPY --from=base --parents /test/a/b*/./c/**/e /out/
RUN set -ex; [ -d /out/c/d/e ]; [ -f /out/c/d/e/bay ]; [ -f /out/c/d/e/bar ]
FROM busybox AS doubleinputs
COPY --from=base --parents /test/a/b/c*/./d/**/baz /test/a/b*/./c/**/bar /out/
RUN set -ex; [ -f /out/d/e/baz ]; [ ! -f /out/d/e/bay ]; [ -f /out/d/e2/baz ]; [ -f /out/c/d/e/bar ]
";

/// testCopyParentsMissingDirectory's Dockerfile, busybox for alpine; built by target.
const COPY_PARENTS_MISSING: &str = "FROM busybox AS base
WORKDIR /test
RUN set -ex; mkdir -p a/b/c/d/e; touch a/b/c/d/foo; touch a/b/c/d/e/bay
FROM busybox AS normal
COPY --from=base --parents /test/a/b/c/d /out/
RUN set -ex; [ -d /out/test/a/b/c/d/e ]; [ -f /out/test/a/b/c/d/e/bay ]; [ ! -d /out/e ]; [ ! -d /out/a ]
FROM busybox AS withpivot
COPY --from=base --parents /test/a/b/./c/d /out/
RUN set -ex; [ -d /out/c/d/e ]; [ -f /out/c/d/foo ]; [ ! -d /out/a ]; [ ! -d /out/e ]
FROM busybox AS nonexistentfile
COPY --from=base --parents /test/nonexistent-file /out/
FROM busybox AS wildcard-nonexistent
COPY --from=base --parents /test/a/b2*/c /out/
RUN set -ex; [ -d /out ]; [ ! -d /out/a ]
FROM busybox AS wildcard-afterpivot
COPY --from=base --parents /test/a/b/./c2* /out/
RUN set -ex; [ -d /out ]; [ ! -d /out/a ]; [ ! -d /out/c* ]
";

fn secrets_and_platform_cases() -> Vec<Case> {
    let secret = &["--secret", "id=mysecret,src={ctx}/pw.txt"];
    vec![
        case(
            "testSecretFileParams",
            "FROM busybox\nRUN --mount=type=secret,required=false,mode=741,uid=100,gid=102,target=/mysecret \
             [ \"$(stat -c \"%u %g %f\" /mysecret)\" = \"100 102 81e1\" ]\n\
             RUN [ ! -f /mysecret ] # check no stub left behind\n",
        )
        .file("pw.txt", "pw")
        .flags(secret)
        .known(
            "a secret mounted by target with mode=741,uid=100,gid=102 is not stat 100 102 81e1 \
             in the step",
        ),
        case("testSecretRequiredWithoutValue", "FROM busybox\nRUN --mount=type=secret,required,id=mysecret foo\n")
            .fails("secret mysecret: not found")
            .known("the error says \"secret mysecret is required but was not given\""),
        // BuildKit also checks the step's name masks the value; that half is not ported.
        case(
            "testSecretAsEnviron",
            "FROM busybox\nENV SECRET_ENV=foo\nRUN --mount=type=secret,id=mysecret,env=SECRET_ENV \
             [ \"$SECRET_ENV\" == \"pw\" ] && [ ! -f /run/secrets/mysecret ] || false\n",
        )
        .file("pw.txt", "pw")
        .flags(secret),
        case(
            "testSecretAsEnvironWithFileMount",
            "FROM busybox\nRUN --mount=type=secret,id=mysecret,target=/run/secrets/secret,env=SECRET_ENV \
             [ \"$SECRET_ENV\" == \"pw\" ] && [ -f /run/secrets/secret ] || false\n",
        )
        .file("pw.txt", "pw")
        .flags(secret),
        case(
            "testPlatformArgsImplicit",
            "FROM scratch AS build-linux\nCOPY foo bar\nFROM build-${TARGETOS}\nCOPY foo2 bar2\n",
        )
        .file("foo", "d0")
        .file("foo2", "d1")
        .has("bar", "d0")
        .has("bar2", "d1"),
        // The target platform is one no RUN of it runs on: the stage that runs is pinned to
        // the build platform, and a build arg still wins over TARGETOS.
        case(
            "testPlatformArgsExplicit",
            "FROM --platform=$BUILDPLATFORM busybox AS build\nARG TARGETPLATFORM\nARG TARGETOS\n\
             RUN mkdir /out && echo -n $TARGETPLATFORM > /out/platform && echo -n $TARGETOS > /out/os\n\
             FROM scratch\nCOPY --from=build out .\n",
        )
        .flags(&["--platform", "darwin/ppc64le", "--build-arg", "TARGETOS=freebsd"])
        .has("platform", "darwin/ppc64le")
        .has("os", "freebsd"),
    ]
}

fn errors_exclude_run_cases() -> Vec<Case> {
    let mut exclude = case("testExcludedFilesOnCopy", EXCLUDED_FILES)
        .dir("dir1", 0o777)
        .dir("dir2", 0o777)
        .dir("dir3", 0o777)
        .dir("dir4", 0o777)
        .link("dir4/file-402.txt", "file-401.txt")
        .link("dir4/file-403.txt", "file-404.txt");
    for (p, content) in [
        ("dir1/file-101.png", "2"),
        ("dir1/file-102.txt", "3"),
        ("dir1/file-103.jpeg", "4"),
        ("dir2/file-201.pdf", "6"),
        ("dir2/file-202.jpeg", "7"),
        ("dir2/file-203.png", "8"),
        ("dir3/file-301.mp3", "9"),
        ("dir3/file-302.mpeg", "10"),
        ("dir4/file-401.txt", "11"),
    ] {
        exclude = exclude.file_mode(p, content, 0o600);
    }
    // What each builder keeps (content, or a symlink's target) and leaves out.
    let kept: &[(&str, &str)] = &[
        ("builder1/1/dir1/file-102.txt", "3"),
        ("builder1/1/dir2/file-201.pdf", "6"),
        ("builder1/1/dir3/file-301.mp3", "9"),
        ("builder1/1/dir3/file-302.mpeg", "10"),
        ("builder1/1/dir4/file-401.txt", "11"),
        ("builder2/2/dir1/file-101.png", "2"),
        ("builder2/2/dir1/file-103.jpeg", "4"),
        ("builder2/2/dir2/file-202.jpeg", "7"),
        ("builder2/2/dir2/file-203.png", "8"),
        ("builder2/2/dir3/file-301.mp3", "9"),
        ("builder2/2/dir3/file-302.mpeg", "10"),
        ("builder3/3/file-302.mpeg", "10"),
        ("builder4/4/file-302.mpeg", "10"),
        ("builder5/5/file-102.txt", "3"),
        ("builder5/5/file-401.txt", "11"),
    ];
    let links: &[(&str, &str)] = &[
        ("builder1/1/dir4/file-402.txt", "file-401.txt"),
        ("builder1/1/dir4/file-403.txt", "file-404.txt"),
        ("builder5/5/file-402.txt", "file-401.txt"),
        ("builder5/5/file-403.txt", "file-404.txt"),
    ];
    let left_out: &[&str] = &[
        "builder1/1/dir1/file-101.png",
        "builder1/1/dir1/file-103.jpeg",
        "builder1/1/dir2/file-202.jpeg",
        "builder1/1/dir2/file-203.png",
        "builder2/2/dir1/file-102.txt",
        "builder2/2/dir2/file-201.pdf",
        "builder2/2/dir4/file-401.txt",
        "builder2/2/dir4/file-402.txt",
        "builder2/2/dir4/file-403.txt",
        "builder3/3/file-301.mp3",
        "builder4/4/file-101.png",
        "builder4/4/file-102.txt",
        "builder4/4/file-103.jpeg",
        "builder4/4/file-201.pdf",
        "builder4/4/file-202.jpeg",
        "builder4/4/file-203.png",
        "builder4/4/file-301.mp3",
        "builder4/4/dir4/file-401.txt",
        "builder4/4/dir4/file-402.txt",
        "builder4/4/dir4/file-403.txt",
        "builder5/5/file-101.png",
        "builder5/5/file-103.jpeg",
        "builder5/5/file-201.pdf",
        "builder5/5/file-202.jpeg",
        "builder5/5/file-203.png",
        "builder5/5/file-301.mp3",
        "builder5/5/file-302.mpeg",
        "builder6/6/file-101.png",
        "builder6/6/file-401.txt",
    ];
    for (p, content) in kept {
        exclude = exclude.has(p, content);
    }
    for (p, target) in links {
        exclude = exclude.link_to(p, target);
    }
    for p in left_out {
        exclude = exclude.no(p);
    }
    // BuildKit checks the error's source range; cairn's error names the file and line.
    let source_map = |df: &'static str, at: &'static str| case("testErrorsSourceMap", df).fails(at);
    vec![
        source_map("from busybox\nenv", "Dockerfile:2:"),
        source_map("#syntax=foobar\nfrom busybox", "Dockerfile:1:")
            .known("a # syntax= directive naming another frontend is not an error"),
        source_map("from scratch\nenv foo=bar\nrun what", "Dockerfile:3:"),
        source_map(
            "from scratch\nenv foo=bar\ncopy foo bar\nenv bar=baz",
            "Dockerfile:3:",
        ),
        source_map(
            "from scratch\nenv foo=bar\ncopy --foo=bar / /\nenv bar=baz",
            "Dockerfile:3:",
        ),
        source_map("from scratch\nrun wh\\\nat\nenv bar=baz", "Dockerfile:2:"),
        exclude,
        // A wildcard's match renamed: the cached copy is not reused, so the RUN fails.
        case(
            "testWildcardRenameCache",
            "FROM busybox\nCOPY file* /files/\nRUN ls /files/file1\n",
        )
        .first_with(&[("file1", "foo")])
        .file("file2", "foo")
        .fails("did not complete successfully"),
        // --no-cache starts cache mounts afresh; a later build sees what they kept.
        case("testCacheMountModeNoCache", CACHE_MOUNT_MODE)
            .own_store()
            .first_flags(&[])
            .flags(&["--no-cache", "--build-arg", "FOO=def"])
            .has("out", "2\n")
            .known(
                "--no-cache keeps what cache mounts hold, where BuildKit starts them empty: \
                 cache mounts are being worked on in issue 15",
            ),
        case("testCacheMountModeNoCache", CACHE_MOUNT_MODE)
            .own_store()
            .first_flags(&["--no-cache", "--build-arg", "FOO=def"])
            .flags(&["--build-arg", "FOO=ghi"])
            .has("out", "3\n"),
        case("testNoCache", NO_CACHE)
            .own_store()
            .first_flags(&[])
            .flags(&["--no-cache"])
            .changed("unique")
            .changed("unique2"),
        case("testNoCache", NO_CACHE)
            .own_store()
            .first_flags(&[])
            .flags(&["--no-cache-filter", "s1"])
            .unchanged("unique")
            .changed("unique2")
            .known(
                "--no-cache-filter s1 runs s1's RUN again, but COPY --from=s1 is keyed on s1's \
                 steps, not its files, so it comes from the cache with the old unique2",
            ),
        case(
            "testRunNoNetwork",
            "FROM busybox\nRUN --network=none ! ip link show eth0\n",
        ),
        case(
            "testRunSecuritySandbox",
            "FROM busybox\nRUN --security=sandbox [ \"$(cat /proc/self/status | grep CapBnd)\" == \
             \"CapBnd:\t00000000a80425fb\" ]\n",
        ),
        case(
            "testRunSecurityDefault",
            "FROM busybox\nRUN [ \"$(cat /proc/self/status | grep CapBnd)\" == \"CapBnd:\t00000000a80425fb\" ]\n",
        ),
    ]
}

const CACHE_MOUNT_MODE: &str = "FROM busybox AS base\nARG FOO=abc\n\
    RUN --mount=type=cache,target=/cache,mode=0773 touch /cache/$FOO && ls -l /cache | wc -l > /out\n\
    FROM scratch\nCOPY --from=base /out /\n";

const NO_CACHE: &str = "FROM busybox AS s0\nRUN cat /dev/urandom | head -c 100 | sha256sum | tee unique\n\
    FROM busybox AS s1\nRUN cat /dev/urandom | head -c 100 | sha256sum | tee unique2\n\
    FROM scratch\nCOPY --from=s0 unique /\nCOPY --from=s1 unique2 /\n";

/// testExcludedFilesOnCopy's Dockerfile (the local-context half).
const EXCLUDED_FILES: &str = "FROM scratch as builder1
COPY --exclude=*/*.png --exclude=*/*.jpeg . /1
FROM scratch as builder2
COPY --exclude=*/*.pdf --exclude=*/*.txt . /2
FROM scratch as builder3
ADD --exclude=*.mp3 dir3/ /3/
FROM scratch as builder4
COPY --exclude=*.mp3 --exclude=*.jpeg --exclude=*.png --exclude=*.pdf --exclude=*.txt dir* /4/
FROM scratch as builder5
ADD --exclude=*.mp* --exclude=*.jpeg --exclude=*.png --exclude=*.pdf dir* /5
FROM scratch as builder6
ADD --exclude=* dir* /6
FROM scratch
COPY --from=builder1 / /builder1
COPY --from=builder2 / /builder2
COPY --from=builder3 / /builder3
COPY --from=builder4 / /builder4
COPY --from=builder5 / /builder5
COPY --from=builder6 / /builder6
";

/// testUser's Dockerfile; root is in group wheel in the busybox image, not in the fixture.
const TEST_USER: &str = r#"FROM busybox AS base
RUN echo wheel:x:10:root >> /etc/group
RUN mkdir -m 0777 /out
RUN id -un > /out/rootuser
RUN [ "$(id -u):$(id -g)/$(id -un):$(id -gn)" = '0:0/root:root' ]
USER root
RUN [ "$(id -G):$(id -Gn)" = '0 10:root wheel' ]
RUN echo 'dockerio:x:1001:1001::/bin:/bin/false' >> /etc/passwd &&  echo 'dockerio:x:1001:' >> /etc/group
USER dockerio
RUN [ "$(id -u):$(id -g)/$(id -un):$(id -gn)/$(id -G):$(id -Gn)" = '1001:1001/dockerio:dockerio/1001:dockerio' ]
USER root
RUN [ "$(id -u):$(id -g)/$(id -un):$(id -gn)/$(id -G):$(id -Gn)" = '0:0/root:root/0 10:root wheel' ] &&  echo 'supplementary:x:1002:dockerio' >> /etc/group
USER dockerio
RUN [ "$(id -u):$(id -g)/$(id -un):$(id -gn)/$(id -G):$(id -Gn)" = '1001:1001/dockerio:dockerio/1001 1002:dockerio supplementary' ]
USER 1001
RUN [ "$(id -u):$(id -g)/$(id -un):$(id -gn)/$(id -G):$(id -Gn)" = '1001:1001/dockerio:dockerio/1001 1002:dockerio supplementary' ]
USER dockerio:dockerio
RUN [ "$(id -u):$(id -g)/$(id -un):$(id -gn)/$(id -G):$(id -Gn)" = '1001:1001/dockerio:dockerio/1001:dockerio' ]
USER 1001:dockerio
RUN [ "$(id -u):$(id -g)/$(id -un):$(id -gn)/$(id -G):$(id -Gn)" = '1001:1001/dockerio:dockerio/1001:dockerio' ]
USER dockerio:1001
RUN [ "$(id -u):$(id -g)/$(id -un):$(id -gn)/$(id -G):$(id -Gn)" = '1001:1001/dockerio:dockerio/1001:dockerio' ]
USER 1001:1001
RUN [ "$(id -u):$(id -g)/$(id -un):$(id -gn)/$(id -G):$(id -Gn)" = '1001:1001/dockerio:dockerio/1001:dockerio' ]
USER dockerio:supplementary
RUN [ "$(id -u):$(id -g)/$(id -un):$(id -gn)/$(id -G):$(id -Gn)" = '1001:1002/dockerio:supplementary/1002:supplementary' ]
USER dockerio:1002
RUN [ "$(id -u):$(id -g)/$(id -un):$(id -gn)/$(id -G):$(id -Gn)" = '1001:1002/dockerio:supplementary/1002:supplementary' ]
USER 1001:supplementary
RUN [ "$(id -u):$(id -g)/$(id -un):$(id -gn)/$(id -G):$(id -Gn)" = '1001:1002/dockerio:supplementary/1002:supplementary' ]
USER 1001:1002
RUN [ "$(id -u):$(id -g)/$(id -un):$(id -gn)/$(id -G):$(id -Gn)" = '1001:1002/dockerio:supplementary/1002:supplementary' ]
USER 1042:1043
RUN [ "$(id -u):$(id -g)/$(id -un):$(id -gn)/$(id -G):$(id -Gn)" = '1042:1043/1042:1043/1043:1043' ]
USER daemon
RUN id -un > /out/daemonuser
FROM scratch
COPY --from=base /out /
USER nobody
"#;

const TARGETSTAGE: &str = "the TARGETSTAGE built-in argument is not set (ARG, issue 15)";

const FROM_EXPANDS: &str = "cairn expands variables in COPY --from and RUN --mount from= \
     (deliberately: parser/src/graph.rs build_args_rename_bases), where BuildKit refuses them";

const ONBUILD_DEPS: &str = "a stage an ONBUILD trigger reads (COPY --from, --mount from=) is \
     not added to the stage graph, so it is not built first";

const WILDCARD_CACHE: &str = "FROM busybox AS base\nCOPY foo* files/\n\
    RUN cat /dev/urandom | head -c 100 | sha256sum > unique\nCOPY bar files/\n\
    FROM scratch\nCOPY --from=base unique /\n";

const NAMED_STAGE: &str = "a named context does not replace the stage of the same name";

const COPY_CHOWN_EXISTING_DIR: &str = "\
FROM busybox AS source
RUN touch /file && chown 100:200 /file && mkdir -p /dir/subdir && touch /dir/subdir/nestedfile \\
 && chown 100:200 /dir && chown 101:201 /dir/subdir && chown 102:202 /dir/subdir/nestedfile
FROM busybox AS test_base
RUN mkdir -p /existingdir/existingsubdir && touch /existingdir/existingfile \\
 && chown 500:600 /existingdir && chown 501:601 /existingdir/existingsubdir \\
 && chown 501:601 /existingdir/existingfile
FROM test_base AS copy_from
COPY --from=source /file .
COPY --from=source /dir /dir
COPY --from=source /dir/. /existingdir
RUN set -e; for p in /file /dir /dir/subdir /dir/subdir/nestedfile /existingdir \\
 /existingdir/existingsubdir /existingdir/existingfile /existingdir/subdir \\
 /existingdir/subdir/nestedfile; do stat -c '%u:%g' $p; done > /owners; \\
 printf '%s\\n' 100:200 0:0 101:201 102:202 500:600 501:601 501:601 101:201 102:202 > /want; \\
 diff /want /owners
FROM test_base AS copy_from_chowned
COPY --from=source --chown=300:400 /file .
COPY --from=source --chown=300:400 /dir /dir
COPY --from=source --chown=300:400 /dir/. /existingdir
RUN set -e; for p in /file /dir /dir/subdir /dir/subdir/nestedfile /existingdir \\
 /existingdir/existingsubdir /existingdir/existingfile /existingdir/subdir \\
 /existingdir/subdir/nestedfile; do stat -c '%u:%g' $p; done > /owners; \\
 printf '%s\\n' 300:400 300:400 300:400 300:400 500:600 501:601 501:601 300:400 300:400 > /want; \\
 diff /want /owners
";

const CHMOD_NON_OCTAL: &str = "\
FROM busybox AS base
RUN <<eot
  set -ex
  mkdir /input /expected
  touch /input/file
  chmod 666 /input/file
  mkdir /input/dir
  chmod 124 /input/dir
eot
RUN cp -a /input/file /expected/f1 && chmod go-w /expected/f1
RUN cp -a /input/file /expected/f2 && chmod u=rw,g=r,o=r /expected/f2
RUN cp -a /input/file /expected/f3 && chmod a+X /expected/f3
RUN mkdir -p /input/dirs/d1 && cp -a /input/dir /input/dirs/d1/d1
RUN cp -a /input/dirs/d1/. /expected/ && chmod go-w /expected/d1
RUN mkdir -p /input/dirs/d2 && cp -a /input/dir /input/dirs/d2/d2
RUN cp -a /input/dirs/d2/. /expected/ && chmod u+rw,g+r,o-x,o+w /expected/d2
RUN mkdir -p /input/dirs/d3 && cp -a /input/dir /input/dirs/d3/d3
RUN cp -a /input/dirs/d3/. /expected/ && chmod a+X /expected/d3
FROM scratch AS result
COPY --from=base --chmod=go-w /input/file /f1
COPY --from=base --chmod=u=rw,g=r,o=r /input/file /f2
COPY --from=base --chmod=a+X /input/file /f3
COPY --from=base --chmod=go-w /input/dirs/d1 /
COPY --from=base --chmod=u+rw,g+r,o-x,o+w /input/dirs/d2 /
COPY --from=base --chmod=a+X /input/dirs/d3 /
FROM base
COPY --from=result / /actual/
RUN set -e; for f in f1 f2 f3 d1 d2 d3; do \\
 [ \"$(stat -c %A /actual/$f)\" = \"$(stat -c %A /expected/$f)\" ]; done
";

/// Runs every case (or those whose name contains `$BK_CASE`), a few at a time in one store.
#[test]
fn buildkit_frontend_cases() {
    let store = loaded_busybox();
    let url = serve();
    let filter = std::env::var("BK_CASE").unwrap_or_default();
    let cases: Vec<Case> = cases()
        .into_iter()
        .filter(|c| c.name.contains(&filter))
        .collect();
    let mut names: Vec<&str> = cases.iter().map(|c| c.name).collect();
    names.sort_unstable();
    names.dedup();
    // Cases of one Go test run one after another: they build the same Dockerfile in the one
    // store, and two processes running the same uncached step at once both record it, the
    // last writer's result winning (a "cache hit" of another case's layer).
    let mut groups: Vec<Vec<usize>> = Vec::new();
    for (i, c) in cases.iter().enumerate() {
        match groups.iter_mut().find(|g| cases[g[0]].name == c.name) {
            Some(g) => g.push(i),
            None => groups.push(vec![i]),
        }
    }
    let next = AtomicUsize::new(0);
    let results = Mutex::new(Vec::new());
    std::thread::scope(|scope| {
        for _ in 0..3 {
            scope.spawn(|| {
                loop {
                    let g = next.fetch_add(1, Ordering::Relaxed);
                    let Some(group) = groups.get(g) else { break };
                    for &i in group {
                        let tag = format!("bk-case-{i}");
                        let r = cases[i].run(&store, &tag, &url);
                        results.lock().unwrap().push((i, r));
                    }
                }
            });
        }
    });
    let mut results = results.into_inner().unwrap();
    results.sort_by_key(|(i, _)| *i);
    let mut problems = Vec::new();
    let (mut passing, mut known) = (0, 0);
    let root = is_root();
    for (i, r) in results {
        let c = &cases[i];
        let mark = c
            .known
            .filter(|_| c.known_for_root.is_none_or(|r| r == root));
        if let Some((_, defect)) = c.flaky.filter(|(r, _)| *r == root) {
            let outcome = if r.is_ok() { "passed" } else { "failed" };
            eprintln!(
                "{} (case {i}) {outcome}; not asserted, it races: {defect}",
                c.name
            );
            continue;
        }
        match (mark, r) {
            (None, Ok(())) => passing += 1,
            (Some(_), Err(_)) => known += 1,
            (None, Err(e)) => problems.push(format!("{} (case {i}): {e}", c.name)),
            (Some(defect), Ok(())) => problems.push(format!(
                "{} (case {i}): passes now; drop its known mark ({defect}) and update the \
                 cases file",
                c.name
            )),
        }
    }
    eprintln!(
        "{} cases: {passing} passing, {known} known failures",
        cases.len()
    );
    assert!(problems.is_empty(), "{}", problems.join("\n\n"));
}

// ---- Go tests whose builds the table cannot express (a tar on standard input, a tar output,
// two builds compared) -----------------------------------------------------------------------

/// `cairn build` of `ctx` with `args` (`-` reads `stdin`), which must succeed.
fn build_ok(store: &Store, args: &[&str], stdin: Option<Vec<u8>>) -> String {
    let mut cmd = store.cmd(&["build", "--progress", "plain"]);
    cmd.args(args);
    let out = match stdin {
        Some(bytes) => cairn_e2e::run_with_stdin(cmd, &bytes),
        None => cmd.output().unwrap(),
    };
    let (stdout, stderr) = texts(&out);
    assert!(out.status.success(), "{stderr}");
    stdout
}

/// testTarExporterBasic: `-o type=tar` writes the result's files as a tar.
#[test]
fn bk_tar_exporter_basic() {
    let store = loaded_busybox();
    let ctx = cairn_e2e::context_with("FROM scratch\nCOPY foo foo\n", &[("foo", "data")]);
    let dir = tempfile::tempdir().unwrap();
    let dest = dir.path().join("out.tar");
    let output = format!("type=tar,dest={}", dest.display());
    build_ok(&store, &["-o", &output, ctx.path().to_str().unwrap()], None);
    let mut archive = tar::Archive::new(fs::File::open(&dest).unwrap());
    let mut found = Vec::new();
    for entry in archive.entries().unwrap() {
        let mut entry = entry.unwrap();
        let name = entry.path().unwrap().to_string_lossy().into_owned();
        let mut data = String::new();
        std::io::Read::read_to_string(&mut entry, &mut data).unwrap();
        found.push((name, data));
    }
    assert!(
        found.contains(&("foo".to_string(), "data".to_string())),
        "{found:?}"
    );
}

/// testTarContext: the context, Dockerfile included, as a tar on standard input.
#[test]
fn bk_tar_context() {
    let store = loaded_busybox();
    let tar = tar_of(
        &[
            ("Dockerfile", "FROM scratch\nCOPY foo /\n"),
            ("foo", "contents"),
        ],
        false,
    );
    let dir = tempfile::tempdir().unwrap();
    let output = format!("type=local,dest={}", dir.path().display());
    build_ok(&store, &["-o", &output, "-"], Some(tar));
    assert_eq!(
        fs::read_to_string(dir.path().join("foo")).unwrap(),
        "contents"
    );
}

/// testTarContextExternalDockerfile: a tar context on standard input with the Dockerfile
/// outside it. BuildKit's test also picks a subdirectory of the tar (the `contextsubdir`
/// frontend attribute, which docker's CLI offers only for git URLs); here the tar holds the
/// context at its top.
#[test]
fn bk_tar_context_external_dockerfile() {
    let store = loaded_busybox();
    let tar = tar_of(&[("foo", "contents")], false);
    let df = tempfile::tempdir().unwrap();
    fs::write(df.path().join("Dockerfile"), "FROM scratch\nCOPY foo bar\n").unwrap();
    let dir = tempfile::tempdir().unwrap();
    let output = format!("type=local,dest={}", dir.path().display());
    let file = df.path().join("Dockerfile");
    build_ok(
        &store,
        &["-f", file.to_str().unwrap(), "-o", &output, "-"],
        Some(tar),
    );
    assert_eq!(
        fs::read_to_string(dir.path().join("bar")).unwrap(),
        "contents"
    );
}

/// testReproducibleIDs: building the same context again under another name gives the same
/// image (the same ID).
#[test]
fn bk_reproducible_ids() {
    let store = loaded_busybox();
    let ctx = cairn_e2e::context_with(
        "FROM busybox\nENV foo=bar\nCOPY foo /\nRUN echo bar > bar\n",
        &[("foo", "foo-contents")],
    );
    let path = ctx.path().to_str().unwrap();
    let a = build_ok(&store, &["-q", "-t", "bk-ids:one", path], None);
    let b = build_ok(&store, &["-q", "-t", "bk-ids:two", path], None);
    assert_eq!(a.trim(), b.trim());
    let (one, two) = (store.inspect("bk-ids:one"), store.inspect("bk-ids:two"));
    assert_eq!(one["Id"], two["Id"]);
    assert!(one["Id"].as_str().unwrap().starts_with("sha256:"), "{one}");
}
