//! Whether a base name is a valid image reference, as distribution's `ParseNormalizedNamed`
//! answers it (for InvalidDefaultArgInFrom), and containerd's platform strings.

/// `[domain/]path[:tag][@digest]` with distribution's grammar.
pub(crate) fn is_valid(reference: &str) -> bool {
    let (rest, digest) = match reference.split_once('@') {
        Some((r, d)) => (r, Some(d)),
        None => (reference, None),
    };
    if let Some(d) = digest {
        let Some((algo, hex)) = d.split_once(':') else {
            return false;
        };
        let algo_ok = !algo.is_empty()
            && algo
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || "+._-".contains(c));
        if !algo_ok || hex.len() < 32 || !hex.chars().all(|c| c.is_ascii_hexdigit()) {
            return false;
        }
    }
    let last_slash = rest.rfind('/').map_or(0, |i| i + 1);
    let (name, tag) = match rest[last_slash..].rfind(':') {
        Some(i) => (&rest[..last_slash + i], Some(&rest[last_slash + i + 1..])),
        None => (rest, None),
    };
    if let Some(tag) = tag {
        let mut chars = tag.chars();
        let first_ok = chars
            .next()
            .is_some_and(|c| c.is_ascii_alphanumeric() || c == '_');
        if !first_ok
            || tag.len() > 128
            || !chars.all(|c| c.is_ascii_alphanumeric() || "_.-".contains(c))
        {
            return false;
        }
    }
    if name.is_empty() || name.len() > 255 {
        return false;
    }
    let mut components: Vec<&str> = name.split('/').collect();
    let first = components[0];
    if components.len() > 1 && (first.contains('.') || first.contains(':') || first == "localhost")
    {
        if !is_domain(first) {
            return false;
        }
        components.remove(0);
    }
    // A bare 64-hex name reads as an image ID, which distribution refuses as a name.
    if components.len() == 1
        && name.len() == 64
        && name
            .chars()
            .all(|c| c.is_ascii_digit() || ('a'..='f').contains(&c))
    {
        return false;
    }
    components.iter().all(|c| is_path_component(c))
}

fn is_domain(d: &str) -> bool {
    let (host, port) = match d.rsplit_once(':') {
        Some((h, p)) if !h.ends_with(']') || h.starts_with('[') => (h, Some(p)),
        _ => (d, None),
    };
    if port.is_some_and(|p| p.is_empty() || !p.chars().all(|c| c.is_ascii_digit())) {
        return false;
    }
    if host.starts_with('[') {
        return host.ends_with(']');
    }
    !host.is_empty()
        && host.split('.').all(|label| {
            !label.is_empty()
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
        })
}

/// `[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*`
fn is_path_component(c: &str) -> bool {
    let b = c.as_bytes();
    let alnum = |x: u8| x.is_ascii_lowercase() || x.is_ascii_digit();
    if b.is_empty() || !alnum(b[0]) || !alnum(b[b.len() - 1]) {
        return false;
    }
    let mut i = 0;
    while i < b.len() {
        if alnum(b[i]) {
            i += 1;
            continue;
        }
        let start = i;
        while i < b.len() && !alnum(b[i]) {
            i += 1;
        }
        let sep = &c[start..i];
        let ok = sep == "." || sep == "_" || sep == "__" || sep.bytes().all(|x| x == b'-');
        if !ok {
            return false;
        }
    }
    true
}

/// The OS and architecture of a platform string as containerd's `platforms.Parse` reads it
/// (`linux/amd64`, `linux/arm64/v8`, `arm64`, `linux`), or `None` when it would fail.
pub(crate) fn platform_parts(text: &str) -> Option<(String, String)> {
    let parts: Vec<&str> = text.split('/').collect();
    let valid = |p: &str| {
        !p.is_empty()
            && p.chars()
                .all(|c| c.is_ascii_alphanumeric() || "_.-".contains(c))
    };
    if parts.len() > 3 || !parts.iter().all(|p| valid(p)) {
        return None;
    }
    let arch = |a: &str| {
        match a.to_lowercase().as_str() {
            "x86_64" | "x86-64" | "amd64" => "amd64",
            "aarch64" | "arm64" => "arm64",
            "i386" | "386" => "386",
            "armhf" | "armel" | "arm" => "arm",
            other => return other.to_owned(),
        }
        .to_owned()
    };
    const OSES: &[&str] = &[
        "aix",
        "android",
        "darwin",
        "dragonfly",
        "freebsd",
        "illumos",
        "ios",
        "js",
        "linux",
        "netbsd",
        "openbsd",
        "plan9",
        "solaris",
        "wasip1",
        "windows",
    ];
    match parts.as_slice() {
        [one] if OSES.contains(&one.to_lowercase().as_str()) => {
            Some((one.to_lowercase(), String::new()))
        }
        [one] => Some(("linux".to_owned(), arch(one))),
        [os, a, ..] => Some((os.to_lowercase(), arch(a))),
        [] => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn references() {
        let cases = [
            ("busybox", true),
            ("busybox:latest", true),
            ("busybox:stable-musl", true),
            ("scratch", true),
            ("localhost:5000/a/b:1.0", true),
            (
                "docker.io/library/alpine@sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef",
                true,
            ),
            ("", false),
            ("busybox:", false),
            (":latest", false),
            ("BusyBox", false),
            ("a//b", false),
            ("a:b:c", false),
            ("-a", false),
            ("a@sha256:zz", false),
        ];
        for (r, want) in cases {
            assert_eq!(is_valid(r), want, "{r:?}");
        }
    }

    #[test]
    fn platforms() {
        let p = |s: &str| platform_parts(s).map(|(o, a)| format!("{o}/{a}"));
        assert_eq!(p("linux/amd64").as_deref(), Some("linux/amd64"));
        assert_eq!(p("linux/aarch64/v8").as_deref(), Some("linux/arm64"));
        assert_eq!(p("arm64").as_deref(), Some("linux/arm64"));
        assert_eq!(p("linux/").as_deref(), None);
        assert_eq!(p("linux/$X").as_deref(), None);
    }
}
