//! BuildKit's lint test cases (`frontend/dockerfile/dockerfile_check_test.go`, formerly
//! `dockerfile_lint_test.go`) through `cairn check --format json`.
//!
//! Count: the Go file has 25 test functions making 88 `checkLinterWarnings` cases. Ported
//! here: 24 functions, 87 cases, all passing; plus 2 `--target` cases standing for BuildKit's
//! build-time expectations (a build warns only about the stages it runs) and 2 tests of
//! cairn's own (`cairn build --check` with text and GitHub output; a build's warnings, its
//! summary and `error=true`). Left out: 1 function, 1 case — testBaseImagePlatformMismatch (InvalidBaseImagePlatform): cairn fails a
//! build whose base image is for another platform instead of warning, and a check pulls
//! nothing. Where BuildKit's case also expects a build error that cairn does not raise (an
//! empty `--platform` after expansion, which cairn builds for the build's platform) or cairn
//! raises one BuildKit does not (a repeated stage name), the case asserts the warnings and
//! says so. Images: `alpine` and `busybox` are the busybox fixture from a store; BuildKit's
//! Windows variants are left aside.
#![allow(clippy::unwrap_used)]

use std::fs;

use cairn_e2e::{Store, loaded_busybox, texts};
use serde_json::Value;

/// What the check's exit should be.
#[derive(Debug, Clone, Copy)]
enum Exit {
    Ok,
    /// Fails with this in its message.
    Err(&'static str),
    /// BuildKit fails the build here and cairn's check may not: either is accepted.
    Any,
}

struct Case<'a> {
    df: &'a str,
    ignore: Option<&'a str>,
    args: &'a [&'a str],
    /// (rule, line, detail)
    want: &'a [(&'a str, u32, &'a str)],
    exit: Exit,
}

const fn case<'a>(df: &'a str, want: &'a [(&'a str, u32, &'a str)]) -> Case<'a> {
    Case {
        df,
        ignore: None,
        args: &[],
        want,
        exit: Exit::Ok,
    }
}

/// Runs `cairn check --format json` on each case and compares its warnings, sorted by line
/// and detail as BuildKit's test sorts them.
fn run(store: &Store, cases: &[Case<'_>]) {
    for (i, c) in cases.iter().enumerate() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join("Dockerfile"), c.df).unwrap();
        if let Some(ignore) = c.ignore {
            fs::write(dir.path().join(".dockerignore"), ignore).unwrap();
        }
        let mut cmd = store.cmd(&["check", "--format", "json"]);
        cmd.args(c.args).arg(dir.path());
        let out = cmd.output().unwrap();
        let (stdout, stderr) = texts(&out);
        let v: Value = serde_json::from_str(&stdout)
            .unwrap_or_else(|e| panic!("case {i}: {e}: {stdout}{stderr}"));
        let mut got: Vec<(String, u64, String)> = v["warnings"]
            .as_array()
            .unwrap()
            .iter()
            .map(|w| {
                let url = w["url"].as_str().unwrap_or_default();
                let rule = w["ruleName"].as_str().unwrap().to_owned();
                if rule != "InvalidBaseImagePlatform" {
                    assert!(url.starts_with("https://docs.docker.com/go/dockerfile/rule/"));
                }
                assert!(w["description"].as_str().is_some_and(|d| !d.is_empty()));
                (
                    rule,
                    w["location"]["ranges"][0]["start"]["line"]
                        .as_u64()
                        .unwrap(),
                    w["detail"].as_str().unwrap().to_owned(),
                )
            })
            .collect();
        got.sort_by(|a, b| (a.1, &a.2).cmp(&(b.1, &b.2)));
        let mut want: Vec<(String, u64, String)> = c
            .want
            .iter()
            .map(|(r, l, d)| (r.to_string(), u64::from(*l), d.to_string()))
            .collect();
        want.sort_by(|a, b| (a.1, &a.2).cmp(&(b.1, &b.2)));
        assert_eq!(got, want, "case {i}:\n{}\n{stderr}", c.df);
        match c.exit {
            Exit::Ok => assert!(out.status.success(), "case {i}: {stderr}"),
            Exit::Err(msg) => {
                assert!(!out.status.success(), "case {i} should fail");
                assert!(stderr.contains(msg), "case {i}: {stderr}");
                assert!(
                    v["buildError"]["message"].as_str().is_some(),
                    "case {i}: {stdout}"
                );
            }
            Exit::Any => {}
        }
    }
}

const FROM_AS: &str = "'as' and 'FROM' keywords' casing do not match";

