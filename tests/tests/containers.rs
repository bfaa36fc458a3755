//! The containers of `cairn run` through the real binary: records and names, `ps`, `rm`,
//! `commit`, `-d` with `logs`/`stop`/`wait`, `--env-file`, `-p`'s refusal, docker's
//! `container` spellings; nothing left behind.
#![allow(clippy::unwrap_used)]

use std::path::PathBuf;
use std::process::Output;
use std::time::{Duration, Instant};

use cairn_e2e::{Store, loaded_busybox, ok, texts};

fn out(s: &Store, args: &[&str]) -> Output {
    s.cmd(args).output().unwrap()
}

/// Standard output of a command that must succeed.
fn stdout(s: &Store, args: &[&str]) -> String {
    texts(&ok(s.cmd(args))).0
}

fn container_dir(s: &Store, id: &str) -> PathBuf {
    s.root.join("containers").join(id)
}

/// Polls (no fixed sleeps) until `done` holds, for at most 20 s.
fn until(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(25));
    }
}

fn record(s: &Store, id: &str) -> serde_json::Value {
    let text = std::fs::read(container_dir(s, id).join("container.json")).unwrap();
    serde_json::from_slice(&text).unwrap()
}

fn alive(pid: &serde_json::Value) -> bool {
    pid.as_u64()
        .is_some_and(|p| std::path::Path::new(&format!("/proc/{p}")).exists())
}

/// `run -d`: its full id, checked.
fn detached(s: &Store, args: &[&str]) -> String {
    let mut all = vec!["run", "-d"];
    all.extend(args);
    let id = stdout(s, &all).trim().to_owned();
    assert_eq!(id.len(), 64, "{id:?}");
    assert!(id.bytes().all(|b| b.is_ascii_hexdigit()), "{id:?}");
    id
}

#[test]
fn a_named_container_is_listed_logged_and_removed() {
    let s = loaded_busybox();
    let o = out(
        &s,
        &[
            "run",
            "--name",
            "web",
            "busybox",
            "sh",
            "-c",
            "echo hi; exit 3",
        ],
    );
    assert_eq!(o.status.code(), Some(3));
    assert_eq!(texts(&o).0, "hi\n");
    // Exited ones only with -a.
    assert_eq!(stdout(&s, &["ps", "-q"]), "");
    let table = stdout(&s, &["ps", "-a"]);
    let mut lines = table.lines();
    let head = lines.next().unwrap();
    for col in [
        "CONTAINER ID",
        "IMAGE",
        "COMMAND",
        "CREATED",
        "STATUS",
        "PORTS",
        "NAMES",
    ] {
        assert!(head.contains(col), "{head}");
    }
    let row = lines.next().unwrap();
    assert!(
        row.contains("busybox") && row.contains("Exited (3)") && row.ends_with("web"),
        "{row}"
    );
    assert!(row.contains("\"sh -c echo hi; exit…\""), "{row}");
    let id = stdout(&s, &["ps", "-aq", "--no-trunc"]).trim().to_owned();
    assert_eq!(id.len(), 64);
    assert_eq!(stdout(&s, &["ps", "-aq"]).trim(), &id[..12]);
    assert_eq!(
        stdout(
            &s,
            &["ps", "-a", "--format", "{{.Names}}|{{.State}}|{{.Image}}"]
        ),
        "web|exited|busybox\n"
    );
    let json: serde_json::Value =
        serde_json::from_str(stdout(&s, &["ps", "-a", "--format", "json"]).trim()).unwrap();
    assert_eq!(json["Names"], "web");
    assert_eq!(stdout(&s, &["ps", "--filter", "status=running", "-q"]), "");
    assert_eq!(
        stdout(&s, &["ps", "-a", "--filter", "name=we", "-q"]).trim(),
        &id[..12]
    );
    assert_eq!(stdout(&s, &["ps", "-a", "--filter", "name=nope", "-q"]), "");
    // The name is taken while the container exists, in docker's words and status.
    let again = out(&s, &["run", "--name", "web", "busybox", "true"]);
    assert_eq!(again.status.code(), Some(125));
    assert!(
        texts(&again).1.contains(&format!(
            "Conflict. The container name \"/web\" is already in use by container \"{id}\". \
             You have to remove (or rename) that container to be able to reuse that name."
        )),
        "{}",
        texts(&again).1
    );
    assert_eq!(stdout(&s, &["logs", "web"]), "hi\n");
    let inspect: serde_json::Value =
        serde_json::from_str(&stdout(&s, &["container", "inspect", &id[..8]])).unwrap();
    assert_eq!(inspect[0]["Name"], "/web");
    assert_eq!(inspect[0]["State"]["ExitCode"], 3);
    assert_eq!(inspect[0]["Path"], "sh");
    assert_eq!(stdout(&s, &["rm", "web"]), "web\n");
    assert!(!container_dir(&s, &id).exists());
    assert_eq!(stdout(&s, &["ps", "-aq"]), "");
    // Free again.
    ok(s.cmd(&["run", "--rm", "--name", "web", "busybox", "true"]));
    assert_eq!(stdout(&s, &["container", "ls", "-aq"]), "");
    let missing = out(&s, &["rm", "web"]);
    assert!(!missing.status.success());
    assert!(texts(&missing).1.contains("No such container: web"));
}

