//! Which ADD sources (and build contexts) name a git repository, read as BuildKit reads them:
//! `https://host/repo.git#ref:subdir`, `git@host:repo.git#ref`, `ssh://` and `git://` URLs, and
//! the `?ref=&subdir=&checksum=&keep-git-dir=` query form.

/// The transports cairn lets git use; `file`, `ext` and the rest never, whatever a URL says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scheme {
    Http,
    Https,
    Ssh,
    Git,
}

/// A git source: the repository, what to check out and where in it to start.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GitRef {
    /// The repository as git is given it: the source without its fragment and query.
    pub remote: String,
    pub scheme: Scheme,
    /// A branch, a tag, a `refs/...` name or a full commit; empty for the remote's HEAD.
    pub reference: String,
    /// A directory of the commit, `/`-separated, without leading or trailing `/`; empty for
    /// the whole tree.
    pub subdir: String,
    /// `?checksum=` or `?commit=`: a prefix of the commit the reference must resolve to.
    pub checksum: Option<String>,
    /// `?keep-git-dir=`.
    pub keep_git_dir: Option<bool>,
}

/// `src` as a git source: None when it is not one (a path, a plain http(s) URL), an error when
/// it is one cairn cannot use.
pub fn parse(src: &str) -> Option<Result<GitRef, String>> {
    if src.starts_with("./") || src.starts_with("../") {
        return None;
    }
    let (scheme, rest) = match src.split_once("://") {
        Some((proto, rest))
            if !proto.is_empty() && proto.bytes().all(|b| b.is_ascii_alphanumeric()) =>
        {
            let scheme = match proto.to_ascii_lowercase().as_str() {
                "http" => Scheme::Http,
                "https" => Scheme::Https,
                "ssh" => Scheme::Ssh,
                "git" => Scheme::Git,
                // As in BuildKit: another protocol (file://, ...) is no git source.
                _ => return None,
            };
            (scheme, rest)
        }
        _ => {
            scp_style(src)?;
            (Scheme::Ssh, src)
        }
    };
    let (without_fragment, fragment) = match rest.split_once('#') {
        Some((a, f)) => (a, Some(f)),
        None => (rest, None),
    };
    let (location, query) = match without_fragment.split_once('?') {
        Some((a, q)) => (a, Some(q)),
        None => (without_fragment, None),
    };
    // An http(s) URL is a repository only when its path ends in .git; any other is a download.
    if matches!(scheme, Scheme::Http | Scheme::Https) && !location.ends_with(".git") {
        return None;
    }
    let remote = src[..src.len() - rest.len()].to_owned() + location;
    Some(build(remote, scheme, fragment, query))
}

/// `user@host:path` (BuildKit's `^([a-zA-Z0-9-_]+)@([a-zA-Z0-9-.]+):`): whether `src` starts so.
fn scp_style(src: &str) -> Option<()> {
    let (user, rest) = src.split_once('@')?;
    let (host, _) = rest.split_once(':')?;
    let user_ok = !user.is_empty()
        && user
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    let host_ok = !host.is_empty()
        && host
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.');
    (user_ok && host_ok).then_some(())
}

