//! `RUN --mount=...`: the CSV option list of a bind, cache, tmpfs, secret or ssh mount.
//!
//! Keys and defaults follow BuildKit's `runmount.go`. Values may hold build variables; the
//! parser checks what it can without them and [`Mount::parse_with`] lets the builder parse the
//! same text again once the variables are known.

use nom::IResult;
use nom::Parser;
use nom::branch::alt;
use nom::bytes::complete::{is_not, tag};
use nom::character::complete::char;
use nom::combinator::{all_consuming, map, opt};
use nom::multi::{many0, separated_list1};
use nom::sequence::delimited;
use serde::Serialize;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum MountType {
    Bind,
    Cache,
    Tmpfs,
    Secret,
    Ssh,
}

impl MountType {
    pub fn as_str(self) -> &'static str {
        match self {
            MountType::Bind => "bind",
            MountType::Cache => "cache",
            MountType::Tmpfs => "tmpfs",
            MountType::Secret => "secret",
            MountType::Ssh => "ssh",
        }
    }
}

/// How concurrent builds share one cache mount.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum CacheSharing {
    Shared,
    Private,
    Locked,
}

/// One `--mount`. Optional fields left `None` take the type's default at run time.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Mount {
    #[serde(rename = "type")]
    pub kind: MountType,
    pub target: Option<String>,
    pub source: Option<String>,
    pub from: Option<String>,
    pub readonly: bool,
    pub id: Option<String>,
    pub sharing: Option<CacheSharing>,
    pub mode: Option<u32>,
    pub uid: Option<u32>,
    pub gid: Option<u32>,
    pub required: bool,
    /// tmpfs size limit in bytes.
    pub size: Option<u64>,
    /// secret: the environment variable that receives the secret.
    pub env: Option<String>,
    /// The option list as written, for parsing again with variables expanded.
    pub raw: String,
}

const KEYS: &[&str] = &[
    "type",
    "from",
    "source",
    "src",
    "target",
    "dst",
    "destination",
    "readonly",
    "ro",
    "readwrite",
    "rw",
    "id",
    "sharing",
    "required",
    "size",
    "mode",
    "uid",
    "gid",
    "env",
];

/// A CSV field as Go's `encoding/csv` reads it: quoted (`""` is a quote) or bare.
fn field(input: &str) -> IResult<&str, String> {
    let quoted = delimited(
        char('"'),
        many0(alt((map(tag("\"\""), |_| "\""), is_not("\"")))),
        char('"'),
    )
    .map(|parts: Vec<&str>| parts.concat());
    let bare = opt(is_not(",\"")).map(|s: Option<&str>| s.unwrap_or("").to_owned());
    alt((quoted, bare)).parse(input)
}

fn csv_fields(input: &str) -> Result<Vec<String>, String> {
    if input.is_empty() {
        return Err("empty mount specification".to_owned());
    }
    all_consuming(separated_list1(char(','), field))
        .parse(input)
        .map(|(_, v)| v)
        .map_err(|_| format!("{input:?} is not a valid comma-separated list (check the quotes)"))
}

fn parse_bool(key: &str, value: &str) -> Result<bool, String> {
    match value.to_ascii_lowercase().as_str() {
        "1" | "t" | "true" => Ok(true),
        "0" | "f" | "false" => Ok(false),
        _ => Err(format!(
            "invalid value for {key}: {value:?} (use true or false)"
        )),
    }
}

