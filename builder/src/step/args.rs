//! Build args: the ones BuildKit defines, and the value an ARG gives its name (for ARG steps and the ARGs before the first FROM).

use std::collections::BTreeMap;

use cairn_parser::expand::Lexer;
use cairn_parser::instruction::ArgDef;

/// The build args BuildKit defines for every build (TARGETPLATFORM and friends).
pub(crate) fn platform_args() -> BTreeMap<String, String> {
    let arch = cairn_layers::image::host_architecture();
    let platform = format!("linux/{arch}");
    [
        ("BUILDPLATFORM", platform.as_str()),
        ("BUILDOS", "linux"),
        ("BUILDARCH", arch),
        ("BUILDVARIANT", ""),
        ("TARGETPLATFORM", platform.as_str()),
        ("TARGETOS", "linux"),
        ("TARGETARCH", arch),
        ("TARGETVARIANT", ""),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.to_owned()))
    .collect()
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
) -> std::result::Result<(), String> {
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
) -> std::result::Result<Option<String>, String> {
    Ok(match (build_args.get(&def.name), &def.default) {
        (Some(v), _) => Some(v.clone()),
        (None, Some(d)) => Some(lexer.process_word(d, words).map_err(|e| e.to_string())?),
        (None, None) => globals.get(&def.name).cloned(),
    })
}