#[test]
fn rule_check_option() {
    let df = "#check=skip=all\nFROM scratch as base\ncopy Dockerfile .\n";
    let skip_casing =
        "#check=skip=ConsistentInstructionCasing\nFROM scratch as base\ncopy Dockerfile .\n";
    run(
        &Store::new(),
        &[
            case(df, &[]),
            case(
                "#check=skip=all;error=true\nFROM scratch as base\ncopy Dockerfile .\n",
                &[],
            ),
            case(
                "#check=skip=ConsistentInstructionCasing,FromAsCasing\nFROM scratch as base\ncopy Dockerfile .\n",
                &[],
            ),
            case(
                "#check=skip=ConsistentInstructionCasing,FromAsCasing;error=true\nFROM scratch as base\ncopy Dockerfile .\n",
                &[],
            ),
            case(skip_casing, &[("FromAsCasing", 2, FROM_AS)]),
            Case {
                exit: Exit::Err("lint violation found for rules: FromAsCasing"),
                ..case(
                    "#check=skip=ConsistentInstructionCasing;error=true\nFROM scratch as base\ncopy Dockerfile .\n",
                    &[("FromAsCasing", 2, FROM_AS)],
                )
            },
            Case {
                args: &[
                    "--build-arg",
                    "BUILDKIT_DOCKERFILE_CHECK=skip=ConsistentInstructionCasing;error=true",
                ],
                exit: Exit::Err("lint violation found for rules: FromAsCasing"),
                ..case(df, &[("FromAsCasing", 2, FROM_AS)])
            },
            Case {
                args: &["--build-arg", "BUILDKIT_DOCKERFILE_CHECK=skip=all"],
                ..case(
                    "#check=error=true\nFROM scratch as base\ncopy Dockerfile .\n",
                    &[],
                )
            },
        ],
    );
}

#[test]
fn stage_name() {
    run(
        &Store::new(),
        &[
            case(
                "\n# warning: stage name should be lowercase\n#\nFROM scratch AS BadStageName\n\n# warning: 'as' should match 'FROM' cmd casing.\n#\nFROM scratch as base2\n\nFROM scratch AS base3\n",
                &[
                    (
                        "StageNameCasing",
                        4,
                        "Stage name 'BadStageName' should be lowercase",
                    ),
                    ("FromAsCasing", 8, FROM_AS),
                ],
            ),
            case(
                "\n# warning: 'AS' should match 'from' cmd casing.\n#\nfrom scratch AS base\n\nfrom scratch as base2\n",
                &[(
                    "FromAsCasing",
                    4,
                    "'AS' and 'from' keywords' casing do not match",
                )],
            ),
        ],
    );
}

#[test]
fn no_empty_continuation() {
    run(
        &Store::new(),
        &[case(
            "\nFROM scratch\n# warning: empty continuation line\nCOPY Dockerfile \\\n\n.\nCOPY Dockerfile \\\n.\n",
            &[("NoEmptyContinuation", 6, "Empty continuation line")],
        )],
    );
}

const CASING: &str = "ConsistentInstructionCasing";

#[test]
fn consistent_instruction_casing() {
    run(
        &loaded_busybox(),
        &[
            case(
                "\n# warning: 'FROM' should be either lowercased or uppercased\n#\nFrom scratch as base\nFROM scratch AS base2\n",
                &[(
                    CASING,
                    4,
                    "Command 'From' should match the case of the command majority (uppercase)",
                )],
            ),
            case(
                "\nFROM scratch\n# warning: 'copy' should match command majority's casing (uppercase)\ncopy Dockerfile /foo\nCOPY Dockerfile /bar\n",
                &[(
                    CASING,
                    4,
                    "Command 'copy' should match the case of the command majority (uppercase)",
                )],
            ),
            case(
                "\n# warning: 'frOM' should be either lowercased or uppercased\n#\nfrOM scratch as base\nfrom scratch as base2\n",
                &[(
                    CASING,
                    4,
                    "Command 'frOM' should match the case of the command majority (lowercase)",
                )],
            ),
            case(
                "\nfrom scratch\n# warning: 'COPY' should match command majority's casing (lowercase)\nCOPY Dockerfile /foo\ncopy Dockerfile /bar\n",
                &[(
                    CASING,
                    4,
                    "Command 'COPY' should match the case of the command majority (lowercase)",
                )],
            ),
            case(
                "\n# warning: 'from' should match command majority's casing (uppercase)\n#\nfrom scratch\nCOPY Dockerfile /foo\nCOPY Dockerfile /bar\nCOPY Dockerfile /baz\n",
                &[(
                    CASING,
                    4,
                    "Command 'from' should match the case of the command majority (uppercase)",
                )],
            ),
            case(
                "\n# warning: 'FROM' should match command majority's casing (lowercase)\n#\nFROM scratch\ncopy Dockerfile /foo\ncopy Dockerfile /bar\ncopy Dockerfile /baz\n",
                &[(
                    CASING,
                    4,
                    "Command 'FROM' should match the case of the command majority (lowercase)",
                )],
            ),
            case(
                "\nfrom scratch\ncopy Dockerfile /foo\ncopy Dockerfile /bar\n",
                &[],
            ),
            case(
                "\nFROM scratch\nCOPY Dockerfile /foo\nCOPY Dockerfile /bar\n",
                &[],
            ),
            case("\nFROM busybox\nRUN <<'EOT'\nenv\nEOT\n", &[]),
        ],
    );
}

