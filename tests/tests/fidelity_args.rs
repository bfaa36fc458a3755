//! ARG, history and RUN-mount parity with BuildKit, through the real binary: build args in
//! scope, the history entries a build writes, cache mounts' owners, the mount points a RUN
//! leaves in its layer, tags moving between images, and very long Dockerfiles.
#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::fs;
use std::path::Path;

use cairn_e2e::{Store, context, loaded_busybox, ok, texts};

/// Builds `ctx` with `args`, tagged `img`, plain progress; returns the progress.
fn build(s: &Store, args: &[&str], ctx: &Path) -> String {
    let mut c = s.cmd(&["build", "--progress", "plain", "-t", "img"]);
    c.args(args).arg(ctx);
    texts(&ok(c)).1
}

/// The lines RUN steps printed after `marker` (`echo marker...`), without the step prefixes.
fn printed(progress: &str, marker: &str) -> Vec<String> {
    progress
        .lines()
        .filter_map(|l| l.split_once(' ').map(|(_, rest)| rest))
        .filter(|l| l.starts_with(marker))
        .map(str::to_owned)
        .collect()
}

/// A layer entry: (mode, uid, gid).
type Meta = (u32, u64, u64);

/// Builds `ctx` into an OCI layout with uncompressed layers and returns, per layer, its
/// entries by name (none for the base's).
fn layers(s: &Store, ctx: &Path) -> Vec<BTreeMap<String, Meta>> {
    let out = tempfile::tempdir().unwrap();
    let layout = out.path().join("oci");
    let mut c = s.cmd(&[
        "build",
        "-q",
        "--compression-format",
        "uncompressed",
        "-o",
        &format!("type=oci,dest={}", layout.display()),
    ]);
    c.arg(ctx);
    ok(c);
    let layers: Vec<BTreeMap<String, (u32, u64, u64)>> = cairn_e2e::layout::read(&layout)
        .layers
        .into_iter()
        .map(|l| {
            l.into_iter()
                .map(|(k, e)| (k, (e.mode, e.uid, e.gid)))
                .collect()
        })
        .collect();
    layers
}

#[test]
fn a_run_on_scratch_leaves_the_dirs_runc_mounts_on_and_no_stubs() {
    let s = loaded_busybox();
    // runc makes /proc, /dev and /sys (0755, root's) to mount on and they stay in the upper
    // directory; BuildKit's MountStubsCleaner (recursive for LLB execs) removes only the
    // empty /etc/hosts and /etc/resolv.conf it bound, the --mount targets, and the parents
    // it made for them that are empty again.
    let ctx = context(
        "FROM busybox AS b\n\
         FROM scratch\n\
         RUN --mount=from=b,target=/b/x [\"/b/x/bin/busybox\", \"true\"]\n\
         RUN --mount=from=b,target=/b/x [\"/b/x/bin/busybox\", \"mkdir\", \"/b/kept\"]\n",
    );
    let layers = layers(&s, ctx.path());
    let names = |l: &BTreeMap<String, Meta>| l.keys().cloned().collect::<Vec<_>>();
    assert_eq!(layers.len(), 2, "{layers:?}");
    assert_eq!(names(&layers[0]), ["dev", "proc", "sys"], "{layers:?}");
    for meta in layers[0].values() {
        assert_eq!(*meta, (0o755, 0, 0), "{layers:?}");
    }
    assert_eq!(names(&layers[1]), ["b", "b/kept"], "{layers:?}");
}

#[test]
fn a_cache_mounts_uid_gid_and_mode_make_a_cache_of_their_own() {
    let s = loaded_busybox();
    // BuildKit mounts /cache of `scratch + mkdir /cache (mode, uid:gid)` (default 0755, 0:0)
    // as the cache's base: the cache's key carries that base, so other owners or modes are
    // another cache, even under the same id.
    let ctx = context(
        "FROM busybox\n\
         RUN --mount=type=cache,target=/c,uid=1000,gid=1000,mode=0700 \
         stat -c 'c1=%u:%g %a' /c && touch /c/one\n\
         RUN --mount=type=cache,target=/c stat -c 'c2=%u:%g %a' /c && ls /c\n\
         RUN --mount=type=cache,target=/c,uid=2000,mode=0750 stat -c 'c3=%u:%g %a' /c && ls /c\n\
         RUN --mount=type=cache,target=/c,gid=1000,mode=0700,uid=1000 \
         stat -c 'c4=%u:%g %a' /c && ls /c\n\
         RUN --mount=type=cache,id=same,target=/d,uid=1 touch /d/f\n\
         RUN --mount=type=cache,id=same,target=/d,uid=2 stat -c 'c5=%u:%g %a' /d && ls /d\n",
    );
    let progress = build(&s, &[], ctx.path());
    let lines: Vec<String> = progress
        .lines()
        .filter_map(|l| l.split_once(' ').map(|(_, rest)| rest.to_owned()))
        .filter(|l| l.starts_with('c') && l.contains('=') || l == "one" || l == "f")
        .collect();
    assert_eq!(
        lines,
        [
            "c1=1000:1000 700",
            "c2=0:0 755",
            "c3=2000:0 750",
            "c4=1000:1000 700",
            "one",
            "c5=2:0 755"
        ],
        "{progress}"
    );
}

