//! The SLSA v1 provenance predicate of a build: what was asked (Dockerfile, build args, the
//! platform), what it read (base images, context files) and, in `max` mode, every step.

use cairn_layers::attest::{Predicate, SLSA_PROVENANCE_V1, docker_purl};
use cairn_layers::platform::Platform;
use serde_json::{Map, Value, json};

use crate::options::BuildOptions;
use crate::stage::Built;
use crate::trail::BuildTrail;

/// cairn's build type: a Dockerfile built by cairn, the parameters below.
pub const BUILD_TYPE: &str = "urn:cairn:dockerfile@v1";
/// The builder ID when none is given.
pub const DEFAULT_BUILDER_ID: &str = "urn:cairn:builder";

/// How much the provenance says, as BuildKit's `mode=`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ProvenanceMode {
    /// What was asked and what was read.
    #[default]
    Min,
    /// And every step with its cache key.
    Max,
}

/// What a provenance statement needs besides the build.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProvenanceOptions {
    pub mode: ProvenanceMode,
    /// `builder-id=`: the trusted builder, a URI (a CI job's, say).
    pub builder_id: Option<String>,
    /// When the build started and finished, in Unix seconds; `SOURCE_DATE_EPOCH` replaces
    /// both, and the invocation ID is left out, so the statement is reproducible.
    pub started: i64,
    pub finished: i64,
}

/// The predicate for the image `built` of a build run with `opts`.
pub fn predicate(opts: &BuildOptions, built: &Built, p: &ProvenanceOptions) -> Predicate {
    let request = Request {
        dockerfile_name: &opts.dockerfile_name,
        dockerfile: &opts.dockerfile,
        build_args: &opts.build_args,
        target: opts.target.as_deref(),
        secret_ids: opts.secrets.keys().map(String::as_str).collect(),
        source_date_epoch: opts.source_date_epoch,
        context_git: opts.context_git.as_ref(),
    };
    predicate_of(&request, &built.platform, &built.trail, p)
}

/// The parts of the build's options that provenance reports: a secret by its id alone.
struct Request<'a> {
    dockerfile_name: &'a str,
    dockerfile: &'a str,
    build_args: &'a std::collections::BTreeMap<String, String>,
    target: Option<&'a str>,
    secret_ids: Vec<&'a str>,
    source_date_epoch: Option<i64>,
    /// A git context's repository and commit.
    context_git: Option<&'a (String, String)>,
}

fn predicate_of(
    opts: &Request<'_>,
    platform: &Platform,
    trail: &BuildTrail,
    p: &ProvenanceOptions,
) -> Predicate {
    let (started, finished) = match opts.source_date_epoch {
        Some(e) => (e, e),
        None => (p.started, p.finished),
    };
    let dockerfile = cairn_layers::Digest::of(opts.dockerfile.as_bytes());
    let mut args = Map::new();
    for (k, v) in opts.build_args {
        args.insert(format!("build-arg:{k}"), Value::String(v.clone()));
    }
    if let Some(t) = opts.target {
        args.insert("target".into(), Value::String(t.to_owned()));
    }
    args.insert("platform".into(), Value::String(platform.to_string()));
    let secrets: Vec<Value> = opts
        .secret_ids
        .iter()
        .map(|id| json!({ "id": id }))
        .collect();
    let mut dependencies: Vec<Value> = trail
        .materials
        .iter()
        .map(|m| {
            json!({
                "uri": docker_purl(&m.name, Some(&m.platform)),
                "digest": { m.digest.algorithm(): m.digest.hex() },
            })
        })
        .collect();
    for (uri, commit) in &trail.git_sources {
        dependencies.push(json!({ "uri": uri, "digest": { "sha1": commit } }));
    }
    let context = trail.context_digest();
    dependencies.push(json!({
        "name": "context",
        "digest": { context.algorithm(): context.hex() },
        "annotations": { "files": trail.context_files.len().to_string() },
    }));
    let mut internal = json!({ "builderPlatform": Platform::host().to_string() });
    if p.mode == ProvenanceMode::Max {
        let steps: Vec<Value> = trail
            .steps
            .iter()
            .map(|s| {
                json!({
                    "stage": s.stage,
                    "instruction": s.instruction,
                    "cacheKey": s.key,
                    "cached": s.cached,
                })
            })
            .collect();
        internal["buildConfig"] = json!({ "steps": steps });
        internal["contextFiles"] = json!(trail.context_files);
    }
    // As BuildKit: a git context is the config source, by repository and commit.
    let mut config_source = json!({
        "path": opts.dockerfile_name,
        "digest": { dockerfile.algorithm(): dockerfile.hex() },
    });
    if let Some((uri, commit)) = opts.context_git {
        config_source["uri"] = json!(uri);
        config_source["digest"]["sha1"] = json!(commit);
        dependencies.push(json!({ "uri": uri, "digest": { "sha1": commit } }));
    }
    let mut metadata = json!({
        "startedOn": rfc3339(started),
        "finishedOn": rfc3339(finished),
    });
    if opts.source_date_epoch.is_none() {
        metadata["invocationID"] = Value::String(invocation_id(&dockerfile, started));
    }
    let predicate = json!({
        "buildDefinition": {
            "buildType": BUILD_TYPE,
            "externalParameters": {
                "configSource": config_source,
                "request": {
                    "frontend": "dockerfile.v0",
                    "args": args,
                    "secrets": secrets,
                    "locals": [{ "name": "context" }, { "name": "dockerfile" }],
                },
            },
            "internalParameters": internal,
            "resolvedDependencies": dependencies,
        },
        "runDetails": {
            "builder": {
                "id": p.builder_id.as_deref().unwrap_or(DEFAULT_BUILDER_ID),
                "version": { "cairn": env!("CARGO_PKG_VERSION") },
            },
            "metadata": metadata,
        },
    });
    Predicate {
        predicate_type: SLSA_PROVENANCE_V1.into(),
        predicate,
    }
}

