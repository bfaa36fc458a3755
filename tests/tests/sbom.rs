//! `cairn sbom` through the real binary: the Debian fixture's packages against what dpkg-query
//! reads from the same status file, an rpm root's packages against what rpm -qa lists from its
//! SQLite database, an image without a package database, a layer deleting dpkg's database,
//! Python and npm metadata; every document checked by the SPDX tools' own validator.
#![allow(clippy::unwrap_used)]

use std::collections::BTreeSet;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use cairn_e2e::docker::debian_archive;
use cairn_e2e::{Store, context_with, loaded_busybox, ok, texts, tool};
use serde_json::Value;

/// pyspdxtools, which scripts/install-deps.sh installs from PyPI into a venv every user can run.
const VALIDATOR: &str = "/opt/cairn-tests/spdx-tools/bin/pyspdxtools";

fn validate(doc: &Path) {
    assert!(
        Path::new(VALIDATOR).is_file(),
        "{VALIDATOR} is missing: run scripts/install-deps.sh"
    );
    let mut v = Command::new(VALIDATOR);
    v.arg("-i").arg(doc);
    ok(v);
}

fn loaded_debian() -> Store {
    let s = Store::new();
    let archive = debian_archive().to_str().unwrap();
    s.run(&["load", "-i", archive]);
    s
}

/// `cairn sbom IMAGE -o FILE`, validated: the document, and cairn's standard error.
fn sbom(s: &Store, image: &str, dir: &Path) -> (Value, String) {
    let file = dir.join(format!("{}.spdx.json", image.replace([':', '/'], "_")));
    let mut c = s.cmd(&["sbom", image, "-o"]);
    c.arg(&file).env("SOURCE_DATE_EPOCH", "1700000000");
    let (_, stderr) = texts(&ok(c));
    validate(&file);
    (
        serde_json::from_slice(&fs::read(&file).unwrap()).unwrap(),
        stderr,
    )
}

/// (name, version, arch) of the document's packages of one purl type.
fn packages(doc: &Value, kind: &str) -> BTreeSet<(String, String, String)> {
    doc["packages"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|p| {
            let purl = Purl::parse(p["externalRefs"][0]["referenceLocator"].as_str()?);
            (purl.kind == kind).then(|| {
                let name = p["name"].as_str().unwrap();
                if kind == "pypi" {
                    // The spec's pypi names are lowercase, `_` as `-`.
                    assert_eq!(purl.name, name.to_lowercase().replace('_', "-"));
                } else if kind == "npm" {
                    let scoped = match &purl.namespace {
                        Some(scope) => format!("{scope}/{}", purl.name),
                        None => purl.name.clone(),
                    };
                    assert_eq!(scoped, name);
                } else {
                    assert_eq!(purl.name, name);
                }
                // rpm's epoch is a qualifier of the purl, and `E:` before the version info.
                let evr = match purl.qualifier("epoch") {
                    Some(e) if kind == "rpm" => format!("{e}:{}", purl.version),
                    _ => purl.version.clone(),
                };
                assert_eq!(evr, p["versionInfo"].as_str().unwrap());
                let arch = purl.qualifier("arch").unwrap_or_default();
                (purl.name, purl.version, arch)
            })
        })
        .collect()
}

/// A purl taken apart, the test's own reading of the spec: `pkg:type/namespace/name@version
/// ?qualifiers`, each component percent-decoded.
#[derive(Debug)]
struct Purl {
    kind: String,
    namespace: Option<String>,
    name: String,
    version: String,
    qualifiers: Vec<(String, String)>,
}

impl Purl {
    fn parse(s: &str) -> Purl {
        let rest = s.strip_prefix("pkg:").expect("a purl starts with pkg:");
        let (rest, qualifiers) = rest.split_once('?').unwrap_or((rest, ""));
        let (path, version) = rest.rsplit_once('@').expect("a version");
        let mut parts: Vec<&str> = path.split('/').collect();
        let kind = parts.remove(0).to_owned();
        let name = decode(parts.pop().unwrap());
        let namespace = (!parts.is_empty()).then(|| decode(&parts.join("/")));
        let qualifiers = qualifiers
            .split('&')
            .filter(|q| !q.is_empty())
            .map(|q| {
                let (k, v) = q.split_once('=').unwrap();
                (k.to_owned(), decode(v))
            })
            .collect();
        Purl {
            kind,
            namespace,
            name,
            version: decode(version),
            qualifiers,
        }
    }