#[test]
fn duplicate_stage_name() {
    run(
        &Store::new(),
        &[
            // cairn refuses a repeated stage name (BuildKit builds, the later one winning).
            Case {
                exit: Exit::Err("duplicate stage name"),
                ..case(
                    "\nFROM scratch AS b\nFROM scratch AS b\n",
                    &[(
                        "DuplicateStageName",
                        3,
                        "Duplicate stage name \"b\", stage names should be unique",
                    )],
                )
            },
            case("\nFROM scratch AS b1\nFROM scratch AS b2\n", &[]),
        ],
    );
}

#[test]
fn reserved_stage_name() {
    run(
        &Store::new(),
        &[
            case(
                "\nFROM scratch AS scratch\nFROM scratch AS context\n",
                &[
                    (
                        "ReservedStageName",
                        2,
                        "Stage name should not use the same name as reserved stage \"scratch\"",
                    ),
                    (
                        "ReservedStageName",
                        3,
                        "Stage name should not use the same name as reserved stage \"context\"",
                    ),
                ],
            ),
            case("\nFROM scratch\nFROM scratch AS a\n", &[]),
        ],
    );
}

#[test]
fn json_args_recommended() {
    let json = |k: &'static str| -> &'static str {
        match k {
            "CMD" => {
                "JSON arguments recommended for CMD to prevent unintended behavior related to OS signals"
            }
            _ => {
                "JSON arguments recommended for ENTRYPOINT to prevent unintended behavior related to OS signals"
            }
        }
    };
    run(
        &Store::new(),
        &[
            case(
                "\nFROM scratch\nCMD mycommand\n",
                &[("JSONArgsRecommended", 3, json("CMD"))],
            ),
            case(
                "\nFROM scratch\nENTRYPOINT mycommand\n",
                &[("JSONArgsRecommended", 3, json("ENTRYPOINT"))],
            ),
            case(
                "\nFROM scratch\nSHELL [\"/usr/bin/customshell\"]\nCMD mycommand\n",
                &[],
            ),
            case(
                "\nFROM scratch\nSHELL [\"/usr/bin/customshell\"]\nENTRYPOINT mycommand\n",
                &[],
            ),
            case(
                "\nFROM scratch AS base\nSHELL [\"/usr/bin/customshell\"]\n\nFROM base\nCMD mycommand\n",
                &[],
            ),
            case(
                "\nFROM scratch AS base\nSHELL [\"/usr/bin/customshell\"]\n\nFROM base\nENTRYPOINT mycommand\n",
                &[],
            ),
        ],
    );
}

const MAINTAINER: &str = "Maintainer instruction is deprecated in favor of using label";

#[test]
fn maintainer_deprecated() {
    run(
        &Store::new(),
        &[
            case(
                "\nFROM scratch\nMAINTAINER me@example.org\n",
                &[("MaintainerDeprecated", 3, MAINTAINER)],
            ),
            case(
                "\nFROM scratch\nLABEL org.opencontainers.image.authors=\"me@example.org\"\n",
                &[],
            ),
            case(
                "\nFROM scratch\n# check=skip=JSONArgsRecommended\nCMD mycommand\n",
                &[],
            ),
            case(
                "\nFROM scratch\n# check=skip=JSONArgsRecommended\nENTRYPOINT mycommand\n",
                &[],
            ),
            case(
                "\nFROM scratch\n# check=skip=MaintainerDeprecated\nMAINTAINER me@example.org\n",
                &[],
            ),
        ],
    );
}