#[test]
fn concurrent_runs_do_not_share_a_name() {
    let s = loaded_busybox();
    let children: Vec<_> = (0..4)
        .map(|_| {
            s.cmd(&["run", "--name", "same", "busybox", "true"])
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::null())
                .spawn()
                .unwrap()
        })
        .collect();
    let codes: Vec<Option<i32>> = children
        .into_iter()
        .map(|mut c| c.wait().unwrap().code())
        .collect();
    assert_eq!(
        codes.iter().filter(|c| **c == Some(0)).count(),
        1,
        "{codes:?}"
    );
    assert_eq!(
        codes.iter().filter(|c| **c == Some(125)).count(),
        3,
        "{codes:?}"
    );
    assert_eq!(stdout(&s, &["ps", "-aq"]).lines().count(), 1);
}

#[test]
fn a_detached_container_logs_stops_and_is_waited_for() {
    let s = loaded_busybox();
    let script = "echo out; echo err >&2; trap 'echo bye; exit 3' TERM; \
                  while :; do sleep 0.05; done";
    let id = detached(&s, &["--name", "bg", "busybox", "sh", "-c", script]);
    let r = record(&s, &id);
    assert_eq!(r["state"], "running");
    assert!(alive(&r["pid"]["pid"]) && alive(&r["owner"]["pid"]), "{r}");
    let status = stdout(&s, &["ps", "--format", "{{.Names}} {{.Status}}"]);
    assert!(status.starts_with("bg Up "), "{status}");
    until("both lines logged", || {
        let o = ok(s.cmd(&["logs", "bg"]));
        texts(&o) == ("out\n".into(), "err\n".into())
    });
    let stamped = stdout(&s, &["logs", "-t", "bg"]);
    let (time, text) = stamped.trim_end().split_once(' ').unwrap();
    assert!(
        time.starts_with("20") && time.contains('T') && time.ends_with('Z'),
        "{stamped}"
    );
    assert_eq!(text, "out");
    // Running: rm refuses without -f.
    let refused = out(&s, &["rm", "bg"]);
    assert!(!refused.status.success());
    assert!(
        texts(&refused).1.contains("container is running"),
        "{}",
        texts(&refused).1
    );
    let waiting = std::thread::spawn({
        let mut c = s.cmd(&["wait", "bg"]);
        move || c.output().unwrap()
    });
    let started = Instant::now();
    assert_eq!(stdout(&s, &["stop", "bg"]), "bg\n");
    // The trap ran at SIGTERM: no ten-second SIGKILL.
    assert!(started.elapsed() < Duration::from_secs(5));
    assert_eq!(texts(&waiting.join().unwrap()).0, "3\n");
    let r = record(&s, &id);
    assert_eq!(
        (r["state"].clone(), r["exit_code"].clone()),
        ("exited".into(), 3.into())
    );
    assert!(!alive(&r["owner"]["pid"]));
    assert_eq!(stdout(&s, &["logs", "--tail", "1", "bg"]), "bye\n");
    assert_eq!(stdout(&s, &["container", "rm", "bg"]), "bg\n");
    assert!(!container_dir(&s, &id).exists());
}

#[test]
fn stop_kills_what_ignores_sigterm_and_rm_f_kills_too() {
    let s = loaded_busybox();
    let id = detached(&s, &["busybox", "sleep", "100"]);
    let pid = record(&s, &id)["pid"]["pid"].clone();
    ok(s.cmd(&["stop", "-t", "0", &id[..12]]));
    assert!(!alive(&pid));
    assert_eq!(stdout(&s, &["wait", &id]), "137\n");
    let id2 = detached(&s, &["--rm", "busybox", "sleep", "100"]);
    let owner = record(&s, &id2)["owner"]["pid"].clone();
    assert_eq!(stdout(&s, &["rm", "-f", &id2]), format!("{id2}\n"));
    assert!(!alive(&owner) && !container_dir(&s, &id2).exists());
    // A follower sees the output as it comes and ends with the container.
    let id3 = detached(&s, &["busybox", "sh", "-c", "echo a; sleep 0.2; echo b"]);
    assert_eq!(stdout(&s, &["logs", "-f", &id3]), "a\nb\n");
    ok(s.cmd(&["container", "prune", "-f"]));
    assert_eq!(stdout(&s, &["ps", "-aq"]), "");
    assert!(
        std::fs::read_dir(s.root.join("containers"))
            .unwrap()
            .all(|e| { !e.unwrap().file_type().unwrap().is_dir() })
    );
}