    fn qualifier(&self, key: &str) -> Option<String> {
        self.qualifiers
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.clone())
    }
}

fn decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            out.push(u8::from_str_radix(&s[i + 1..i + 3], 16).unwrap());
            i += 3;
        } else {
            assert!(
                b[i].is_ascii_alphanumeric() || b"._-~:".contains(&b[i]),
                "{s:?}: {:?} should be percent-encoded",
                b[i] as char
            );
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8(out).unwrap()
}

/// What dpkg-query itself lists from the fixture's status file, extracted from the archive
/// with tar: (name, version, arch) of the packages whose files are installed.
fn dpkg_query_packages(dir: &Path) -> BTreeSet<(String, String, String)> {
    let archive = debian_archive();
    let mut manifest = tool("tar");
    manifest.arg("-xOf").arg(archive).arg("manifest.json");
    let manifest: Value = serde_json::from_slice(&ok(manifest).stdout).unwrap();
    let layers = manifest[0]["Layers"].as_array().unwrap();
    assert_eq!(layers.len(), 1, "the fixture is one imported layer");
    let root = dir.join("rootfs");
    fs::create_dir_all(&root).unwrap();
    let script = format!(
        "tar -xOf '{}' '{}' | tar -x -C '{}' --wildcards '*var/lib/dpkg/status'",
        archive.display(),
        layers[0].as_str().unwrap(),
        root.display()
    );
    let mut extract = tool("sh");
    extract.args(["-c", &script]);
    ok(extract);
    let mut q = tool("dpkg-query");
    q.arg(format!(
        "--admindir={}",
        root.join("var/lib/dpkg").display()
    ))
    .args([
        "-W",
        "-f",
        "${db:Status-Status} ${Package} ${Version} ${Architecture}\n",
    ]);
    let out = texts(&ok(q)).0;
    out.lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split(' ').collect();
            let on_disk = !matches!(f[0], "not-installed" | "config-files");
            on_disk.then(|| (f[1].to_owned(), f[2].to_owned(), f[3].to_owned()))
        })
        .collect()
}

#[test]
fn debian_lists_exactly_what_dpkg_query_lists() {
    let s = loaded_debian();
    let dir = tempfile::tempdir().unwrap();
    let (doc, stderr) = sbom(&s, "debian:bookworm", dir.path());
    assert_eq!(stderr, "", "nothing is left uncovered");
    assert!(doc.get("comment").is_none(), "{doc:#}");

    let want = dpkg_query_packages(dir.path());
    assert!(
        want.len() > 50,
        "a minbase has dozens of packages: {want:?}"
    );
    assert_eq!(packages(&doc, "deb"), want);

    let base_files = want.iter().find(|(n, _, _)| n == "base-files").unwrap();
    let entry = doc["packages"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == "base-files")
        .unwrap();
    assert_eq!(entry["versionInfo"], base_files.1.as_str());
    let purl = Purl::parse(
        entry["externalRefs"][0]["referenceLocator"]
            .as_str()
            .unwrap(),
    );
    assert_eq!(purl.kind, "deb");
    assert_eq!(purl.namespace.as_deref(), Some("debian"));
    assert_eq!(purl.version, base_files.1);
    assert_eq!(purl.qualifier("arch").as_deref(), Some("amd64"));
    assert_eq!(purl.qualifier("distro").as_deref(), Some("debian-12"));

    // The document describes the image, which contains every package.
    let image = &doc["packages"][0];
    assert_eq!(image["name"], "debian:bookworm");
    let relationships = doc["relationships"].as_array().unwrap();
    assert_eq!(relationships[0]["relationshipType"], "DESCRIBES");
    assert_eq!(relationships.len(), want.len() + 1);
    assert_eq!(doc["creationInfo"]["created"], "2023-11-14T22:13:20Z");
    let inspect = s.inspect("debian:bookworm");
    let digest = inspect["ManifestDigest"].as_str().unwrap();
    assert_eq!(image["versionInfo"], digest);
    assert!(
        doc["documentNamespace"]
            .as_str()
            .unwrap()
            .ends_with(&digest.replace(':', "-"))
    );

    // With SOURCE_DATE_EPOCH the same image gives the same bytes, on standard output too.
    let file = dir.path().join("debian_bookworm.spdx.json");
    let mut again = s.cmd(&["sbom", "debian:bookworm"]);
    again.env("SOURCE_DATE_EPOCH", "1700000000");
    assert_eq!(ok(again).stdout, fs::read(&file).unwrap());
}