#[test]
fn warnings_before_error() {
    run(
        &Store::new(),
        &[Case {
            exit: Exit::Err("unknown instruction: BADCMD"),
            ..case(
                "\nFROM scratch AS BadStageName\nMAINTAINER me@example.org\nBADCMD\n",
                &[
                    (
                        "StageNameCasing",
                        2,
                        "Stage name 'BadStageName' should be lowercase",
                    ),
                    ("MaintainerDeprecated", 3, MAINTAINER),
                ],
            )
        }],
    );
}

#[test]
fn undeclared_arg() {
    run(
        &loaded_busybox(),
        &[
            case("\nARG base=scratch\nFROM $base\nCOPY Dockerfile .\n", &[]),
            case(
                "\nARG BUILDPLATFORM=linux/amd64\nFROM --platform=$BUILDPLATFORM scratch\nCOPY Dockerfile .\n",
                &[],
            ),
            case(
                "\nFROM --platform=$BUILDPLATFORM scratch\nCOPY Dockerfile .\n",
                &[],
            ),
            case(
                "\nARG DEBUG\nFROM scratch${DEBUG}\nCOPY Dockerfile .\n",
                &[],
            ),
            case(
                "\nARG DEBUG\nFROM scra${DEBUG:-tch}\nCOPY Dockerfile .\n",
                &[],
            ),
            case(
                "\nARG DEBUG=\"\"\nFROM scratch${DEBUG-@bogus}\nCOPY Dockerfile .\n",
                &[],
            ),
            // BuildKit also fails: "empty platform value"; cairn builds for the build's platform.
            Case {
                exit: Exit::Any,
                ..case(
                    "\nFROM --platform=$BULIDPLATFORM scratch\nCOPY Dockerfile .\n",
                    &[(
                        "UndefinedArgInFrom",
                        2,
                        "FROM argument 'BULIDPLATFORM' is not declared (did you mean BUILDPLATFORM?)",
                    )],
                )
            },
            Case {
                exit: Exit::Any,
                ..case(
                    "\nARG MY_OS=linux\nARG MY_ARCH=amd64\nFROM --platform=linux/${MYARCH} busybox\nCOPY Dockerfile .\n\t",
                    &[(
                        "UndefinedArgInFrom",
                        4,
                        "FROM argument 'MYARCH' is not declared (did you mean MY_ARCH?)",
                    )],
                )
            },
            case(
                "\nARG tag=latest\nFROM busybox:${tag}${version} AS b\nCOPY Dockerfile .\n",
                &[(
                    "UndefinedArgInFrom",
                    3,
                    "FROM argument 'version' is not declared",
                )],
            ),
        ],
    );
}

#[test]
fn workdir_relative_path() {
    run(
        &Store::new(),
        &[
            case(
                "\nFROM scratch\nWORKDIR app/\n",
                &[(
                    "WorkdirRelativePath",
                    3,
                    "Relative workdir \"app/\" can have unexpected results if the base image changes",
                )],
            ),
            case(
                "\nFROM scratch AS a\nWORKDIR /app\n\nFROM a AS b\nWORKDIR subdir/\n",
                &[],
            ),
            case(
                "\nFROM scratch\n# check=skip=WorkdirRelativePath\nWORKDIR app/\n",
                &[],
            ),
        ],
    );
}

#[test]
fn unmatched_vars() {
    run(
        &loaded_busybox(),
        &[
            case("\nFROM scratch\nARG foo\nCOPY Dockerfile${foo} .\n", &[]),
            case(
                "\nFROM busybox AS base\nARG foo=Dockerfile\n\nFROM base\nCOPY $foo .\n",
                &[],
            ),
            case("\nFROM busybox\nRUN echo $PATH\n", &[]),
            case(
                "\nFROM busybox\nCOPY $foo .\nARG foo=bar\nRUN echo $foo\n",
                &[("UndefinedVar", 3, "Usage of undefined variable '$foo'")],
            ),
            case(
                "\nFROM busybox\nARG DIR_BINARIES=binaries/\nARG DIR_ASSETS=assets/\nARG DIR_CONFIG=config/\nCOPY $DIR_ASSET .\n\t",
                &[(
                    "UndefinedVar",
                    6,
                    "Usage of undefined variable '$DIR_ASSET' (did you mean $DIR_ASSETS?)",
                )],
            ),
            case(
                "\nFROM busybox\nENV PATH=$PAHT:/tmp/bin\n\t\t",
                &[(
                    "UndefinedVar",
                    3,
                    "Usage of undefined variable '$PAHT' (did you mean $PATH?)",
                )],
            ),
        ],
    );
}

