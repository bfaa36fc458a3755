//! ARG: the build args BuildKit defines, and the value an ARG gives its name, in a stage or
//! before the first FROM.

use std::collections::BTreeMap;

use cairn_layers::image::{History, timestamp};
use cairn_layers::platform::Platform;
use cairn_parser::expand::{ExpandError, Lexer};
use cairn_parser::instruction::{ArgDef, Instruction};

use super::ctx::{Ctx, Outcome, at_with};
use crate::error::Result;
use crate::stage::StageState;

/// The build args BuildKit defines for every build: BUILDPLATFORM and friends for this
/// machine, TARGETPLATFORM and friends for the platform being built.
pub(crate) fn platform_args(target: &Platform) -> BTreeMap<String, String> {
    let build = Platform::host();
    let mut out = BTreeMap::new();
    for (prefix, p) in [("BUILD", &build), ("TARGET", target)] {
        out.insert(format!("{prefix}PLATFORM"), p.to_string());
        out.insert(format!("{prefix}OS"), p.os.clone());
        out.insert(format!("{prefix}ARCH"), p.architecture.clone());
        out.insert(
            format!("{prefix}VARIANT"),
            p.variant.clone().unwrap_or_default(),
        );
    }
    out
}

/// `ARG` in a stage or before the first FROM: a build arg's value wins over the default; a
/// redeclared global ARG without a default takes the global value; a bare name nothing gives
/// a value keeps the value it has (BuildKit adds nothing to the environment for it).
pub(crate) fn declare(
    into: &mut BTreeMap<String, String>,
    defs: &[ArgDef],
    globals: &BTreeMap<String, String>,
    build_args: &BTreeMap<String, String>,
    lexer: &Lexer,
) -> std::result::Result<(), ExpandError> {
    for def in defs {
        if let Some(v) = arg_value(def, globals, build_args, lexer, &*into)? {
            into.insert(def.name.clone(), v);
        }
    }
    Ok(())
}

/// The value one `ARG` definition gives its name (a default expands with `words`), if any.
pub(crate) fn arg_value(
    def: &ArgDef,
    globals: &BTreeMap<String, String>,
    build_args: &BTreeMap<String, String>,
    lexer: &Lexer,
    words: &(impl cairn_parser::expand::Env + ?Sized),
) -> std::result::Result<Option<String>, ExpandError> {
    Ok(match (build_args.get(&def.name), &def.default) {
        (Some(v), _) => Some(v.clone()),
        (None, Some(d)) => Some(lexer.process_word(d, words)?),
        (None, None) => globals.get(&def.name).cloned(),
    })
}

/// ARG in a stage: each name's value joins the stage's args (and its environment, for the
/// steps after it), with an empty history entry.
pub(crate) fn step(
    cx: &Ctx<'_>,
    st: &mut StageState,
    ins: &Instruction,
    args: &[ArgDef],
) -> Result<Outcome> {
    let Ctx {
        opts,
        globals,
        lexer,
        epoch,
        ..
    } = *cx;
    let created = timestamp(epoch);
    // One at a time: a default expands with the ENV and the ARGs before it, and an
    // ARG with a value then wins over an inherited ENV of its name (BuildKit's
    // dispatchArg adds it to the state's environment).
    let mut decls = Vec::new();
    for def in args {
        st.meta.env_index.sync(&st.config.config.env);
        let words = crate::envindex::Words {
            env: &st.config.config.env,
            index: &st.meta.env_index,
            args: &st.args,
            over: &st.meta.args_over_env,
        };
        let value = arg_value(def, globals, &opts.build_args, lexer, &words)
            .map_err(|e| at_with(opts, ins.span, ins.keyword(), e))?;
        if let Some(v) = &value {
            st.args.insert(def.name.clone(), v.clone());
            st.meta.args_over_env.insert(def.name.clone());
            st.meta.env_seq.push(def.name.clone());
        }
        decls.push((def.name.clone(), value));
    }
    // BuildKit's dispatchArg commits "ARG k=v ..." as an empty layer, without the
    // "# buildkit" of steps with a state.
    st.config.history.push(History {
        created: Some(created),
        created_by: Some(crate::history::arg_line(&decls)),
        comment: Some("buildkit.dockerfile.v0".into()),
        empty_layer: true,
        ..History::default()
    });
    st.meta.arg_decls.extend(decls);
    Ok(Outcome::Meta)
}
