//! The cache key schema: every field that goes into a step's key, by kind of step, and why.
//!
//! A key is sha256 over length-prefixed (name, value) frames ([`super::KeyHasher`]), in the
//! order the builder feeds them. This table is where the fields are written down; tests in
//! key.rs check that the builder feeds exactly the kinds and field names listed here, that
//! each one moves the key, and that known keys keep their values. Changing what a field
//! holds, its name or its order changes every key of that kind and existing caches miss: do
//! it only on purpose (and bump [`VERSION`] when the framing itself changes).

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
        fields: &[
            f(
                "base",
                "`stage:<key>`, `image:<manifest digest>`, `layer:<diff_id>` or `scratch`",
                "the base fixes the stage's starting filesystem and config",
            ),
            f(
                "platform",
                "the stage's platform, `os/arch[/variant]`",
                "RUN executes binaries of it, and a scratch stage's config names it",
            ),
        ],
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
    // ADD of a git repository: keyed by the commit its ref resolved to, before any fetch.
    Step {
        kind: "ADD",
        fields: &[
            f(
                "git-remote",
                "the repository URL, credentials hidden",
                "where the commit comes from",
            ),
            f(
                "git-commit",
                "the commit the ref resolved to (`git ls-remote`)",
                "it fixes the files: a moved branch misses, an unchanged one hits",
            ),
            f(
                "git-subdir",
                "the subdirectory taken, empty for the whole tree",
                "which of the commit's files are copied",
            ),
            f(
                "keep-git-dir",
                "`--keep-git-dir`",
                "whether `.git` is in the layer",
            ),
            f("dest", "the destination as written", "where the files land"),
            f(
                "workdir",
                "the working directory",
                "a relative destination's base",
            ),
            f("owner", "`--chown` as `uid:gid`", "the files' owner"),
            f("chmod", "`--chmod`, as written", "the files' modes"),
            f(
                "exclude",
                "repeated: each `--exclude` pattern",
                "which files are left out",
            ),
        ],
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
                "add-host",
                "repeated: each `--add-host` as `host=ip`",
                "the lines are in the step's /etc/hosts: what its names resolve to",
            ),
            f(
                "ulimit",
                "repeated: each `--ulimit` as `name=soft:hard`",
                "the process's limits, as BuildKit's ExecOp keys them",
            ),
            f(
                "shm-size",
                "`--shm-size` in bytes, if given",
                "the size of the /dev/shm the process gets",
            ),
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
            f(
                "deferred",
                "the compression a deferred image's layers get on export, or empty",
                "the mark is in the manifest: an eager build's image has compressed layers",
            ),
            f(
                "annotation",
                "repeated: each `--annotation` as `key=value`",
                "annotations are in the manifest, so in its digest",
            ),
            f(
                "squash",
                "`--squash` or `--squash-all`, only when given",
                "the layers are folded into one",
            ),
        ],
    },
];

/// COPY's and ADD's fields: the options as expanded, then what the layer will hold
/// (`CopyPlan::describe` in copy/plan.rs), never a file time.
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