/// The config blob of the image tagged `img`, as the store holds it.
fn config_blob(s: &Store) -> serde_json::Value {
    let id = s.inspect("img")["Id"].as_str().unwrap().to_owned();
    let blob = s.root.join("blobs").join(id.replace(':', "/"));
    serde_json::from_slice(&fs::read(blob).unwrap()).unwrap()
}

/// The history of the image tagged `img`, read from its config in the store.
fn history(s: &Store) -> Vec<serde_json::Value> {
    config_blob(s)["history"].as_array().unwrap().clone()
}

/// The `created_by` of each history entry from the first that starts with `first` on.
fn created_by_from(history: &[serde_json::Value], first: &str) -> Vec<String> {
    let at = history
        .iter()
        .position(|h| h["created_by"].as_str().unwrap().starts_with(first))
        .unwrap_or_else(|| panic!("no {first:?} in {history:#?}"));
    history[at..]
        .iter()
        .map(|h| h["created_by"].as_str().unwrap().to_owned())
        .collect()
}

#[test]
fn arg_steps_are_in_the_history_and_runs_list_the_args_in_scope() {
    let s = loaded_busybox();
    // BuildKit's dispatchArg commits "ARG k=v" (the value it resolved; the bare name when
    // nothing gave one) as an empty layer, and a RUN's line is prefixed `|N k=v ...`: the
    // stage's ARGs in the order first declared, each with the value the step environment
    // has for it (an ENV's too), else the declared one, else empty
    // (testExportedHistoryFlattenArgs).
    let ctx = context(
        "FROM busybox\n\
         ARG foo=bar\n\
         ARG bar=123\n\
         ARG foo=bar2\n\
         ARG bare\n\
         ENV bar=env\n\
         RUN ls /etc/\n\
         ARG given=default\n\
         RUN [\"true\"]\n",
    );
    build(&s, &["--build-arg", "given=cli"], ctx.path());
    let history = history(&s);
    let lines = created_by_from(&history, "ARG foo=bar");
    assert_eq!(
        lines,
        [
            "ARG foo=bar",
            "ARG bar=123",
            "ARG foo=bar2",
            "ARG bare",
            lines[4].as_str(),
            "RUN |3 foo=bar2 bar=env bare= /bin/sh -c ls /etc/ # buildkit",
            "ARG given=cli",
            "RUN |4 foo=bar2 bar=env bare= given=cli true # buildkit",
        ],
        "{history:#?}"
    );
    let arg = history
        .iter()
        .find(|h| h["created_by"] == "ARG bare")
        .unwrap();
    assert_eq!(arg["empty_layer"], true, "{arg}");
    assert_eq!(arg["comment"], "buildkit.dockerfile.v0", "{arg}");
}

#[test]
fn a_child_stage_inherits_its_parent_stages_args() {
    let s = loaded_busybox();
    // FROM <stage> starts from the stage's state, its environment with the ARGs' values in
    // it, and its list of build args (dispatchState.init); the image config keeps only ENV.
    // A bare ARG that nothing gives a value leaves the value in the environment.
    let ctx = context(
        "FROM busybox AS a\n\
         ARG X=1\n\
         ENV E=e\n\
         FROM a\n\
         RUN echo \"x=$X e=$E\"\n\
         ARG X\n\
         RUN echo \"again=$X\"\n\
         LABEL x=$X\n",
    );
    let progress = build(&s, &[], ctx.path());
    assert_eq!(printed(&progress, "x="), ["x=1 e=e"], "{progress}");
    assert_eq!(printed(&progress, "again="), ["again=1"], "{progress}");
    let config = &s.inspect("img")["Config"];
    assert_eq!(config["Labels"]["x"], "1");
    let env = config["Env"].as_array().unwrap();
    assert!(
        !env.iter().any(|e| e.as_str().unwrap().starts_with("X=")),
        "{env:?}"
    );
    let lines = created_by_from(&history(&s), "ARG X=1");
    assert_eq!(
        lines,
        [
            "ARG X=1",
            lines[1].as_str(),
            "RUN |1 X=1 /bin/sh -c echo \"x=$X e=$E\" # buildkit",
            "ARG X",
            "RUN |1 X=1 /bin/sh -c echo \"again=$X\" # buildkit",
            lines[5].as_str(),
        ]
    );
}