fn multiple(k: &str) -> String {
    format!(
        "Multiple {k} instructions should not be used in the same stage because only the last one will be used"
    )
}

#[test]
fn multiple_instructions_disallowed() {
    let (e, c, h) = (
        multiple("ENTRYPOINT"),
        multiple("CMD"),
        multiple("HEALTHCHECK"),
    );
    let rule = "MultipleInstructionsDisallowed";
    run(
        &Store::new(),
        &[
            case(
                "\nFROM scratch\nENTRYPOINT [\"/myapp\"]\nENTRYPOINT [\"/myotherapp\"]\nCMD [\"/myapp\"]\nCMD [\"/myotherapp\"]\nHEALTHCHECK CMD [\"/myapp\"]\nHEALTHCHECK CMD [\"/myotherapp\"]\n",
                &[(rule, 3, &e), (rule, 5, &c), (rule, 7, &h)],
            ),
            case(
                "\nFROM scratch\nENTRYPOINT [\"/myapp\"]\nCMD [\"/myapp\"]\nHEALTHCHECK CMD [\"/myapp\"]\nCOPY <<EOF /a.txt\nHello, World!\nEOF\nENTRYPOINT [\"/myotherapp\"]\nCMD [\"/myotherapp\"]\nHEALTHCHECK CMD [\"/myotherapp\"]\n",
                &[(rule, 3, &e), (rule, 4, &c), (rule, 5, &h)],
            ),
            case(
                "\nFROM scratch AS a\nENTRYPOINT [\"/myapp\"]\nCMD [\"/myapp\"]\nHEALTHCHECK CMD [\"/myapp\"]\n\nFROM a AS b\nENTRYPOINT [\"/myotherapp\"]\nCMD [\"/myotherapp\"]\nHEALTHCHECK CMD [\"/myotherapp\"]\n",
                &[],
            ),
        ],
    );
}

const LEGACY_ENV: &str =
    "\"ENV key=value\" should be used instead of legacy \"ENV key value\" format";
const LEGACY_LABEL: &str =
    "\"LABEL key=value\" should be used instead of legacy \"LABEL key value\" format";
const UNREACHABLE: &str =
    "\nFROM scratch AS a\n\nFROM a AS b\nENV testkey value\nLABEL key value\n\nFROM a AS c\n";

#[test]
fn legacy_key_value_format() {
    run(
        &Store::new(),
        &[
            case(
                "\nFROM scratch\nENV testkey value\nLABEL key value\n",
                &[
                    ("LegacyKeyValueFormat", 3, LEGACY_ENV),
                    ("LegacyKeyValueFormat", 4, LEGACY_LABEL),
                ],
            ),
            case("\nFROM scratch\nENV testkey=value\nLABEL key=value\n", &[]),
            // Every stage is checked without --target (BuildKit's check)...
            case(
                UNREACHABLE,
                &[
                    ("LegacyKeyValueFormat", 5, LEGACY_ENV),
                    ("LegacyKeyValueFormat", 6, LEGACY_LABEL),
                ],
            ),
            case(
                "\nFROM scratch\n# check=skip=LegacyKeyValueFormat\nENV testkey value\n# check=skip=LegacyKeyValueFormat\nLABEL key value\n",
                &[],
            ),
            // ...and with one, only the stages it needs (what a build of it warns about).
            Case {
                args: &["--target", "c"],
                ..case(UNREACHABLE, &[])
            },
        ],
    );
}

#[test]
fn all_target_unmarshal() {
    let df = "\nFROM scratch AS first\nCOPY $foo .\n\nFROM scratch AS second\nCOPY $bar .\n";
    run(
        &Store::new(),
        &[
            case(
                df,
                &[
                    ("UndefinedVar", 3, "Usage of undefined variable '$foo'"),
                    ("UndefinedVar", 6, "Usage of undefined variable '$bar'"),
                ],
            ),
            Case {
                args: &["--target", "second"],
                ..case(
                    df,
                    &[("UndefinedVar", 6, "Usage of undefined variable '$bar'")],
                )
            },
        ],
    );
}

#[test]
fn redundant_target_platform() {
    run(
        &Store::new(),
        &[
            case(
                "\nFROM --platform=$TARGETPLATFORM scratch\n",
                &[(
                    "RedundantTargetPlatform",
                    2,
                    "Setting platform to predefined $TARGETPLATFORM in FROM is redundant as this is the default behavior",
                )],
            ),
            case(
                "\nFROM --platform=${TARGETPLATFORM} scratch\n",
                &[(
                    "RedundantTargetPlatform",
                    2,
                    "Setting platform to predefined ${TARGETPLATFORM} in FROM is redundant as this is the default behavior",
                )],
            ),
            case(
                "\n# check=skip=RedundantTargetPlatform\nFROM --platform=$TARGETPLATFORM scratch\n",
                &[],
            ),
        ],
    );
}

