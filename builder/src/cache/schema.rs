//! The cache key schema: every field that goes into a step's key, by kind of step, and why.
//!
//! A key is sha256 over length-prefixed (name, value) frames ([`super::KeyHasher`]), in the
//! order the builder feeds them. This table is where the fields are written down; a test
//! checks that the builder feeds no field this table does not list, and that each listed one
//! moves the key. Changing what a field holds, its name or its order changes every key of
//! that kind: existing caches then miss, so bump [`VERSION`] only on purpose.

/// The value of the first frame, `cairn-cache`: the key format's version. A record made under
/// another version is never found.
pub const VERSION: &str = "1";

/// One field of a key: its frame name, what its value is, and why the result depends on it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Field {
    pub name: &'static str,
    pub value: &'static str,
    pub why: &'static str,
}

/// The fields of one kind of step, in the order they are fed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Step {
    /// The `kind` frame's value.
    pub kind: &'static str,
    pub fields: &'static [Field],
}

const fn f(name: &'static str, value: &'static str, why: &'static str) -> Field {
    Field { name, value, why }
}

/// The frames every key starts with ([`super::KeyHasher::new`]).
pub const HEAD: &[Field] = &[
    f(
        "cairn-cache",
        "the format version, VERSION",
        "a change of format must not find records made by the old one",
    ),
    f(
        "parent",
        "the previous step's key (32 bytes; zeros for FROM and TREE)",
        "a step's result depends on the filesystem and config every step before it left",
    ),
    f(
        "kind",
        "the kind of step: one of SCHEMA's kinds",
        "the same fields mean different things to different instructions",
    ),
];

/// Every kind of step and its fields after [`HEAD`]. Fields marked "repeated" come once per
/// item, in order; "if" ones only when the condition holds.
pub const SCHEMA: &[Step] = &[
    Step {
        kind: "FROM",
        fields: &[f(
            "base",
            "`stage:<key>`, `image:<manifest digest>`, `layer:<diff_id>` or `scratch`",
            "the base fixes the stage's starting filesystem and config",
        )],
    },
    Step {
        kind: "WORKDIR",
        fields: &[
            f(
                "instruction",
                "the instruction as written",
                "the directory it names and makes",
            ),
            f(
                "dir",
                "repeated: each directory the layer holds, `path\\0mode uid:gid` (no time)",
                "the layer writes them with this metadata; times are the chain's or now",
            ),
        ],
    },
    Step {
        kind: "COPY",
        fields: COPY,
    },
    Step {
        kind: "ADD",
        fields: COPY,
    },
    Step {
        kind: "RUN",
        fields: &[
            f(
                "instruction",
                "the instruction as written",
                "the command run (flags included)",
            ),
            f(
                "heredoc",
                "repeated with body: a heredoc's name",
                "heredocs are part of the command",
            ),
            f("body", "the heredoc's content", "as heredoc"),
            f(
                "env",
                "repeated: each `NAME=value` the process sees (so the stage's ARGs)",
                "the process's output depends on its environment; a miss names the variable",
            ),
            f("workdir", "the working directory", "where the process runs"),
            f("user", "the USER, as configured", "who the process runs as"),
            f(
                "shell",
                "the shell words, NUL-joined",
                "what runs a shell-form command",
            ),
            f("network", "the network mode", "what the process can reach"),
            f(
                "history-args",
                "if the stage declares ARGs: the history line's ARG prefix",
                "the history entry lists the ARGs as declared, which the environment does not fix",
            ),
            f(
                "mount",
                "repeated: each --mount, expanded, as JSON",
                "what the process sees mounted",
            ),
            f(
                "source",
                "after a bind mount: `stage:<key>:<path>`, `image:<digest>:<path>` or a TREE key",
                "the content behind the mount",
            ),
        ],
    },
    Step {
        kind: "TREE",
        fields: &[
            f(
                "path",
                "repeated, sorted: each entry below a bind mount's source, relative",
                "the mount shows these names",
            ),
            f(
                "mode",
                "the entry's permission bits, decimal",
                "the mount shows them",
            ),
            f(
                "file",
                "for a regular file: its content's sha256, hex",
                "the content the step reads",
            ),
            f(
                "link",
                "for a symlink: its target",
                "what the step reads through it",
            ),
            f("type", "for a directory: `dir`", "an entry's kind"),
            f(
                "withheld",
                "instead of the above, for a file .dockerignore withholds: its mode",
                "the step sees it empty, whatever it holds",
            ),
        ],
    },
    Step {
        kind: "IMAGE",
        fields: &[
            f(
                "config",
                "the final image config's settings, as JSON (labels included)",
                "the steps' keys leave metadata out; a full hit reuses the image and its ID",
            ),
            f("author", "the image's author", "as config"),
            f(
                "history",
                "repeated with empty: each history entry's created_by",
                "as config",
            ),
            f("empty", "whether that entry made no layer", "as config"),
            f(
                "epoch",
                "SOURCE_DATE_EPOCH, if any",
                "it dates the image and clamps its times",
            ),
            f(
                "inline",
                "whether the config carries an inline cache",
                "the inline cache is in the config, so in the image's ID",
            ),
        ],
    },
];

