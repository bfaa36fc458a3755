//! Step cache keys: fields framed into a chained sha256, and the summary of them that
//! explains a later miss.

use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};

/// A step's cache key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Key([u8; 32]);

impl Key {
    /// The key before any step: what a FROM chains from.
    pub fn root() -> Key {
        Key([0; 32])
    }

    pub fn hex(&self) -> String {
        hex::encode(self.0)
    }

    pub fn from_hex(text: &str) -> Option<Key> {
        let bytes = hex::decode(text).ok()?;
        Some(Key(bytes.try_into().ok()?))
    }
}

/// Builds a key from named fields, each length-prefixed so that no two different field lists
/// hash alike (`a`,`bc` versus `ab`,`c`). It also keeps a [`Summary`] of the fields, so that a
/// later miss can say which input changed.
#[derive(Debug)]
pub struct KeyHasher {
    hash: Sha256,
    summary: Summary,
    /// The COPY entry the following fields describe: where its path starts in `names`, and
    /// the hash of its fields.
    entry: Option<(usize, Sha256)>,
    /// Closed entries: their paths, end to end, and each one's end and short hash. Strings
    /// and a sorted map are made only for a miss: a no-op rebuild of 20,000 files spent a
    /// tenth of its time on them.
    names: Vec<u8>,
    paths: Vec<(usize, usize, [u8; 8])>,
    /// Every other field (and `env`), raw, for the same reason: the name, end to end in
    /// `raw`, and where each name and value ends; hashed short only for a miss. A RUN's
    /// bind-mount key has fields for every file of the mount.
    raw: Vec<u8>,
    raw_fields: Vec<(bool, usize, usize, usize)>,
}

/// The inputs of a step, each as a short hash, by kind: what a miss is explained with.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Summary {
    pub parent: String,
    /// Environment variables by name.
    pub env: std::collections::BTreeMap<String, String>,
    /// Copied entries by destination path.
    pub paths: std::collections::BTreeMap<String, String>,
    /// Every other field: name and hash, in order.
    pub fields: Vec<(String, String)>,
}

fn short(bytes: &[u8]) -> String {
    super::memo::hex(&Sha256::digest(bytes)[..8])
}

impl KeyHasher {
    pub fn new(kind: &str, parent: &Key) -> KeyHasher {
        let mut k = KeyHasher {
            hash: Sha256::new(),
            summary: Summary {
                parent: parent.hex(),
                ..Summary::default()
            },
            entry: None,
            names: Vec::new(),
            paths: Vec::new(),
            raw: Vec::new(),
            raw_fields: Vec::new(),
        };
        k.frame("cairn-cache", super::schema::VERSION.as_bytes());
        k.frame("parent", &parent.0);
        k.field("kind", kind);
        k
    }

    fn frame(&mut self, name: &str, value: &[u8]) {
        for part in [name.as_bytes(), value] {
            self.hash.update((part.len() as u64).to_le_bytes());
            self.hash.update(part);
        }
    }

    pub fn field(&mut self, name: &str, value: impl AsRef<[u8]>) -> &mut KeyHasher {
        let value = value.as_ref();
        self.frame(name, value);
        match name {
            "env" => self.keep_raw(true, name, value),
            "entry" => {
                self.close_entry();
                let mut h = Sha256::new();
                h.update(value);
                let start = self.names.len();
                self.names.extend_from_slice(value);
                self.entry = Some((start, h));
            }
            _ => match &mut self.entry {
                Some((_, h))
                    if matches!(name, "mode" | "file" | "symlink" | "type" | "archive") =>
                {
                    h.update(name.as_bytes());
                    h.update(value);
                }
                _ => {
                    self.close_entry();
                    self.keep_raw(false, name, value);
                }
            },
        }
        self
    }

    fn keep_raw(&mut self, env: bool, name: &str, value: &[u8]) {
        let start = self.raw.len();
        self.raw.extend_from_slice(name.as_bytes());
        let name_end = self.raw.len();
        self.raw.extend_from_slice(value);
        self.raw_fields.push((env, start, name_end, self.raw.len()));
    }

    fn close_entry(&mut self) {
        if let Some((start, h)) = self.entry.take() {
            let short: [u8; 32] = h.finalize().into();
            let mut first = [0u8; 8];
            first.copy_from_slice(&short[..8]);
            self.paths.push((start, self.names.len(), first));
        }
    }