#[test]
fn a_container_whose_monitor_died_shows_exited() {
    let s = loaded_busybox();
    let id = detached(&s, &["busybox", "sleep", "100"]);
    let owner = record(&s, &id)["owner"]["pid"].as_u64().unwrap();
    ok({
        let mut k = std::process::Command::new("kill");
        k.args(["-KILL", &owner.to_string()]);
        k
    });
    until("the container to show exited", || {
        stdout(&s, &["ps", "-a", "--format", "{{.Status}}"]).starts_with("Exited (255)")
    });
    assert_eq!(stdout(&s, &["ps", "-q"]), "");
    ok(s.cmd(&["rm", &id]));
    assert!(!container_dir(&s, &id).exists());
}

#[test]
fn commit_stores_the_containers_changes_as_an_image() {
    let s = loaded_busybox();
    ok(s.cmd(&[
        "run",
        "--name",
        "cm",
        "busybox",
        "sh",
        "-c",
        "echo changed > /new; rm /etc/group",
    ]));
    let id = stdout(
        &s,
        &[
            "commit",
            "-m",
            "a message",
            "-a",
            "me",
            "-c",
            "ENV X=1",
            "cm",
            "made:v1",
        ],
    );
    let id = id.trim();
    assert!(id.starts_with("sha256:") && id.len() == 71, "{id}");
    let o = stdout(
        &s,
        &[
            "run",
            "--rm",
            "made:v1",
            "sh",
            "-c",
            "cat /new; test -e /etc/group || echo gone; echo $X",
        ],
    );
    assert_eq!(o, "changed\ngone\n1\n");
    let image = s.inspect("made:v1");
    assert_eq!(image["Id"], id);
    assert_eq!(image["Author"], "me");
    let history = stdout(&s, &["history", "--no-trunc", "made:v1"]);
    assert!(history.contains("a message"), "{history}");
    // docker's: the container's command is the image's CMD (and fails on what it removed).
    let again = out(&s, &["run", "--rm", "made:v1"]);
    assert!(
        texts(&again).1.contains("can't remove '/etc/group'"),
        "{}",
        texts(&again).1
    );
    ok(s.cmd(&["container", "commit", "cm"]));
}

#[test]
fn env_files_are_read_as_docker_reads_them() {
    let s = loaded_busybox();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("env");
    std::fs::write(
        &file,
        "# comment\nA=1\n\n  B=two words\nFROM_HOST\nUNSET_HERE\nC=x\n",
    )
    .unwrap();
    let mut c = s.cmd(&[
        "run",
        "--rm",
        "--env-file",
        file.to_str().unwrap(),
        "-e",
        "C=y",
    ]);
    c.args([
        "busybox",
        "sh",
        "-c",
        "echo \"$A|$B|$FROM_HOST|${UNSET_HERE-unset}|$C\"",
    ]);
    c.env("FROM_HOST", "h").env_remove("UNSET_HERE");
    assert_eq!(texts(&ok(c)).0, "1|two words|h|unset|y\n");
    std::fs::write(&file, "A=1\nBAD KEY=2\n").unwrap();
    let bad = out(
        &s,
        &[
            "run",
            "--rm",
            "--env-file",
            file.to_str().unwrap(),
            "busybox",
            "true",
        ],
    );
    assert!(!bad.status.success());
    let err = texts(&bad).1;
    assert!(
        err.contains(&format!("{}: line 2:", file.display())),
        "{err}"
    );
}

#[test]
fn publishing_ports_is_refused_with_what_to_use() {
    let s = loaded_busybox();
    let o = out(&s, &["run", "--rm", "-p", "8080:80", "busybox", "true"]);
    assert!(!o.status.success());
    let err = texts(&o).1;
    assert!(
        err.contains("publishes no ports") && err.contains("--network host"),
        "{err}"
    );
    assert_eq!(stdout(&s, &["ps", "-aq"]), "");
}