#[test]
fn secrets_used_in_arg_or_env() {
    let s = "SecretsUsedInArgOrEnv";
    run(
        &Store::new(),
        &[case(
            "# check=skip=InvalidDefinitionDescription\n\nFROM scratch\nARG SECRET_PASSPHRASE\nENV SUPER_Secret=foo\nENV password=bar secret=baz\nARG super_duper_secret_token=foo auth=bar\nENV apikey=bar sunflower=foo\nENV git_key=\nENV PUBLIC_KEY=\nARG public_token\nARG SECRET_PASSPHRASE_FILE\nENV password_file=bar secret_File=baz\nARG AUTH_MODULE_VERSION\n# check=skip=SecretsUsedInArgOrEnv // allow secret in environment\nENV password=bar\n# check=skip=SecretsUsedInArgOrEnv // allow secret in arg\nARG password\n# check=skip=all // is local to only this instruction\nENV alternate_password=bar\n# check=skip=all // is local to only this instruction\nARG alternate_password\n",
            &[
                (
                    s,
                    4,
                    "Do not use ARG or ENV instructions for sensitive data (ARG \"SECRET_PASSPHRASE\")",
                ),
                (
                    s,
                    5,
                    "Do not use ARG or ENV instructions for sensitive data (ENV \"SUPER_Secret\")",
                ),
                (
                    s,
                    6,
                    "Do not use ARG or ENV instructions for sensitive data (ENV \"password\")",
                ),
                (
                    s,
                    6,
                    "Do not use ARG or ENV instructions for sensitive data (ENV \"secret\")",
                ),
                (
                    s,
                    7,
                    "Do not use ARG or ENV instructions for sensitive data (ARG \"auth\")",
                ),
                (
                    s,
                    7,
                    "Do not use ARG or ENV instructions for sensitive data (ARG \"super_duper_secret_token\")",
                ),
                (
                    s,
                    8,
                    "Do not use ARG or ENV instructions for sensitive data (ENV \"apikey\")",
                ),
                (
                    s,
                    9,
                    "Do not use ARG or ENV instructions for sensitive data (ENV \"git_key\")",
                ),
            ],
        )],
    );
}

#[test]
fn invalid_default_arg_in_from() {
    let r = "InvalidDefaultArgInFrom";
    run(
        &loaded_busybox(),
        &[
            Case {
                args: &["--build-arg", "VERSION=latest"],
                ..case(
                    "\nARG VERSION\nFROM busybox:$VERSION\n",
                    &[(
                        r,
                        3,
                        "Default value for ARG busybox:$VERSION results in empty or invalid base image name",
                    )],
                )
            },
            Case {
                args: &["--build-arg", "IMAGE=busybox:latest"],
                ..case(
                    "\nARG IMAGE\nFROM $IMAGE\n",
                    &[(
                        r,
                        3,
                        "Default value for ARG $IMAGE results in empty or invalid base image name",
                    )],
                )
            },
            Case {
                args: &["--build-arg", "SFX=box:latest"],
                ..case(
                    "\nARG SFX=\"box:\"\nFROM busy${SFX}\n",
                    &[(
                        r,
                        3,
                        "Default value for ARG busy${SFX} results in empty or invalid base image name",
                    )],
                )
            },
            Case {
                args: &["--build-arg", "VERSION=latest"],
                ..case("\nARG VERSION=\"latest\"\nFROM busybox:${VERSION}\n", &[])
            },
            Case {
                args: &["--build-arg", "BUSYBOX_VARIANT=-musl"],
                ..case(
                    "\nARG BUSYBOX_VARIANT=\"\"\nFROM busybox:stable${BUSYBOX_VARIANT}\n",
                    &[],
                )
            },
            Case {
                args: &["--build-arg", "BUSYBOX_VARIANT=-musl"],
                ..case(
                    "\n\tARG BUSYBOX_VARIANT\n\tFROM busybox:stable${BUSYBOX_VARIANT}\n\t",
                    &[],
                )
            },
        ],
    );
}