    pub fn finish(self) -> Key {
        self.finish_with_summary().0
    }

    /// The key, and its inputs for explaining a later miss (built only when asked: a hit
    /// never needs them).
    pub fn finish_with_summary(mut self) -> (Key, SummaryParts) {
        self.close_entry();
        (
            Key(self.hash.finalize().into()),
            SummaryParts {
                summary: self.summary,
                names: self.names,
                paths: self.paths,
                raw: self.raw,
                raw_fields: self.raw_fields,
            },
        )
    }
}

/// A [`Summary`] not yet put together.
#[derive(Debug)]
pub struct SummaryParts {
    summary: Summary,
    names: Vec<u8>,
    paths: Vec<(usize, usize, [u8; 8])>,
    raw: Vec<u8>,
    raw_fields: Vec<(bool, usize, usize, usize)>,
}

impl SummaryParts {
    pub fn build(self) -> Summary {
        let mut summary = self.summary;
        for &(env, start, name_end, end) in &self.raw_fields {
            let value = &self.raw[name_end..end];
            if env {
                let text = String::from_utf8_lossy(value);
                let var = text.split_once('=').map_or(&*text, |(k, _)| k).to_owned();
                summary.env.insert(var, short(value));
            } else {
                let name = String::from_utf8_lossy(&self.raw[start..name_end]).into_owned();
                summary.fields.push((name, short(value)));
            }
        }
        let names = &self.names;
        // Collecting sorts once, and the last entry of a path wins, as inserting would.
        summary
            .paths
            .extend(self.paths.iter().map(|(start, end, short)| {
                (
                    String::from_utf8_lossy(&names[*start..*end]).into_owned(),
                    super::memo::hex(short),
                )
            }));
        summary
    }
}