/// `docker`'s RAM sizes: `64m`, `1g`, `512k`, `1.5GiB`, bytes when no unit (binary multiples).
fn parse_size(value: &str) -> Result<u64, String> {
    let bad = || format!("invalid size {value:?} (write it as 64m, 1g or a number of bytes)");
    let num_end = value
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(value.len());
    let (num, unit) = value.split_at(num_end);
    let n: f64 = num.parse().map_err(|_| bad())?;
    let unit = unit.trim_start_matches(' ').to_ascii_lowercase();
    let unit = unit.strip_suffix('b').unwrap_or(&unit);
    let unit = unit.strip_suffix('i').unwrap_or(unit);
    let shift = match unit {
        "" => 0,
        "k" => 10,
        "m" => 20,
        "g" => 30,
        "t" => 40,
        "p" => 50,
        _ => return Err(bad()),
    };
    Ok((n * (1u64 << shift) as f64) as u64)
}

impl Mount {
    /// Parses a `--mount` value as written; values holding variables are checked later.
    pub fn parse(raw: &str, index: usize) -> Result<Mount, String> {
        Mount::parse_with(raw, index, &|v| Ok(v.to_owned()))
    }

    /// Parses a `--mount` value, passing each value through `expand` first. `index` numbers
    /// the mounts of one RUN, for the default ssh socket path.
    pub fn parse_with(
        raw: &str,
        index: usize,
        expand: &dyn Fn(&str) -> Result<String, String>,
    ) -> Result<Mount, String> {
        let mut m = Mount {
            kind: MountType::Bind,
            target: None,
            source: None,
            from: None,
            readonly: false,
            id: None,
            sharing: None,
            mode: None,
            uid: None,
            gid: None,
            required: false,
            size: None,
            env: None,
            raw: raw.to_owned(),
        };
        let mut readonly: Option<bool> = None;
        for f in csv_fields(raw)? {
            let Some((key, value)) = f.split_once('=') else {
                match f.to_ascii_lowercase().as_str() {
                    "readonly" | "ro" => readonly = Some(true),
                    "readwrite" | "rw" => readonly = Some(false),
                    "required" if matches!(m.kind, MountType::Secret | MountType::Ssh) => {
                        m.required = true
                    }
                    "required" => {
                        return Err(format!(
                            "unexpected key 'required' for mount type '{}'",
                            m.kind.as_str()
                        ));
                    }
                    _ => return Err(format!("invalid field '{f}': it must be a key=value pair")),
                }
                continue;
            };
            let key = key.to_ascii_lowercase();
            // A value with a variable in it can only be checked once it is expanded.
            let value = expand(value)?;
            let deferred = value.contains('$');
            let number = |base: u32| -> Result<Option<u32>, String> {
                if deferred {
                    return Ok(None);
                }
                u32::from_str_radix(&value, base)
                    .map(Some)
                    .map_err(|_| format!("invalid value for {key}: {value:?}"))
            };
            match key.as_str() {
                // The type is known once expanded (the run parses it again then).
                "type" if deferred => {}
                "type" => {
                    m.kind = match value.to_ascii_lowercase().as_str() {
                        "bind" => MountType::Bind,
                        "cache" => MountType::Cache,
                        "tmpfs" => MountType::Tmpfs,
                        "secret" => MountType::Secret,
                        "ssh" => MountType::Ssh,
                        _ => {
                            return Err(format!(
                                "unsupported mount type {value:?} (use bind, cache, tmpfs, secret or ssh)"
                            ));
                        }
                    }
                }
                "from" => m.from = Some(value),
                "source" | "src" => m.source = Some(value),
                "target" | "dst" | "destination" => m.target = Some(value),
                "readonly" | "ro" => readonly = Some(parse_bool(&key, &value)?),
                "readwrite" | "rw" => readonly = Some(!parse_bool(&key, &value)?),
                "required" => {
                    if !matches!(m.kind, MountType::Secret | MountType::Ssh) {
                        return Err(format!(
                            "unexpected key 'required' for mount type '{}'",
                            m.kind.as_str()
                        ));
                    }
                    m.required = parse_bool(&key, &value)?;
                }
                "size" => {
                    if m.kind != MountType::Tmpfs {
                        return Err(format!(
                            "unexpected key 'size' for mount type '{}'",
                            m.kind.as_str()
                        ));
                    }
                    if !deferred {
                        m.size = Some(parse_size(&value)?);
                    }
                }
                "id" => m.id = Some(value),
                "sharing" => {
                    m.sharing = Some(match value.to_ascii_lowercase().as_str() {
                        "shared" => CacheSharing::Shared,
                        "private" => CacheSharing::Private,
                        "locked" => CacheSharing::Locked,
                        _ => {
                            return Err(format!(
                                "unsupported sharing value {value:?} (use shared, private or locked)"
                            ));
                        }
                    })
                }
                "mode" => m.mode = number(8)?,
                "uid" => m.uid = number(10)?,
                "gid" => m.gid = number(10)?,
                "env" => m.env = Some(value),
                _ => {
                    let hint = crate::suggest::nearest(&key, KEYS.iter().copied())
                        .map(|s| format!(" (did you mean {s}?)"))
                        .unwrap_or_default();
                    return Err(format!("unexpected key '{key}' in '{f}'{hint}"));
                }
            }
        }
        m.validate(readonly, index)?;
        Ok(m)
    }