#[test]
fn from_platform_flag_const_disallowed() {
    run(
        &Store::new(),
        &[
            case(
                "\nFROM --platform=linux/amd64 scratch\n",
                &[(
                    "FromPlatformFlagConstDisallowed",
                    2,
                    "FROM --platform flag should not use constant value \"linux/amd64\"",
                )],
            ),
            case(
                "\nFROM --platform=linux/amd64 scratch AS my_amd64_stage\n",
                &[],
            ),
            case("\nFROM --platform=linux/amd64 scratch AS linux\n", &[]),
        ],
    );
}

const IGNORED_COPY: (&str, u32, &str) = (
    "CopyIgnoredFile",
    3,
    "Attempting to Copy file \"Dockerfile\" that is excluded by .dockerignore",
);
const IGNORED_ADD: (&str, u32, &str) = (
    "CopyIgnoredFile",
    4,
    "Attempting to Add file \"Dockerfile\" that is excluded by .dockerignore",
);

#[test]
fn copy_ignored_files() {
    let df = "\nFROM scratch\nCOPY Dockerfile .\nADD Dockerfile /windy\n";
    run(
        &Store::new(),
        &[
            Case {
                ignore: Some("\nDockerfile\n"),
                ..case(df, &[IGNORED_COPY, IGNORED_ADD])
            },
            Case {
                ignore: Some("\nDockerfile\n"),
                ..case(df, &[IGNORED_COPY, IGNORED_ADD])
            },
            Case {
                ignore: Some("\nDockerfile\n"),
                ..case(
                    "# check=skip=CopyIgnoredFile\n\nFROM scratch\nCOPY Dockerfile .\nADD Dockerfile /windy\n",
                    &[],
                )
            },
            Case {
                ignore: Some("\nfoobar\n"),
                ..case(
                    "\nFROM scratch AS base\nCOPY Dockerfile /foobar\nADD Dockerfile /windy\n\nFROM base\nCOPY --from=base /foobar /Dockerfile\n",
                    &[],
                )
            },
            Case {
                ignore: Some("\n**\n!Dockerfile\n"),
                ..case("\nFROM scratch\nCOPY ./Dockerfile .\n", &[])
            },
            Case {
                ignore: Some("\n**\n!Dockerfile\n"),
                ..case("\nFROM scratch\nCOPY . .\n\t", &[])
            },
        ],
    );
}

#[test]
fn copy_ignored_file_context_root() {
    let df = "\nFROM scratch\nCOPY . .\n";
    run(
        &Store::new(),
        &[
            Case {
                ignore: Some("\n.*\n"),
                ..case(df, &[])
            },
            Case {
                ignore: Some("\n*\n"),
                ..case(
                    df,
                    &[(
                        "CopyIgnoredFile",
                        3,
                        "Attempting to Copy file \".\" that is excluded by .dockerignore",
                    )],
                )
            },
        ],
    );
}

const DESC: &str = "InvalidDefinitionDescription";

#[test]
fn definition_description() {
    run(
        &Store::new(),
        &[
            case(
                "# check=skip=all;experimental=InvalidDefinitionDescription\n# foo this is the foo\nARG foo=bar\n\n# base this is the base image\nFROM scratch AS base\n\n# version this is the version number\nARG version=latest\n\n# baz this is the baz\nARG foo=baz bar=qux baz=quux\n#\nARG bit=bat\n\n# comment for something other than ARG or FROM\nCOPY Dockerfile .\n",
                &[],
            ),
            case(
                "# check=experimental=InvalidDefinitionDescription\n# bar this is the bar\nARG foo=bar\n# BasE this is the BasE image\nFROM scratch AS base\n# definitely a bad comment\nARG version=latest\n# definitely a bad comment\nARG foo=baz bar=qux baz=quux\n",
                &[
                    (
                        DESC,
                        3,
                        "Comment for ARG should follow the format: `# foo <description>`",
                    ),
                    (
                        DESC,
                        5,
                        "Comment for FROM should follow the format: `# base <description>`",
                    ),
                    (
                        DESC,
                        7,
                        "Comment for ARG should follow the format: `# version <description>`",
                    ),
                    (
                        DESC,
                        9,
                        "Comment for ARG should follow the format: `# <arg_key> <description>`",
                    ),
                ],
            ),
        ],
    );
}

#[test]
fn expose_proto_casing() {
    run(
        &Store::new(),
        &[case(
            "\nFROM scratch\nEXPOSE 80/TcP 8080/TCP 8080/udp\n",
            &[
                (
                    "ExposeProtoCasing",
                    3,
                    "Defined protocol '80/TcP' in EXPOSE instruction should be lowercase",
                ),
                (
                    "ExposeProtoCasing",
                    3,
                    "Defined protocol '8080/TCP' in EXPOSE instruction should be lowercase",
                ),
            ],
        )],
    );
}