#[test]
fn an_image_without_a_package_database_says_so() {
    let s = loaded_busybox();
    let dir = tempfile::tempdir().unwrap();
    let (doc, stderr) = sbom(&s, "busybox", dir.path());
    let packages = doc["packages"].as_array().unwrap();
    assert_eq!(packages.len(), 1, "only the image itself: {doc:#}");
    assert!(
        doc["comment"]
            .as_str()
            .unwrap()
            .contains("no package database found"),
        "{doc:#}"
    );
    assert_eq!(doc["annotations"].as_array().unwrap().len(), 1);
    assert!(
        stderr.contains("warning: not covered: no package database found"),
        "{stderr}"
    );
}

#[test]
fn a_layer_deleting_dpkgs_database_leaves_only_the_other_ecosystems() {
    let s = loaded_debian();
    let metadata = "Metadata-Version: 2.1\nName: Demo_Pkg\nVersion: 1.2.3\nLicense: MIT\n\
                    Author: A Person\nAuthor-email: a@example.com\n\nDescription body\n";
    let lock = r#"{"lockfileVersion": 3, "packages": {
        "node_modules/@scope/left": {"version": "1.0.0", "license": "Apache-2.0"},
        "node_modules/ms": {"version": "2.1.3", "license": "see LICENSE"}}}"#;
    let ctx = context_with(
        "FROM debian:bookworm\n\
         RUN rm /var/lib/dpkg/status\n\
         COPY METADATA /usr/lib/python3/dist-packages/Demo_Pkg-1.2.3.dist-info/METADATA\n\
         COPY lock.json /app/node_modules/.package-lock.json\n\
         COPY bad.json /srv/package-lock.json\n",
        &[
            ("METADATA", metadata),
            ("lock.json", lock),
            ("bad.json", "{ not json"),
        ],
    );
    let mut build = s.cmd(&["build", "--progress", "plain", "-t", "trimmed"]);
    build.arg(ctx.path());
    ok(build);
    let dir = tempfile::tempdir().unwrap();
    let (doc, stderr) = sbom(&s, "trimmed", dir.path());
    assert_eq!(packages(&doc, "deb"), BTreeSet::new(), "{doc:#}");
    let pypi = packages(&doc, "pypi");
    assert_eq!(
        pypi,
        BTreeSet::from([("demo-pkg".into(), "1.2.3".into(), String::new())])
    );
    let npm = packages(&doc, "npm");
    assert_eq!(
        npm,
        BTreeSet::from([
            ("left".into(), "1.0.0".into(), String::new()),
            ("ms".into(), "2.1.3".into(), String::new()),
        ])
    );
    let by_name = |name: &str| {
        doc["packages"]
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["name"] == name)
            .unwrap()
            .clone()
    };
    assert_eq!(
        by_name("@scope/left")["externalRefs"][0]["referenceLocator"],
        "pkg:npm/%40scope/left@1.0.0"
    );
    assert_eq!(by_name("@scope/left")["licenseDeclared"], "Apache-2.0");
    // Free text is no license expression: kept as a comment.
    assert_eq!(by_name("ms")["licenseDeclared"], "NOASSERTION");
    assert!(
        by_name("ms")["licenseComments"]
            .as_str()
            .unwrap()
            .contains("see LICENSE")
    );
    let demo = by_name("Demo_Pkg");
    assert_eq!(demo["licenseDeclared"], "MIT");
    assert_eq!(demo["originator"], "Person: A Person (a@example.com)");
    // The unreadable lockfile is named, in the document and on standard error.
    assert!(
        doc["comment"]
            .as_str()
            .unwrap()
            .contains("/srv/package-lock.json: not JSON"),
        "{doc:#}"
    );
    assert!(stderr.contains("/srv/package-lock.json"), "{stderr}");
}