fn rfc3339(seconds: i64) -> String {
    jiff::Timestamp::from_second(seconds)
        .map(|t| t.to_string())
        .unwrap_or_default()
}

/// An ID for this run: unique per build (process, time), not a secret.
fn invocation_id(dockerfile: &cairn_layers::Digest, started: i64) -> String {
    let seed = format!(
        "{}\0{}\0{started}\0{:?}",
        dockerfile,
        std::process::id(),
        std::time::SystemTime::now()
    );
    cairn_layers::Digest::of(seed.as_bytes()).hex()[..26].to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::trail::{Material, StepTrace};

    fn trail() -> BuildTrail {
        BuildTrail {
            materials: vec![Material {
                name: "localhost:5000/base:1".into(),
                digest: cairn_layers::Digest::of(b"base"),
                platform: Platform::parse("linux/arm64").unwrap(),
            }],
            context_files: [("app.txt".to_owned(), "sha256:00".to_owned())].into(),
            steps: vec![StepTrace {
                stage: "build".into(),
                instruction: "RUN make".into(),
                key: "abc".into(),
                cached: true,
            }],
            git_sources: [(
                "https://example.com/repo.git#main".to_owned(),
                "0123456789abcdef0123456789abcdef01234567".to_owned(),
            )]
            .into(),
        }
    }

    fn provenance(mode: ProvenanceMode, epoch: Option<i64>) -> Value {
        let p = ProvenanceOptions {
            mode,
            builder_id: None,
            started: 100,
            finished: 160,
        };
        let platform = Platform::parse("linux/arm64").unwrap();
        let args = [("VERSION".to_owned(), "2".to_owned())].into();
        let request = Request {
            dockerfile_name: "Dockerfile",
            dockerfile: "FROM base\nRUN make\n",
            build_args: &args,
            target: None,
            secret_ids: vec!["token"],
            source_date_epoch: epoch,
            context_git: None,
        };
        predicate_of(&request, &platform, &trail(), &p).predicate
    }

    #[test]
    fn min_says_what_was_asked_and_read_never_a_secret() {
        let v = provenance(ProvenanceMode::Min, None);
        let def = &v["buildDefinition"];
        let request = &def["externalParameters"]["request"];
        assert_eq!(request["args"]["build-arg:VERSION"], "2");
        assert_eq!(request["args"]["platform"], "linux/arm64");
        assert_eq!(request["secrets"][0]["id"], "token");
        let df = cairn_layers::Digest::of(b"FROM base\nRUN make\n");
        assert_eq!(
            def["externalParameters"]["configSource"]["digest"]["sha256"],
            df.hex()
        );
        let deps = def["resolvedDependencies"].as_array().unwrap();
        assert_eq!(
            deps[0]["uri"],
            "pkg:docker/localhost%3A5000/base@1?platform=linux%2Farm64"
        );
        assert_eq!(deps[1]["uri"], "https://example.com/repo.git#main");
        assert_eq!(
            deps[1]["digest"]["sha1"],
            "0123456789abcdef0123456789abcdef01234567"
        );
        assert_eq!(deps[2]["name"], "context");
        assert_eq!(deps[2]["digest"]["sha256"], trail().context_digest().hex());
        assert!(def["internalParameters"].get("buildConfig").is_none());
        let meta = &v["runDetails"]["metadata"];
        assert_eq!(meta["startedOn"], "1970-01-01T00:01:40Z");
        assert_eq!(meta["finishedOn"], "1970-01-01T00:02:40Z");
        assert!(meta["invocationID"].is_string());
    }

    #[test]
    fn max_adds_the_steps_and_an_epoch_makes_it_reproducible() {
        let v = provenance(ProvenanceMode::Max, Some(1_700_000_000));
        let steps = &v["buildDefinition"]["internalParameters"]["buildConfig"]["steps"];
        assert_eq!(steps[0]["instruction"], "RUN make");
        assert_eq!(steps[0]["cacheKey"], "abc");
        assert_eq!(steps[0]["cached"], true);
        let meta = &v["runDetails"]["metadata"];
        assert_eq!(meta["startedOn"], "2023-11-14T22:13:20Z");
        assert_eq!(meta["startedOn"], meta["finishedOn"]);
        assert!(meta.get("invocationID").is_none());
        assert_eq!(v, provenance(ProvenanceMode::Max, Some(1_700_000_000)));
    }
}