fn build(
    remote: String,
    scheme: Scheme,
    fragment: Option<&str>,
    query: Option<&str>,
) -> Result<GitRef, String> {
    check_remote(&remote, scheme)?;
    let mut r = GitRef {
        remote,
        scheme,
        reference: String::new(),
        subdir: String::new(),
        checksum: None,
        keep_git_dir: None,
    };
    if let Some(f) = fragment.filter(|f| !f.is_empty()) {
        let (reference, subdir) = f.split_once(':').unwrap_or((f, ""));
        r.reference = reference.to_owned();
        r.subdir = clean_subdir(subdir)?;
    }
    let (mut tag, mut branch) = (None, None);
    for pair in query.unwrap_or("").split('&').filter(|p| !p.is_empty()) {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        let v = crate::remote::percent_decode(v, true);
        let flag = |v: &str| match v {
            "" | "1" | "t" | "T" | "true" | "TRUE" | "True" => Ok(true),
            "0" | "f" | "F" | "false" | "FALSE" | "False" => Ok(false),
            _ => Err(format!("invalid {k} value: {v:?}")),
        };
        let set = |slot: &mut String, what: &str, v: String| {
            if !slot.is_empty() && *slot != v {
                return Err(format!("{what} conflicts: {slot:?} vs {v:?}"));
            }
            *slot = v;
            Ok(())
        };
        match k {
            "ref" => set(&mut r.reference, "ref", v)?,
            "tag" => tag = Some(v),
            "branch" => branch = Some(v),
            "subdir" => {
                let v = clean_subdir(&v)?;
                set(&mut r.subdir, "subdir", v)?
            }
            "checksum" | "commit" => r.checksum = Some(v),
            "keep-git-dir" => r.keep_git_dir = Some(flag(&v)?),
            // Submodules are never fetched (cairn does not check them out), so only asking
            // for them is an error.
            "submodules" => {
                if flag(&v)? {
                    return Err("submodules are not supported by cairn".to_owned());
                }
            }
            // File times are always the commit's: `checkout` (now) would make every build differ.
            "mtime" if v == "commit" => {}
            "mtime" => {
                return Err(format!(
                    "invalid mtime value: {v:?} (cairn dates files by their commit: use \"commit\")"
                ));
            }
            "fetch-by-commit" => {
                flag(&v)?;
            }
            _ if v.is_empty() => return Err(format!("query {k:?} has no value")),
            _ => return Err(format!("unexpected query {k:?}")),
        }
    }
    if tag.is_some() && branch.is_some() {
        return Err("branch conflicts with tag".to_owned());
    }
    for (prefix, name) in [("refs/tags/", tag), ("refs/heads/", branch)] {
        if let Some(name) = name {
            let full = if name.starts_with(prefix) {
                name
            } else {
                format!("{prefix}{name}")
            };
            if !r.reference.is_empty() && r.reference != full {
                return Err(format!("ref conflicts: {:?} vs {full:?}", r.reference));
            }
            r.reference = full;
        }
    }
    // A reference is a name to git's ls-remote output and fetch refspec, never an option.
    if r.reference.starts_with('-') || r.reference.contains(['\0', '\n', ' ', '~', '^', ':']) {
        return Err(format!("invalid ref {:?}", r.reference));
    }
    Ok(r)
}

/// Refuses what git could take for an option or a local path: a host or user beginning with
/// `-` (`ssh -oProxyCommand=...`), and control characters.
fn check_remote(remote: &str, scheme: Scheme) -> Result<(), String> {
    if remote.starts_with('-') || remote.chars().any(|c| c.is_control()) {
        return Err("the URL may not begin with '-' or hold control characters".to_owned());
    }
    let authority = match scheme {
        _ if !remote.contains("://") => remote.split(':').next().unwrap_or(""),
        _ => {
            let rest = remote.split_once("://").map_or("", |(_, r)| r);
            rest.split('/').next().unwrap_or("")
        }
    };
    let (user, host) = match authority.rsplit_once('@') {
        Some((u, h)) => (Some(u), h),
        None => (None, authority),
    };
    if host.is_empty() || host.starts_with('-') || user.is_some_and(|u| u.starts_with('-')) {
        return Err("the host (and user) may not be empty or begin with '-'".to_owned());
    }
    Ok(())
}

/// A subdirectory as BuildKit cleans it (`path.Join("/", s)` without the leading `/`).
fn clean_subdir(s: &str) -> Result<String, String> {
    let mut parts: Vec<&str> = Vec::new();
    for p in s.split('/') {
        match p {
            "" | "." => {}
            ".." => {
                parts.pop();
            }
            p => parts.push(p),
        }
    }
    let clean = parts.join("/");
    if clean.contains(['\0', '\n']) {
        return Err(format!("invalid subdir {s:?}"));
    }
    Ok(clean)
}