#[test]
fn bad_arguments_fail_cleanly() {
    let s = loaded_busybox();
    let dir = tempfile::tempdir().unwrap();
    let cases: &[(&[&str], &str)] = &[
        (&["sbom", "nosuch"], "nosuch"),
        (&["sbom", "busybox", "--format", "cyclonedx"], "cyclonedx"),
        (
            &["sbom", "busybox", "--platform", "nosuch/os/x/y"],
            "nosuch",
        ),
    ];
    for (args, named) in cases {
        let out = s.cmd(args).output().unwrap();
        let (stdout, stderr) = texts(&out);
        assert!(!out.status.success(), "{args:?}: {stdout}");
        assert!(stderr.contains(named), "{args:?}: {stderr}");
        assert_eq!(stdout, "", "{args:?}");
    }
    let missing: PathBuf = dir.path().join("no/such/dir/sbom.json");
    let out = s
        .cmd(&["sbom", "busybox", "-o"])
        .arg(&missing)
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(texts(&out).1.contains("failed to write the SBOM"));
    assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 0, "nothing left");
}

/// Two tiny noarch rpms: one with an epoch, an SPDX license and a vendor, one with neither an
/// epoch nor an SPDX license.
const RPM_SPECS: [(&str, &str); 2] = [
    (
        "cairn-hello",
        "Version: 1.2.3\nRelease: 4.fc39\nEpoch: 2\nLicense: MIT AND (Apache-2.0 OR BSD-3-Clause)\n\
         Vendor: Fedora Project\n",
    ),
    (
        "cairn-world",
        "Version: 0.9~rc1\nRelease: 1\nLicense: GPLv2+ and Public Domain\n",
    ),
];

/// A root directory with the rpms of [`RPM_SPECS`] installed by rpm itself (Debian's rpm
/// package: rpmbuild and rpm) into a SQLite database laid out as Fedora lays it out:
/// `/usr/lib/sysimage/rpm`, and `/var/lib/rpm` a symlink to it. rpm runs as whoever runs the
/// test: `--root` is a plain directory, and no scriptlet runs.
fn rpm_root(dir: &Path) -> PathBuf {
    let top = dir.join("rpmbuild");
    let root = dir.join("root");
    fs::create_dir_all(top.join("SPECS")).unwrap();
    fs::create_dir_all(root.join("etc")).unwrap();
    fs::create_dir_all(root.join("var/lib")).unwrap();
    let mut rpms = Vec::new();
    for (name, fields) in RPM_SPECS {
        let spec = top.join("SPECS").join(format!("{name}.spec"));
        fs::write(
            &spec,
            format!(
                "Name: {name}\nSummary: a test package\nBuildArch: noarch\n{fields}\n\
                 %description\nA test package.\n\n\
                 %install\nmkdir -p %{{buildroot}}/usr/share/{name}\n\
                 echo {name} > %{{buildroot}}/usr/share/{name}/README\n\n\
                 %files\n/usr/share/{name}/README\n"
            ),
        )
        .unwrap();
        let mut build = tool("rpmbuild");
        build
            .arg("--define")
            .arg(format!("_topdir {}", top.display()))
            .arg("-bb")
            .arg(&spec);
        ok(build);
    }
    for entry in fs::read_dir(top.join("RPMS/noarch")).unwrap() {
        rpms.push(entry.unwrap().path());
    }
    assert_eq!(rpms.len(), RPM_SPECS.len(), "{rpms:?}");
    let mut install = tool("rpm");
    install
        .arg("--root")
        .arg(&root)
        .args(["--dbpath", "/usr/lib/sysimage/rpm"])
        .args(["--define", "_db_backend sqlite"])
        .args(["--nodeps", "--noscripts", "-i"])
        .args(&rpms);
    ok(install);
    assert!(root.join("usr/lib/sysimage/rpm/rpmdb.sqlite").is_file());
    std::os::unix::fs::symlink("../../usr/lib/sysimage/rpm", root.join("var/lib/rpm")).unwrap();
    fs::write(
        root.join("etc/os-release"),
        "NAME=\"Fedora Linux\"\nID=fedora\nVERSION_ID=39\n",
    )
    .unwrap();
    root
}

/// What rpm itself lists from `root`'s database: (name, version-release, arch).
fn rpm_qa(root: &Path) -> BTreeSet<(String, String, String)> {
    let mut q = tool("rpm");
    q.arg("--root")
        .arg(root)
        .args(["--dbpath", "/var/lib/rpm", "-qa", "--qf"])
        .arg("%{NAME} %{VERSION}-%{RELEASE} %{ARCH}\n");
    texts(&ok(q))
        .0
        .lines()
        .map(|l| {
            let f: Vec<&str> = l.split(' ').collect();
            (f[0].to_owned(), f[1].to_owned(), f[2].to_owned())
        })
        .collect()
}