/// COPY's and ADD's fields: the options as expanded, then what the layer will hold
/// ([`crate::copy::CopyPlan::describe`]), never a file time.
const COPY: &[Field] = &[
    f("dest", "the destination as written", "where the files land"),
    f(
        "workdir",
        "the working directory",
        "a relative destination is below it",
    ),
    f("owner", "--chown's `uid:gid`", "the entries' owner"),
    f(
        "chmod",
        "--chmod as written, or empty",
        "the entries' modes",
    ),
    f(
        "parents",
        "whether --parents is given",
        "where each source lands",
    ),
    f(
        "from",
        "--from's stage key or image, or `context`",
        "a stage's or image's files are known by it, not by their content",
    ),
    f(
        "source-meta",
        "if from a stage or image: `owners xattrs hardlinks`, or `hardlinks` with --chown",
        "layers made before those were kept must not be taken for ones that keep them",
    ),
    f(
        "exclude",
        "repeated: each --exclude pattern",
        "what is left out",
    ),
    f(
        "parent-dir",
        "repeated: each directory above the destination that the step makes",
        "the layer holds it",
    ),
    f(
        "kept-dir",
        "repeated: each one the image has, `path\\0mode uid:gid` (no time)",
        "the layer holds it with that metadata",
    ),
    f(
        "content",
        "repeated with data: a heredoc's destination",
        "the layer holds it",
    ),
    f("data", "the heredoc's content", "as content"),
    f(
        "download",
        "repeated with digest: an ADD download's destination",
        "the layer holds it",
    ),
    f("digest", "the download's sha256, hex", "its content"),
    f(
        "entry",
        "repeated: each entry's path in the image (bytes as named)",
        "the layer holds it; the fields after it, to the next entry, describe it",
    ),
    f(
        "mode",
        "its mode after --chmod, u32 little-endian; without --chmod, group and other \
         write bits cleared",
        "those bits are the checkout's umask: the same checkout should hit",
    ),
    f(
        "type",
        "`dir`, `withheld` (a context file sent without content) or `skipped` (a socket...)",
        "an entry's kind",
    ),
    f("symlink", "a symlink's target", "the link the layer holds"),
    f(
        "file",
        "a regular file's sha256 (empty when from a stage or image)",
        "the content the layer holds",
    ),
    f(
        "archive",
        "an archive ADD unpacks: its sha256 (empty when from a stage or image)",
        "what it unpacks",
    ),
];

/// The fields of `kind`, or None for a kind the schema does not know.
pub fn fields(kind: &str) -> Option<&'static [Field]> {
    SCHEMA.iter().find(|s| s.kind == kind).map(|s| s.fields)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cache::{Key, KeyHasher};

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
    /// `KeyHasher::new` and the literal field names given to `field`, in every production
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
                kinds.extend(literals(args, b'&'));
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
}