/// `url` without a password or token (`https://user:secret@host` → `https://user:xxxxx@host`,
/// `https://token@host` → `https://xxxxx@host`), for messages, progress lines and history; an
/// ssh or git URL's user name alone is no secret and stays.
pub fn redact(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    let authority_end = rest.find('/').unwrap_or(rest.len());
    let (authority, path) = rest.split_at(authority_end);
    match authority.rsplit_once('@') {
        Some((userinfo, host)) => {
            let user = userinfo.split(':').next().unwrap_or("");
            let hidden = if userinfo.contains(':') {
                format!("{user}:xxxxx")
            } else if scheme.eq_ignore_ascii_case("http") || scheme.eq_ignore_ascii_case("https") {
                "xxxxx".to_owned()
            } else {
                user.to_owned()
            };
            format!("{scheme}://{hidden}@{host}{path}")
        }
        None => url.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(src: &str) -> GitRef {
        parse(src).expect("a git source").expect("valid")
    }

    #[test]
    fn which_sources_are_git() {
        for (src, git) in [
            ("https://host/repo.git", true),
            ("https://host/repo.git#main:sub", true),
            ("HTTP://host/repo.git", true),
            ("https://host/archive.tar.gz", false),
            ("https://host/repo", false),
            ("git://host/repo", true),
            ("ssh://git@host:2222/repo", true),
            ("git@github.com:user/repo.git", true),
            ("user_1@my-host.example:repo", true),
            ("file:///etc/passwd", false),
            ("ext::sh -c touch% /tmp/x", false),
            ("./git@host:x", false),
            ("src/file.txt", false),
            ("github.com/user/repo", false),
            ("a b@host:x", false),
            // Not a host BuildKit's pattern allows: a local path, never an ssh option.
            ("git@-oProxyCommand=x:r", false),
        ] {
            assert_eq!(parse(src).is_some(), git, "{src}");
        }
    }

    #[test]
    fn fragments_and_queries() {
        // source, remote, reference, subdir, checksum, keep-git-dir
        type Case<'a> = (
            &'a str,
            &'a str,
            &'a str,
            &'a str,
            Option<&'a str>,
            Option<bool>,
        );
        let cases: &[Case<'_>] = &[
            ("https://h/r.git", "https://h/r.git", "", "", None, None),
            (
                "https://h/r.git#v1",
                "https://h/r.git",
                "v1",
                "",
                None,
                None,
            ),
            (
                "https://h/r.git#v1:a/../b/",
                "https://h/r.git",
                "v1",
                "b",
                None,
                None,
            ),
            (
                "git@h:o/r.git#main:docs",
                "git@h:o/r.git",
                "main",
                "docs",
                None,
                None,
            ),
            (
                "https://h/r.git?ref=dev&subdir=x/y&checksum=abc&keep-git-dir=true",
                "https://h/r.git",
                "dev",
                "x/y",
                Some("abc"),
                Some(true),
            ),
            (
                "https://h/r.git?tag=v2",
                "https://h/r.git",
                "refs/tags/v2",
                "",
                None,
                None,
            ),
            (
                "https://h/r.git?branch=refs/heads/b&keep-git-dir",
                "https://h/r.git",
                "refs/heads/b",
                "",
                None,
                Some(true),
            ),
            (
                "git://h:9418/r?commit=0123#main",
                "git://h:9418/r",
                "main",
                "",
                Some("0123"),
                None,
            ),
        ];
        for (src, remote, reference, subdir, checksum, keep) in cases {
            let r = ok(src);
            assert_eq!(r.remote, *remote, "{src}");
            assert_eq!(r.reference, *reference, "{src}");
            assert_eq!(r.subdir, *subdir, "{src}");
            assert_eq!(r.checksum.as_deref(), *checksum, "{src}");
            assert_eq!(r.keep_git_dir, *keep, "{src}");
        }
    }

    #[test]
    fn refused() {
        for (src, said) in [
            ("ssh://-oProxyCommand=touch%20x/r", "begin with '-'"),
            ("ssh://git@-oProxyCommand=x/r", "begin with '-'"),
            ("-git@h:r", "begin with '-'"),
            ("https://h/r.git#--upload-pack=touch", "invalid ref"),
            ("https://h/r.git?ref=a&ref=b", "conflicts"),
            ("https://h/r.git?tag=a&branch=b", "branch conflicts"),
            ("https://h/r.git?submodules=true", "submodules"),
            ("https://h/r.git?mtime=checkout", "mtime"),
            ("https://h/r.git?what=1", "unexpected query"),
        ] {
            let e = parse(src).expect("git").expect_err(src);
            assert!(e.contains(said), "{src}: {e}");
        }
    }

    #[test]
    fn redacts_credentials() {
        for (url, shown) in [
            ("https://u:tok@h/r.git", "https://u:xxxxx@h/r.git"),
            ("https://tok@h/r.git", "https://xxxxx@h/r.git"),
            ("https://h/r.git", "https://h/r.git"),
            ("git@h:r.git", "git@h:r.git"),
            ("ssh://git@h:22/r", "ssh://git@h:22/r"),
            ("ssh://git:pw@h/r", "ssh://git:xxxxx@h/r"),
        ] {
            assert_eq!(redact(url), shown);
        }
    }
}