/// `root` as a one-layer image named `name` in `s`.
fn import_root(s: &Store, root: &Path, name: &str) {
    let tarball = root.with_extension("tar");
    let mut t = tool("tar");
    t.arg("-C").arg(root).arg("-cf").arg(&tarball).arg(".");
    ok(t);
    s.run(&["import", tarball.to_str().unwrap(), name]);
}

#[test]
fn an_rpm_root_lists_exactly_what_rpm_lists() {
    let dir = tempfile::tempdir().unwrap();
    let root = rpm_root(dir.path());
    let want = rpm_qa(&root);
    assert_eq!(want.len(), RPM_SPECS.len(), "{want:?}");
    let s = Store::new();
    import_root(&s, &root, "rpmimg");
    let (doc, stderr) = sbom(&s, "rpmimg", dir.path());
    assert_eq!(stderr, "", "nothing is left uncovered");
    assert!(doc.get("comment").is_none(), "{doc:#}");
    assert_eq!(packages(&doc, "rpm"), want);

    let by_name = |name: &str| {
        doc["packages"]
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["name"] == name)
            .unwrap()
            .clone()
    };
    let hello = by_name("cairn-hello");
    assert_eq!(
        hello["externalRefs"][0]["referenceLocator"],
        "pkg:rpm/fedora/cairn-hello@1.2.3-4.fc39?arch=noarch&distro=fedora-39&epoch=2"
    );
    assert_eq!(hello["versionInfo"], "2:1.2.3-4.fc39");
    assert_eq!(
        hello["licenseDeclared"],
        "MIT AND (Apache-2.0 OR BSD-3-Clause)"
    );
    assert_eq!(hello["supplier"], "Organization: Fedora Project");
    assert_eq!(
        hello["sourceInfo"],
        "rpm metadata at /usr/lib/sysimage/rpm/rpmdb.sqlite, \
         built from cairn-hello-1.2.3-4.fc39.src.rpm"
    );
    let world = by_name("cairn-world");
    assert_eq!(
        world["externalRefs"][0]["referenceLocator"],
        "pkg:rpm/fedora/cairn-world@0.9~rc1-1?arch=noarch&distro=fedora-39"
    );
    // Not an SPDX expression: kept as the metadata gives it, in a comment.
    assert_eq!(world["licenseDeclared"], "NOASSERTION");
    assert!(
        world["licenseComments"]
            .as_str()
            .unwrap()
            .contains("GPLv2+ and Public Domain"),
        "{world:#}"
    );
    assert!(world.get("supplier").is_none(), "{world:#}");
}

#[test]
fn an_unreadable_rpm_database_is_not_covered_not_a_failure() {
    let dir = tempfile::tempdir().unwrap();
    let root = rpm_root(dir.path());
    let db = root.join("usr/lib/sysimage/rpm/rpmdb.sqlite");
    let len = fs::metadata(&db).unwrap().len() as usize;
    fs::write(&db, b"\xde\xad\xbe\xef garbage ".repeat(len / 14 + 1)).unwrap();
    // An older release's BerkeleyDB database beside it: found, not read.
    fs::write(
        root.join("usr/lib/sysimage/rpm/Packages"),
        b"\0\0\0\0\x61\x15\x06\0",
    )
    .unwrap();
    let s = Store::new();
    import_root(&s, &root, "rpmbad");
    let (doc, stderr) = sbom(&s, "rpmbad", dir.path());
    assert_eq!(packages(&doc, "rpm"), BTreeSet::new(), "{doc:#}");
    let comment = doc["comment"].as_str().unwrap();
    assert!(
        comment.contains(
            "/usr/lib/sysimage/rpm/rpmdb.sqlite: not read: failed to open it as a SQLite database"
        ),
        "{comment}"
    );
    assert!(
        comment.contains("/usr/lib/sysimage/rpm/Packages: rpm database"),
        "{comment}"
    );
    assert!(
        comment.contains("(BerkeleyDB) present but not read"),
        "{comment}"
    );
    assert_eq!(doc["annotations"].as_array().unwrap().len(), 2, "{doc:#}");
    assert!(
        stderr.contains("/usr/lib/sysimage/rpm/rpmdb.sqlite"),
        "{stderr}"
    );
}