#[test]
fn expose_invalid_format() {
    let r = "ExposeInvalidFormat";
    run(
        &Store::new(),
        &[case(
            "\nFROM scratch\nEXPOSE 127.0.0.1:80:80 [::1]:8080:8080 5000:5000 8000\n",
            &[
                (
                    r,
                    3,
                    "EXPOSE instruction should not define an IP address or host-port mapping, found '127.0.0.1:80:80'",
                ),
                (
                    r,
                    3,
                    "EXPOSE instruction should not define an IP address or host-port mapping, found '[::1]:8080:8080'",
                ),
                (
                    r,
                    3,
                    "EXPOSE instruction should not define an IP address or host-port mapping, found '5000:5000'",
                ),
            ],
        )],
    );
}

/// `cairn build --check` prints the text report and builds nothing; text and GitHub output.
#[test]
fn build_check_and_formats() {
    let store = Store::new();
    let dir = cairn_e2e::context("#check=error=true\nFROM scratch as base\nCMD run\n");
    let out = store
        .cmd(&["build", "--check", "-t", "never-built"])
        .arg(dir.path())
        .output()
        .unwrap();
    let (stdout, stderr) = texts(&out);
    assert!(!out.status.success());
    assert!(
        stdout.starts_with("Check complete, 2 warnings have been found!\n\nWARNING: FromAsCasing - https://docs.docker.com/go/dockerfile/rule/from-as-casing/\n'as' and 'FROM' keywords' casing do not match\n"),
        "{stdout}"
    );
    assert!(
        stdout.contains("   2 | >>> FROM scratch as base\n"),
        "{stdout}"
    );
    assert!(
        stderr.contains("lint violation found for rules: FromAsCasing, JSONArgsRecommended"),
        "{stderr}"
    );
    assert!(!store.run(&["images"]).contains("never-built"));
    let out = store
        .cmd(&["check", "--format", "github"])
        .arg(dir.path())
        .output()
        .unwrap();
    let (stdout, _) = texts(&out);
    let first = stdout.lines().next().unwrap();
    assert!(first.starts_with("::warning file="), "{stdout}");
    assert!(
        first.ends_with(
            ",line=2,endLine=2,title=FromAsCasing::'as' and 'FROM' keywords' casing do not match"
        ),
        "{stdout}"
    );
    // buildx's `--call check,format=...` prints what `cairn check --format` prints.
    for format in ["json", "github"] {
        let run = |c: &mut std::process::Command| texts(&c.arg(dir.path()).output().unwrap()).0;
        let called = run(&mut store.cmd(&["build", "--call", &format!("check,format={format}")]));
        let checked = run(&mut store.cmd(&["check", "--format", format]));
        assert_eq!(called, checked, "{format}");
        assert!(!called.is_empty());
    }
    let out = store
        .cmd(&["build", "--call", "outline"])
        .arg(dir.path())
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(texts(&out).1.contains("cairn knows build and check"));
}

/// A build shows its lint warnings and builds; with error=true it fails before any step.
#[test]
fn build_warns_and_fails_on_error_true() {
    let store = Store::new();
    let dir = cairn_e2e::context("FROM scratch as base\nCOPY Dockerfile /\n");
    let out = store
        .cmd(&["build", "--progress", "plain"])
        .arg(dir.path())
        .output()
        .unwrap();
    let (_, stderr) = texts(&out);
    assert!(out.status.success(), "{stderr}");
    assert!(
        stderr
            .contains("WARN: FromAsCasing: 'as' and 'FROM' keywords' casing do not match (line 1)"),
        "{stderr}"
    );
    assert!(
        stderr.contains("1 warning found:\n - FromAsCasing: 'as' and 'FROM' keywords' casing do not match (line 1)\n"),
        "{stderr}"
    );
    let dir = cairn_e2e::context("# check=error=true\nFROM scratch as base\nCOPY Dockerfile /\n");
    let out = store
        .cmd(&["build", "--progress", "plain"])
        .arg(dir.path())
        .output()
        .unwrap();
    let (_, stderr) = texts(&out);
    assert!(!out.status.success());
    assert!(
        stderr.contains("lint violation found for rules: FromAsCasing"),
        "{stderr}"
    );
    assert!(!stderr.contains("COPY Dockerfile"), "no step ran: {stderr}");
}
