//! BuildKit's lint rules: names, descriptions and documentation URLs, kept word for word.

/// One lint rule as BuildKit defines it (`frontend/dockerfile/linter/ruleset.go`).
#[derive(Debug, PartialEq, Eq)]
pub struct Rule {
    pub name: &'static str,
    pub description: &'static str,
    /// BuildKit's documentation page; InvalidBaseImagePlatform has none there either.
    pub url: Option<&'static str>,
    /// Off unless `# check=experimental=NAME|all` turns it on; `skip` does not touch it.
    pub experimental: bool,
}

macro_rules! rules {
    ($($id:ident = $name:literal, $desc:literal, $url:expr, $exp:literal;)*) => {
        $(pub static $id: Rule = Rule {
            name: $name,
            description: $desc,
            url: $url,
            experimental: $exp,
        };)*
        /// Every rule, in BuildKit's order.
        pub static ALL: &[&Rule] = &[$(&$id),*];
    };
}

rules! {
    STAGE_NAME_CASING = "StageNameCasing", "Stage names should be lowercase",
        Some("https://docs.docker.com/go/dockerfile/rule/stage-name-casing/"), false;
    FROM_AS_CASING = "FromAsCasing",
        "The 'as' keyword should match the case of the 'from' keyword",
        Some("https://docs.docker.com/go/dockerfile/rule/from-as-casing/"), false;
    NO_EMPTY_CONTINUATION = "NoEmptyContinuation",
        "Empty continuation lines will become errors in a future release",
        Some("https://docs.docker.com/go/dockerfile/rule/no-empty-continuation/"), false;
    CONSISTENT_INSTRUCTION_CASING = "ConsistentInstructionCasing",
        "All commands within the Dockerfile should use the same casing (either upper or lower)",
        Some("https://docs.docker.com/go/dockerfile/rule/consistent-instruction-casing/"), false;
    DUPLICATE_STAGE_NAME = "DuplicateStageName", "Stage names should be unique",
        Some("https://docs.docker.com/go/dockerfile/rule/duplicate-stage-name/"), false;
    RESERVED_STAGE_NAME = "ReservedStageName",
        "Reserved words should not be used as stage names",
        Some("https://docs.docker.com/go/dockerfile/rule/reserved-stage-name/"), false;
    JSON_ARGS_RECOMMENDED = "JSONArgsRecommended",
        "JSON arguments recommended for ENTRYPOINT/CMD to prevent unintended behavior related to OS signals",
        Some("https://docs.docker.com/go/dockerfile/rule/json-args-recommended/"), false;
    MAINTAINER_DEPRECATED = "MaintainerDeprecated",
        "The MAINTAINER instruction is deprecated, use a label instead to define an image author",
        Some("https://docs.docker.com/go/dockerfile/rule/maintainer-deprecated/"), false;
    UNDEFINED_ARG_IN_FROM = "UndefinedArgInFrom", "FROM command must use declared ARGs",
        Some("https://docs.docker.com/go/dockerfile/rule/undefined-arg-in-from/"), false;
    WORKDIR_RELATIVE_PATH = "WorkdirRelativePath",
        "Relative workdir without an absolute workdir declared within the build can have unexpected results if the base image changes",
        Some("https://docs.docker.com/go/dockerfile/rule/workdir-relative-path/"), false;
    UNDEFINED_VAR = "UndefinedVar", "Variables should be defined before their use",
        Some("https://docs.docker.com/go/dockerfile/rule/undefined-var/"), false;
    MULTIPLE_INSTRUCTIONS_DISALLOWED = "MultipleInstructionsDisallowed",
        "Multiple instructions of the same type should not be used in the same stage",
        Some("https://docs.docker.com/go/dockerfile/rule/multiple-instructions-disallowed/"), false;
    LEGACY_KEY_VALUE_FORMAT = "LegacyKeyValueFormat",
        "Legacy key/value format with whitespace separator should not be used",
        Some("https://docs.docker.com/go/dockerfile/rule/legacy-key-value-format/"), false;
    INVALID_BASE_IMAGE_PLATFORM = "InvalidBaseImagePlatform",
        "Base image platform does not match expected target platform", None, false;
    REDUNDANT_TARGET_PLATFORM = "RedundantTargetPlatform",
        "Setting platform to predefined $TARGETPLATFORM in FROM is redundant as this is the default behavior",
        Some("https://docs.docker.com/go/dockerfile/rule/redundant-target-platform/"), false;
    SECRETS_USED_IN_ARG_OR_ENV = "SecretsUsedInArgOrEnv",
        "Sensitive data should not be used in the ARG or ENV commands",
        Some("https://docs.docker.com/go/dockerfile/rule/secrets-used-in-arg-or-env/"), false;
    INVALID_DEFAULT_ARG_IN_FROM = "InvalidDefaultArgInFrom",
        "Default value for global ARG results in an empty or invalid base image name",
        Some("https://docs.docker.com/go/dockerfile/rule/invalid-default-arg-in-from/"), false;
    FROM_PLATFORM_FLAG_CONST_DISALLOWED = "FromPlatformFlagConstDisallowed",
        "FROM --platform flag should not use a constant value",
        Some("https://docs.docker.com/go/dockerfile/rule/from-platform-flag-const-disallowed/"), false;
    COPY_IGNORED_FILE = "CopyIgnoredFile",
        "Attempting to Copy file that is excluded by .dockerignore",
        Some("https://docs.docker.com/go/dockerfile/rule/copy-ignored-file/"), false;
    INVALID_DEFINITION_DESCRIPTION = "InvalidDefinitionDescription",
        "Comment for build stage or argument should follow the format: `# <arg/stage name> <description>`. If this is not intended to be a description comment, add an empty line or comment between the instruction and the comment.",
        Some("https://docs.docker.com/go/dockerfile/rule/invalid-definition-description/"), true;
    EXPOSE_PROTO_CASING = "ExposeProtoCasing",
        "Protocol in EXPOSE instruction should be lowercase",
        Some("https://docs.docker.com/go/dockerfile/rule/expose-proto-casing/"), false;
    EXPOSE_INVALID_FORMAT = "ExposeInvalidFormat",
        "IP address and host-port mapping should not be used in EXPOSE instruction. This will become an error in a future release",
        Some("https://docs.docker.com/go/dockerfile/rule/expose-invalid-format/"), false;
}

/// The rule with this name, as `# check=skip=` names them.
pub fn by_name(name: &str) -> Option<&'static Rule> {
    ALL.iter().copied().find(|r| r.name == name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_are_the_kebab_case_names() {
        for r in ALL {
            let Some(url) = r.url else {
                assert_eq!(r.name, "InvalidBaseImagePlatform");
                continue;
            };
            let mut kebab = String::new();
            let chars: Vec<char> = r.name.chars().collect();
            for (i, &c) in chars.iter().enumerate() {
                // "JSONArgs" is "json-args": a capital starts a word when a small letter follows.
                let starts_word = c.is_ascii_uppercase()
                    && i > 0
                    && (chars[i - 1].is_ascii_lowercase()
                        || chars.get(i + 1).is_some_and(|n| n.is_ascii_lowercase()));
                if starts_word {
                    kebab.push('-');
                }
                kebab.push(c.to_ascii_lowercase());
            }
            assert_eq!(
                url,
                format!("https://docs.docker.com/go/dockerfile/rule/{kebab}/")
            );
            assert_eq!(by_name(r.name), Some(*r));
        }
        assert_eq!(ALL.len(), 22);
    }
}