    fn validate(&mut self, readonly: Option<bool>, index: usize) -> Result<(), String> {
        let kind = self.kind.as_str();
        if !matches!(
            self.kind,
            MountType::Secret | MountType::Ssh | MountType::Cache
        ) {
            for (name, set) in [
                ("mode", self.mode.is_some()),
                ("uid", self.uid.is_some()),
                ("gid", self.gid.is_some()),
            ] {
                if set {
                    return Err(format!("{name} is not allowed for {kind} mounts"));
                }
            }
        }
        if self.sharing.is_some() && self.kind != MountType::Cache {
            return Err(format!("sharing is not allowed for {kind} mounts"));
        }
        if self.from.is_some() && !matches!(self.kind, MountType::Bind | MountType::Cache) {
            return Err(format!("from is not allowed for {kind} mounts"));
        }
        if self.env.is_some() && self.kind != MountType::Secret {
            return Err(format!("env is only allowed for secret mounts, not {kind}"));
        }
        self.readonly = readonly.unwrap_or(matches!(self.kind, MountType::Bind));
        match self.kind {
            MountType::Secret => {
                if self.source.is_some() && self.id.is_some() {
                    return Err("a secret mount takes source or id, not both".to_owned());
                }
                if self.id.is_none() {
                    self.id = self.source.clone().or_else(|| {
                        self.target
                            .as_deref()
                            .and_then(|t| t.rsplit('/').next())
                            .filter(|s| !s.is_empty())
                            .map(str::to_owned)
                    });
                }
                let Some(id) = &self.id else {
                    return Err("a secret mount needs an id (or a target to name it)".to_owned());
                };
                if self.target.is_none() && self.env.is_none() {
                    self.target = Some(format!("/run/secrets/{id}"));
                }
            }
            MountType::Ssh => {
                if self.id.is_none() {
                    self.id = Some("default".to_owned());
                }
                if self.target.is_none() {
                    self.target = Some(format!("/run/buildkit/ssh_agent.{index}"));
                }
            }
            MountType::Bind | MountType::Cache | MountType::Tmpfs => {
                if self.target.as_deref().is_none_or(str::is_empty) {
                    return Err(format!("a {kind} mount needs a target (target=/path)"));
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csv() {
        let cases: &[(&str, Option<&[&str]>)] = &[
            ("a,b", Some(&["a", "b"])),
            ("\"a,b\",c", Some(&["a,b", "c"])),
            ("\"say \"\"hi\"\"\"", Some(&["say \"hi\""])),
            ("a,,b", Some(&["a", "", "b"])),
            ("a\"b", None),
            ("\"open", None),
            ("", None),
        ];
        for &(input, want) in cases {
            let got = csv_fields(input).ok();
            let want = want.map(|w| w.iter().map(|s| s.to_string()).collect::<Vec<_>>());
            assert_eq!(got, want, "{input:?}");
        }
    }

    #[test]
    fn mounts() {
        let m = Mount::parse(
            "type=cache,target=/root/.cache,sharing=locked,mode=0700,uid=1000",
            0,
        )
        .unwrap();
        assert_eq!(m.kind, MountType::Cache);
        assert_eq!(m.target.as_deref(), Some("/root/.cache"));
        assert_eq!(m.sharing, Some(CacheSharing::Locked));
        assert_eq!((m.mode, m.uid), (Some(0o700), Some(1000)));
        assert!(!m.readonly);

        let m = Mount::parse("target=/src,from=build,source=/out", 0).unwrap();
        assert_eq!(m.kind, MountType::Bind);
        assert!(m.readonly, "bind mounts are read-only unless rw");
        assert!(!Mount::parse("target=/src,rw", 0).unwrap().readonly);

        let m = Mount::parse("type=secret,id=aws", 0).unwrap();
        assert_eq!(m.target.as_deref(), Some("/run/secrets/aws"));
        let m = Mount::parse("type=secret,target=/etc/token,required", 0).unwrap();
        assert_eq!(m.id.as_deref(), Some("token"));
        assert!(m.required);
        let m = Mount::parse("type=secret,id=tok,env=TOKEN", 0).unwrap();
        assert_eq!(
            (m.env.as_deref(), m.target.as_deref()),
            (Some("TOKEN"), None)
        );

        let m = Mount::parse("type=ssh", 2).unwrap();
        assert_eq!(m.id.as_deref(), Some("default"));
        assert_eq!(m.target.as_deref(), Some("/run/buildkit/ssh_agent.2"));

        let m = Mount::parse("type=tmpfs,target=/t,size=64m", 0).unwrap();
        assert_eq!(m.size, Some(64 << 20));
        let m = Mount::parse("type=cache,target=/c,uid=$UID", 0).unwrap();
        assert_eq!(m.uid, None, "deferred until expanded");
        let m = Mount::parse("type=$T,target=/c", 0).unwrap();
        assert_eq!(m.target.as_deref(), Some("/c"), "the type is deferred too");
        let expand = |v: &str| Ok(v.replace("$T", "cache"));
        let m = Mount::parse_with("type=$T,target=/c", 0, &expand).unwrap();
        assert_eq!(m.kind, MountType::Cache);
    }

    #[test]
    fn mount_errors() {
        let cases: &[(&str, &str)] = &[
            ("type=nfs,target=/x", "unsupported mount type \"nfs\""),
            ("type=bind", "a bind mount needs a target"),
            (
                "type=cache,target=/x,sharing=sometimes",
                "unsupported sharing value",
            ),
            (
                "type=bind,target=/x,sharing=locked",
                "sharing is not allowed for bind",
            ),
            (
                "type=bind,target=/x,mode=0755",
                "mode is not allowed for bind",
            ),
            ("type=cache,target=/x,mode=999", "invalid value for mode"),
            ("type=secret", "a secret mount needs an id"),
            ("type=secret,id=a,source=b", "source or id, not both"),
            ("type=secret,id=a,from=x", "from is not allowed for secret"),
            (
                "target=/x,required",
                "unexpected key 'required' for mount type 'bind'",
            ),
            (
                "type=cache,traget=/x",
                "unexpected key 'traget' in 'traget=/x' (did you mean target?)",
            ),
            ("type=cache,target=/x,size=1g", "unexpected key 'size'"),
            ("type=tmpfs,target=/x,size=lots", "invalid size"),
            ("target=/x,ro=maybe", "invalid value for ro"),
            ("oops", "invalid field 'oops'"),
            ("", "empty mount specification"),
        ];
        for &(input, want) in cases {
            let err = Mount::parse(input, 0).unwrap_err();
            assert!(err.contains(want), "{input:?}: {err}");
        }
    }
}
