//! FROM: the stage's base (a stage, scratch, a named context or an image) and its platform.

use cairn_layers::image::ImageConfig;

use super::ctx::{Ctx, at};
use crate::error::Result;

/// An `os/arch[/variant]` (or a bare arch, on linux) as containerd normalises it: arch aliases
/// to their Go names, arm64's default variant v8 dropped.
pub(crate) fn normal_platform(spec: &str) -> (String, String, Option<String>) {
    let parts: Vec<String> = spec.split('/').map(str::to_ascii_lowercase).collect();
    let (os, arch, variant) = match parts.as_slice() {
        [arch] => ("linux".to_owned(), arch.clone(), None),
        [os, arch] => (os.clone(), arch.clone(), None),
        [os, arch, variant, ..] => (os.clone(), arch.clone(), Some(variant.clone())),
        [] => (String::new(), String::new(), None),
    };
    let arch = match arch.as_str() {
        "x86_64" | "x86-64" => "amd64".to_owned(),
        "aarch64" => "arm64".to_owned(),
        "i386" | "i686" => "386".to_owned(),
        "armhf" => return (os, "arm".to_owned(), Some("v7".to_owned())),
        "armel" => return (os, "arm".to_owned(), Some("v6".to_owned())),
        _ => arch,
    };
    let variant = variant.filter(|v| !(v.is_empty() || arch == "arm64" && v == "v8"));
    (os, arch, variant)
}

/// `FROM --platform=P`: until cairn builds for other platforms, a base of another platform is
/// an error naming both, not an image silently built for the base's.
pub(crate) fn check_platform(
    cx: &Ctx<'_>,
    stage: &cairn_parser::Stage,
    base: &str,
    config: &ImageConfig,
) -> Result<()> {
    let Some(raw) = &stage.platform else {
        return Ok(());
    };
    let wanted = cx.lexer.process_word(raw, cx.globals).map_err(|e| {
        at(
            cx.opts,
            stage.span,
            "FROM",
            format!("--platform={raw}: {e}"),
        )
    })?;
    if wanted.is_empty() {
        return Ok(());
    }
    let (os, arch, variant) = normal_platform(&wanted);
    let found = match &config.variant {
        Some(v) if !v.is_empty() => format!("{}/{}/{v}", config.os, config.architecture),
        _ => format!("{}/{}", config.os, config.architecture),
    };
    let (f_os, f_arch, f_variant) = normal_platform(&found);
    let variant_differs = matches!((&variant, &f_variant), (Some(a), Some(b)) if a != b);
    if os != f_os || arch != f_arch || variant_differs {
        return Err(at(
            cx.opts,
            stage.span,
            "FROM",
            format!(
                "--platform={wanted}: the base image {base:?} is {found}, not {wanted} \
                 (cairn cannot build for another platform yet)"
            ),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::normal_platform;

    #[test]
    fn platforms_normalise_as_containerd_does() {
        let p = |os: &str, arch: &str, v: Option<&str>| {
            (os.to_owned(), arch.to_owned(), v.map(str::to_owned))
        };
        let cases = [
            ("linux/amd64", p("linux", "amd64", None)),
            ("amd64", p("linux", "amd64", None)),
            ("linux/x86_64", p("linux", "amd64", None)),
            ("Linux/AMD64", p("linux", "amd64", None)),
            ("linux/aarch64", p("linux", "arm64", None)),
            ("linux/arm64/v8", p("linux", "arm64", None)),
            ("linux/arm/v7", p("linux", "arm", Some("v7"))),
            ("linux/armhf", p("linux", "arm", Some("v7"))),
            ("windows/amd64", p("windows", "amd64", None)),
        ];
        for (spec, want) in cases {
            assert_eq!(normal_platform(spec), want, "{spec}");
        }
    }
}
