//! What every step reads ([`Ctx`]) and what they share: a new layer joining the stage, a file
//! owner, and errors pointing at the instruction.

use std::collections::BTreeMap;

use cairn_layers::Store;
use cairn_layers::image::{Descriptor, History};
use cairn_layers::listing::DirMeta;
use cairn_parser::expand::Lexer;
use cairn_parser::instruction::Instruction;
use cairn_parser::{Dockerfile, Span};

use crate::context::BuildContext;
use crate::error::{Error, Location, Result, StepError};
use crate::options::BuildOptions;
use crate::progress::{Event, Phase};
use crate::sandbox::Sandbox;
use crate::stage::{StageResult, StageState};
use crate::users;

/// What every step of a build reads.
pub(crate) struct Ctx<'a> {
    pub(crate) store: &'a Store,
    pub(crate) opts: &'a BuildOptions,
    pub(crate) context: &'a BuildContext,
    pub(crate) df: &'a Dockerfile,
    pub(crate) globals: &'a BTreeMap<String, String>,
    pub(crate) results: &'a BTreeMap<usize, StageResult>,
    pub(crate) lexer: &'a Lexer,
    pub(crate) epoch: Option<i64>,
    /// Made at the first RUN and shared by the rest of the build.
    pub(crate) sandbox: &'a std::sync::OnceLock<Result<Sandbox, std::sync::Arc<Error>>>,
    pub(crate) progress: &'a (dyn Fn(Event) + Sync),
    pub(crate) cache: &'a crate::cache::Cache,
    /// Images this build pulled, by name, so `--pull` asks each registry once.
    pub(crate) pulled: &'a std::sync::Mutex<BTreeMap<String, Descriptor>>,
    /// The platform this build is for (TARGETPLATFORM): a stage's unless its FROM names one.
    pub(crate) platform: &'a cairn_layers::platform::Platform,
    /// What this platform's build used and did, for its provenance.
    pub(crate) trail: &'a crate::trail::Trail,
}

/// How a step got its result.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Outcome {
    /// It ran (and its result is recorded in the cache).
    Ran,
    /// Its recorded result was used.
    Cached,
    /// A metadata step: worked out again every time, it costs nothing.
    Meta,
}

/// Where an instruction's error points: its span in the Dockerfile, with the caret.
pub(crate) fn at(
    opts: &BuildOptions,
    span: Span,
    instruction: &str,
    message: impl Into<String>,
) -> Error {
    StepError {
        at: Location::new(&opts.dockerfile_name, &opts.dockerfile, span, instruction),
        message: message.into(),
        cause: None,
    }
    .into()
}

/// An instruction's error that another error caused: the first line shows the cause's own
/// text, as a message would, and the cause stays the source (with its own causes).
pub(crate) fn at_with(
    opts: &BuildOptions,
    span: Span,
    instruction: &str,
    cause: impl Into<Error>,
) -> Error {
    let cause = cause.into();
    if let Error::Step(_) = cause {
        // Already located: pointing at the line again would show it twice.
        return cause;
    }
    let message = cause.to_string();
    at_caused(opts, span, instruction, message, cause)
}

/// [`at_with`], the first line saying what was being done first: `{context}: {cause}`.
pub(crate) fn at_with_context(
    opts: &BuildOptions,
    span: Span,
    instruction: &str,
    context: impl std::fmt::Display,
    cause: impl Into<Error>,
) -> Error {
    let cause = cause.into();
    let message = format!("{context}: {cause}");
    at_caused(opts, span, instruction, message, cause)
}

/// An instruction's error with its own first line, `cause` kept as the source.
pub(crate) fn at_caused(
    opts: &BuildOptions,
    span: Span,
    instruction: &str,
    message: impl Into<String>,
    cause: impl Into<Error>,
) -> Error {
    StepError {
        at: Location::new(&opts.dockerfile_name, &opts.dockerfile, span, instruction),
        message: message.into(),
        cause: Some(Box::new(cause.into())),
    }
    .into()
}

/// Runs `f`, reporting how long it took as the step's `phase`.
pub(crate) fn timed<T>(cx: &Ctx<'_>, id: usize, phase: Phase, f: impl FnOnce() -> T) -> T {
    let start = std::time::Instant::now();
    let out = f();
    timing(cx, id, phase, start.elapsed().as_secs_f64());
    out
}

/// Reports `seconds` spent in the step's `phase`.
pub(crate) fn timing(cx: &Ctx<'_>, id: usize, phase: Phase, seconds: f64) {
    (cx.progress)(Event::Timing { id, phase, seconds });
}

pub(crate) fn layer_record(l: &cairn_layers::layer::StoredLayer) -> crate::cache::LayerRecord {
    crate::cache::LayerRecord {
        descriptor: l.descriptor.clone(),
        diff_id: l.diff_id.clone(),
        uncompressed_size: l.uncompressed_size,
    }
}

/// Records a new layer of step `id` in the stage, with its history entry: applied to its
/// filesystem, added to its image, and reported (its size) to the progress.
pub(crate) fn add_layer(
    cx: &Ctx<'_>,
    id: usize,
    st: &mut StageState,
    layer: cairn_layers::layer::StoredLayer,
    dirs: Option<Vec<(String, DirMeta)>>,
    created: String,
    created_by: String,
) {
    (cx.progress)(Event::Layer {
        id,
        size: layer.descriptor.size,
    });
    if let Some(listing) = layer.listing {
        cx.cache.put_listing(&layer.descriptor.digest, listing);
    }
    st.push_layer(layer.descriptor, layer.diff_id, dirs);
    st.config.history.push(History {
        created: Some(created),
        created_by: Some(created_by),
        comment: Some("buildkit.dockerfile.v0".into()),
        ..History::default()
    });
}

/// The owner a file operation gives as `spec` (`--chown`, WORKDIR's USER), names looked up in
/// the stage's own /etc/passwd and /etc/group (from its layer listings when they keep them,
/// else unpacked); a name the image lacks is id 0,
/// as in BuildKit, and a warning naming `what` and the Dockerfile line.
pub(crate) fn file_owner(
    cx: &Ctx<'_>,
    st: &mut StageState,
    ins: &Instruction,
    spec: &str,
    what: &str,
) -> Result<users::Owner> {
    let mut files = |rel: &str| st.image_file(cx.cache, cx.store, rel);
    let (owner, missing) = users::resolve_file_owner(spec, &mut files)
        .map_err(|e| at_with_context(cx.opts, ins.span, ins.keyword(), what, e))?;
    for m in missing {
        (cx.progress)(Event::Warning(format!(
            "{}:{}: {what}: the image has no {m}, so id 0 is used, as BuildKit does",
            cx.opts.dockerfile_name, ins.span.start
        )));
    }
    Ok(owner)
}