impl Summary {
    /// One line saying what differs from `before` (the same step's inputs last time).
    pub fn explain(
        &self,
        before: &Summary,
        args: &std::collections::BTreeMap<String, String>,
    ) -> String {
        if self.parent != before.parent {
            return "parent step changed".into();
        }
        let mut changed_paths: Vec<&str> = self
            .paths
            .iter()
            .filter(|(p, h)| before.paths.get(*p) != Some(*h))
            .map(|(p, _)| p.as_str())
            .chain(
                before
                    .paths
                    .keys()
                    .filter(|p| !self.paths.contains_key(*p))
                    .map(String::as_str),
            )
            .collect();
        if !changed_paths.is_empty() {
            changed_paths.sort();
            changed_paths.dedup();
            let n = changed_paths.len();
            let shown: Vec<&str> = changed_paths.iter().take(3).copied().collect();
            let more = if n > 3 { ", …" } else { "" };
            let noun = if n == 1 { "file" } else { "files" };
            return format!("{n} {noun} changed ({}{more})", shown.join(", "));
        }
        let mut vars: Vec<&String> = self
            .env
            .iter()
            .filter(|(k, v)| before.env.get(*k) != Some(*v))
            .map(|(k, _)| k)
            .chain(before.env.keys().filter(|k| !self.env.contains_key(*k)))
            .collect();
        vars.dedup();
        if let Some(v) = vars.first() {
            let what = if args.contains_key(*v) {
                "build arg"
            } else {
                "environment variable"
            };
            return format!("{what} {v} changed");
        }
        let names: Vec<&str> = self
            .fields
            .iter()
            .zip(
                before
                    .fields
                    .iter()
                    .map(Some)
                    .chain(std::iter::repeat(None)),
            )
            .filter(|(a, b)| Some(*a) != *b)
            .map(|(a, _)| a.0.as_str())
            .collect();
        match names.first() {
            Some(n) => format!("{n} changed"),
            None if self.fields.len() != before.fields.len() => "inputs changed".into(),
            None => "the earlier result is gone from the store".into(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::schema::{HEAD, SCHEMA};
    use super::*;

    #[test]
    fn keys_frame_their_fields() {
        let k = |fields: &[(&str, &str)]| {
            let mut h = KeyHasher::new("RUN", &Key::root());
            for (n, v) in fields {
                h.field(n, v);
            }
            h.finish()
        };
        type Fields<'a> = &'a [(&'a str, &'a str)];
        let cases: &[(Fields<'_>, Fields<'_>)] = &[
            (&[("a", "bc")], &[("ab", "c")]),
            (&[("x", "1"), ("y", "2")], &[("x", "12")]),
            (&[("x", "")], &[]),
            (
                &[("env", "A=1"), ("env", "B=2")],
                &[("env", "B=2"), ("env", "A=1")],
            ),
        ];
        for (a, b) in cases {
            assert_ne!(k(a), k(b), "{a:?} vs {b:?}");
        }
        assert_eq!(k(&[("a", "b")]), k(&[("a", "b")]));
        let other_parent = {
            let mut h = KeyHasher::new("RUN", &k(&[("p", "1")]));
            h.field("a", "b");
            h.finish()
        };
        assert_ne!(other_parent, k(&[("a", "b")]));
    }

    fn key(kind: &str, parent: &Key, fields: &[(&str, String)]) -> Key {
        let mut k = KeyHasher::new(kind, parent);
        for (name, value) in fields {
            k.field(name, value);
        }
        k.finish()
    }

    #[test]
    fn each_field_moves_the_key() {
        let root = Key::root();
        let other_parent = key("FROM", &root, &[("base", "scratch".into())]);
        for step in SCHEMA {
            let kind = step.kind;
            let base: Vec<(&str, String)> = step
                .fields
                .iter()
                .map(|f| (f.name, "v".to_owned()))
                .collect();
            let k = key(kind, &root, &base);
            assert_eq!(k, key(kind, &root, &base), "{kind}: the same inputs");
            assert_ne!(k, key(kind, &other_parent, &base), "{kind}: another parent");
            for other in SCHEMA.iter().filter(|o| o.kind != kind) {
                assert_ne!(k, key(other.kind, &root, &base), "{kind} vs {}", other.kind);
            }
            for (i, f) in step.fields.iter().enumerate() {
                let mut changed = base.clone();
                changed[i].1 = "w".into();
                assert_ne!(k, key(kind, &root, &changed), "{kind} {}: changed", f.name);
                let mut emptied = base.clone();
                emptied[i].1.clear();
                assert_ne!(k, key(kind, &root, &emptied), "{kind} {}: empty", f.name);
                let mut dropped = base.clone();
                dropped.remove(i);
                assert_ne!(k, key(kind, &root, &dropped), "{kind} {}: left out", f.name);
            }
        }
    }

    /// Keys computed by hand from the framing (u64 little-endian length, then bytes, for the
    /// name and then the value): existing caches must keep hitting, so these never change.
    #[test]
    fn keys_keep_their_values() {
        let from = key("FROM", &Key::root(), &[("base", "scratch".into())]);
        assert_eq!(
            from.hex(),
            "10cf2fa148bb99715a6fe89b5d476a58131e3caf9f1f31322b6f8374968d7a3a"
        );
        let run = key(
            "RUN",
            &from,
            &[
                ("instruction", "RUN make".into()),
                ("env", "A=1".into()),
                ("workdir", "/src".into()),
            ],
        );
        assert_eq!(
            run.hex(),
            "e2cca7e718b20cfa5bf3c6cd9c14d7b4f018710edab41754399f9f6df9f8c64a"
        );
    }

    /// The string literals at the start of `text`, up to the first `stop` byte outside one.
    fn literals(text: &str, stop: u8) -> Vec<String> {
        let mut out = Vec::new();
        let mut rest = text;
        loop {
            let next = rest.bytes().position(|b| b == b'"' || b == stop);
            match next {
                Some(i) if rest.as_bytes()[i] == b'"' => {
                    let tail = &rest[i + 1..];
                    let end = tail.find('"').unwrap_or(tail.len());
                    out.push(tail[..end].to_owned());
                    rest = &tail[(end + 1).min(tail.len())..];
                }
                _ => return out,
            }
        }
    }

    /// The schema lists what the builder keys, no more and no less: the kinds given to
    /// `KeyHasher::new` (its string literals up to the end of the statement) and the literal
    /// field names given to `field`, in every production
    /// source file of the crate.
    #[test]
    fn the_schema_lists_every_field_the_builder_keys() {
        let mut kinds = std::collections::BTreeSet::new();
        let mut names = std::collections::BTreeSet::new();
        let src = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
        for e in walkdir::WalkDir::new(&src) {
            let e = e.unwrap();
            if e.path().extension().is_none_or(|x| x != "rs") {
                continue;
            }
            let text = std::fs::read_to_string(e.path()).unwrap();
            let text = text.split("#[cfg(test)]").next().unwrap_or_default();
            for (i, _) in text.match_indices("KeyHasher::new(") {
                let args = &text[i + "KeyHasher::new(".len()..];
                kinds.extend(literals(args, b';'));
            }
            for (i, _) in text.match_indices(".field(") {
                let args = text[i + ".field(".len()..].trim_start();
                if args.starts_with('"') {
                    names.extend(literals(args, b','));
                }
            }
        }
        let listed_kinds: std::collections::BTreeSet<String> =
            SCHEMA.iter().map(|s| s.kind.to_owned()).collect();
        assert_eq!(kinds, listed_kinds, "kinds keyed vs kinds in SCHEMA");
        let listed: std::collections::BTreeSet<String> = SCHEMA
            .iter()
            .flat_map(|s| s.fields)
            .chain(HEAD.iter().filter(|f| f.name == "kind"))
            .map(|f| f.name.to_owned())
            .collect();
        assert_eq!(names, listed, "fields keyed vs fields in SCHEMA and HEAD");
    }

    /// The summary of a COPY key with `fields` (name, value), built as a step builds it.
    fn summary(parent: &Key, fields: &[(&str, &str)]) -> Summary {
        let mut k = KeyHasher::new("COPY", parent);
        for (name, value) in fields {
            k.field(name, value);
        }
        k.finish_with_summary().1.build()
    }

    #[test]
    fn a_miss_says_what_changed() {
        let root = Key::root();
        let other = KeyHasher::new("FROM", &root).finish();
        let before: &[(&str, &str)] = &[
            ("dest", "/app/"),
            ("env", "A=1"),
            ("entry", "app/a"),
            ("file", "1"),
            ("entry", "app/b"),
            ("mode", "644"),
            ("file", "2"),
        ];
        let with = |i: usize, field: (&'static str, &'static str)| {
            let mut f = before.to_vec();
            f[i] = field;
            f
        };
        let files = |n: usize| -> Vec<(&str, &str)> {
            let mut f = before[..2].to_vec();
            let names = ["app/1", "app/2"];
            for name in &names[..n] {
                f.extend([("entry", *name), ("file", "new")]);
            }
            f
        };
        // What changes, the parent, the fields, and the line that says so.
        type Case<'a> = (&'a str, Key, Vec<(&'a str, &'a str)>, &'a str);
        let cases: Vec<Case<'_>> = vec![
            ("the parent", other, before.to_vec(), "parent step changed"),
            (
                "a file's content",
                root,
                with(6, ("file", "3")),
                "1 file changed (app/b)",
            ),
            (
                "a file's mode",
                root,
                with(5, ("mode", "755")),
                "1 file changed (app/b)",
            ),
            (
                "files added and removed",
                root,
                files(1),
                "3 files changed (app/1, app/a, app/b)",
            ),
            (
                "more than three",
                root,
                files(2),
                "4 files changed (app/1, app/2, app/a, …)",
            ),
            (
                "a variable",
                root,
                with(1, ("env", "A=2")),
                "build arg A changed",
            ),
            (
                "a new variable in place of one",
                root,
                with(1, ("env", "B=1")),
                "environment variable B changed",
            ),
            (
                "another field",
                root,
                with(0, ("dest", "/srv/")),
                "dest changed",
            ),
            (
                "nothing",
                root,
                before.to_vec(),
                "the earlier result is gone from the store",
            ),
        ];
        let before = summary(&root, before);
        let args = std::collections::BTreeMap::from([("A".to_owned(), "1".to_owned())]);
        for (what, parent, fields, want) in cases {
            assert_eq!(
                summary(&parent, &fields).explain(&before, &args),
                want,
                "{what}"
            );
        }
        let env_only = summary(&root, &[("env", "A=2")]);
        let no_args = std::collections::BTreeMap::new();
        let env_before = summary(&root, &[("env", "A=1")]);
        assert_eq!(
            env_only.explain(&env_before, &no_args),
            "environment variable A changed"
        );
    }
}