#[test]
fn an_arg_name_is_never_expanded_and_a_default_is() {
    let s = loaded_busybox();
    // BuildKit expands neither a stage ARG's name (dispatch skips ARG's Expand) nor a global
    // one's (buildMetaArgs): `${name}` is the name. A default expands unless a build arg
    // gives the value, which is taken as it is.
    let ctx = context(
        "FROM busybox\n\
         ARG name=foo\n\
         ARG ${name}=x b=${name}-d c=${name}-d\n\
         RUN [\"env\"]\n",
    );
    let progress = build(&s, &["--build-arg", "b=z$name"], ctx.path());
    assert_eq!(printed(&progress, "${name}="), ["${name}=x"], "{progress}");
    assert_eq!(printed(&progress, "b="), ["b=z$name"], "{progress}");
    assert_eq!(printed(&progress, "c="), ["c=foo-d"], "{progress}");
    assert!(printed(&progress, "foo=").is_empty(), "{progress}");
    let lines = created_by_from(&history(&s), "ARG ${name}");
    assert_eq!(lines[0], "ARG ${name}=x b=z$name c=foo-d");
}

#[test]
fn an_image_whose_last_tag_moves_away_is_dangling() {
    let s = loaded_busybox();
    // As in docker: building `-t x` again with other content moves the tag, and the image it
    // named, named no more, is listed as `<none>` and goes with a prune of dangling images.
    // One that another tag still names stays named.
    let build_q = |tags: &[&str], label: &str| {
        let ctx = context(&format!("FROM busybox\nLABEL v={label}\n"));
        let mut c = s.cmd(&["build", "-q"]);
        for t in tags {
            c.args(["-t", t]);
        }
        c.arg(ctx.path());
        texts(&ok(c)).0.trim().to_owned()
    };
    let ids = [build_q(&["x", "keep"], "one"), build_q(&["x"], "two")];
    let three = build_q(&["x"], "three");
    let short = |id: &str| id["sha256:".len()..][..12].to_owned();
    let list = s.run(&["images"]);
    let row = |id: &str| {
        list.lines()
            .filter(|l| l.contains(&short(id)))
            .map(str::to_owned)
            .collect::<Vec<_>>()
    };
    // "one" is still `keep`; "two" lost its only tag; "three" is `x`.
    assert_eq!(row(&ids[0]).len(), 1, "{list}");
    assert!(row(&ids[0])[0].starts_with("keep"), "{list}");
    assert_eq!(row(&ids[1]).len(), 1, "{list}");
    assert!(row(&ids[1])[0].starts_with("<none>"), "{list}");
    assert!(row(&three)[0].starts_with("x "), "{list}");
    assert_eq!(s.inspect(&ids[1])["Config"]["Labels"]["v"], "two");
    s.run(&["prune"]);
    assert!(
        !s.cmd(&["inspect", &ids[1]])
            .output()
            .unwrap()
            .status
            .success()
    );
    assert_eq!(s.inspect(&ids[0])["Config"]["Labels"]["v"], "one");
    assert_eq!(s.inspect("x")["Id"], three.as_str());
}

#[test]
fn twenty_thousand_env_lines_build_right() {
    let s = Store::new();
    // The size once quadratic in the number of ENV lines (an environment copied for every
    // step); bench/env-lines.sh and `cargo bench -p cairn-builder --bench env_lines` time it.
    const N: usize = 20_000;
    let mut df = String::from("FROM scratch\n");
    for i in 0..N {
        df.push_str(&format!("ENV V{i}=value{i}\n"));
    }
    df.push_str(&format!(
        "ENV LAST=$V0-$V{}\nARG A=$V10\nENV V5=again\nLABEL l=$LAST a=$A v5=$V5\n",
        N - 1
    ));
    let ctx = context(&df);
    build(&s, &[], ctx.path());
    let config = &s.inspect("img")["Config"];
    let env: Vec<&str> = config["Env"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e.as_str().unwrap())
        .collect();
    assert_eq!(env.len(), N + 2);
    assert!(env[0].starts_with("PATH="), "{:?}", &env[..3]);
    assert_eq!(env[1], "V0=value0");
    assert_eq!(env[6], "V5=again", "set in place");
    assert_eq!(env[N], format!("V{}=value{}", N - 1, N - 1));
    assert_eq!(env[N + 1], format!("LAST=value0-value{}", N - 1));
    let labels = &config["Labels"];
    assert_eq!(labels["l"], format!("value0-value{}", N - 1).as_str());
    assert_eq!(labels["a"], "value10");
    assert_eq!(labels["v5"], "again");
}

#[test]
fn cmd_sets_args_escaped_as_buildkit_does_on_linux_too() {
    let s = loaded_busybox();
    // dispatchCmd sets the config's ArgsEscaped for either form, on every platform; nothing
    // else sets or clears it, so it stays through a later ENTRYPOINT and into FROM <stage>.
    let cases = [
        ("FROM busybox\nLABEL a=1\n", None),
        ("FROM busybox\nENTRYPOINT [\"x\"]\n", None),
        ("FROM busybox\nCMD echo hi\n", Some(true)),
        (
            "FROM busybox\nCMD [\"a\"]\nENTRYPOINT [\"e\"]\n",
            Some(true),
        ),
        (
            "FROM busybox AS a\nCMD [\"a\"]\nFROM a\nLABEL b=1\n",
            Some(true),
        ),
    ];
    for (df, want) in cases {
        build(&s, &[], context(df).path());
        let got = config_blob(&s)["config"]["ArgsEscaped"].as_bool();
        assert_eq!(got, want, "{df}");
    }
}

#[test]
fn metadata_steps_have_buildkits_history_lines() {
    let s = loaded_busybox();
    // dispatchEnv, dispatchLabel, ...: "KEYWORD" and the values set, expanded, in Go's %v
    // (lists as `[a b]`, HEALTHCHECK's struct as %+v) or %q (CMD and ENTRYPOINT, `["a" "b"]`),
    // and without the " # buildkit" of steps with a state; ONBUILD commits no entry.
    let ctx = context(
        "FROM busybox\n\
         ENV A=1 B=\"two words\"\n\
         LABEL l=$A m=\"x y\"\n\
         MAINTAINER me\n\
         USER daemon\n\
         WORKDIR /tmp\n\
         VOLUME /v1 /v2\n\
         STOPSIGNAL SIGINT\n\
         EXPOSE 5000 1234/udp 2375\n\
         HEALTHCHECK --interval=5s --start-interval=100ms CMD [\"true\"]\n\
         ONBUILD RUN echo hi\n\
         SHELL [\"/bin/sh\", \"-ec\"]\n\
         CMD echo \"$A\"\n\
         ENTRYPOINT [\"/bin/echo\", \"x\"]\n",
    );
    build(&s, &[], ctx.path());
    let history = history(&s);
    let lines = created_by_from(&history, "ENV A=1");
    assert_eq!(
        lines,
        [
            "ENV A=1 B=two words",
            "LABEL l=1 m=x y",
            "MAINTAINER me",
            "USER daemon",
            "WORKDIR /tmp",
            "VOLUME [/v1 /v2]",
            "STOPSIGNAL SIGINT",
            "EXPOSE [5000/tcp 1234/udp 2375/tcp]",
            "HEALTHCHECK {Test:[CMD true] Interval:5s Timeout:0s StartPeriod:0s \
             StartInterval:100ms Retries:0}",
            "SHELL [/bin/sh -ec]",
            r#"CMD ["/bin/sh" "-ec" "echo \"$A\""]"#,
            r#"ENTRYPOINT ["/bin/echo" "x"]"#,
        ],
        "{history:#?}"
    );
}

#[test]
fn a_run_sees_its_environment_in_the_order_names_were_last_set() {
    let s = loaded_busybox();
    // BuildKit's state environment is an EnvList: the base image's variables, then each ENV
    // pair and ARG value in turn, a name set again moving to where it was set last; the
    // config's Env replaces in place instead.
    let ctx = context(
        "FROM busybox\n\
         ENV A=1\n\
         ARG B=2\n\
         ENV C=3\n\
         ENV A=4\n\
         RUN [\"env\"]\n",
    );
    let progress = build(&s, &[], ctx.path());
    let step: Vec<String> = progress
        .lines()
        .filter(|l| l.starts_with("#") && l.contains('='))
        .filter_map(|l| l.split_once(' ').map(|(_, rest)| rest.to_owned()))
        .filter(|l| !l.starts_with("RUN") && !l.starts_with("ENV") && !l.starts_with("ARG"))
        .filter(|l| !l.starts_with('[') && !l.starts_with("FROM"))
        .map(|l| l.split('=').next().unwrap().to_owned())
        .collect();
    assert_eq!(step, ["PATH", "B", "C", "A", "HOME"], "{progress}");
    let env = s.inspect("img")["Config"]["Env"].clone();
    let keys: Vec<&str> = env
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e.as_str().unwrap().split('=').next().unwrap())
        .collect();
    assert_eq!(keys, ["PATH", "A", "C"]);
}
