//! The readers together: layers in, a report and its SPDX document out.

use super::files::tests::{E, layer};
use super::*;

fn report_of(layers: &[Vec<u8>], limits: Limits) -> SbomReport {
    let mut f = ImageFiles::default();
    for l in layers {
        f.add_layer(&l[..], limits).unwrap();
    }
    report(&f.finish(), "sha256:00".into(), "linux/amd64".into())
}

const LIMITS: Limits = Limits {
    file: 1 << 20,
    total: 4 << 20,
};

const STATUS: &str = "Package: base-files\nStatus: install ok installed\n\
Maintainer: Santiago Vila <sanvila@debian.org>\nArchitecture: amd64\nVersion: 12.4+deb12u5\n\n\
Package: gone\nStatus: deinstall ok config-files\nVersion: 1\n";

fn debian() -> Vec<u8> {
    use E::*;
    layer(&[
        F(
            "usr/lib/os-release",
            "PRETTY_NAME=\"Debian GNU/Linux 12 (bookworm)\"\nID=debian\nVERSION_ID=\"12\"\n",
        ),
        L("etc/os-release", "../usr/lib/os-release"),
        F("var/lib/dpkg/status", STATUS),
        F(
            "usr/lib/python3/dist-packages/six-1.16.0.dist-info/METADATA",
            "Metadata-Version: 2.1\nName: six\nVersion: 1.16.0\nLicense: MIT\nAuthor: Benjamin Peterson\n",
        ),
        F(
            "app/node_modules/.package-lock.json",
            r#"{"lockfileVersion": 3, "packages": {"node_modules/ms": {"version": "2.1.3", "license": "MIT"}}}"#,
        ),
        F(
            "app/node_modules/ms/package.json",
            r#"{"name": "ms", "version": "2.1.3"}"#,
        ),
    ])
}

fn purls(r: &SbomReport) -> Vec<String> {
    r.packages.iter().map(|p| p.purl(r.os.as_ref())).collect()
}

#[test]
fn a_debian_image_with_python_and_npm() {
    let r = report_of(&[debian()], LIMITS);
    assert_eq!(
        purls(&r),
        [
            "pkg:deb/debian/base-files@12.4%2Bdeb12u5?arch=amd64&distro=debian-12",
            "pkg:pypi/six@1.16.0",
            "pkg:npm/ms@2.1.3",
        ]
    );
    assert_eq!(r.not_covered, []);
    let doc = r.to_spdx_json("img", &document_namespace(&r.image), &created(Some(0)));
    assert_eq!(doc["spdxVersion"], "SPDX-2.3");
    assert_eq!(doc["creationInfo"]["created"], "1970-01-01T00:00:00Z");
    assert_eq!(
        doc["documentNamespace"],
        "https://spdx.org/spdxdocs/cairn/sha256-00"
    );
    let packages = doc["packages"].as_array().unwrap();
    assert_eq!(packages.len(), 4);
    let base = &packages[1];
    assert_eq!(base["name"], "base-files");
    assert_eq!(base["versionInfo"], "12.4+deb12u5");
    assert_eq!(
        base["supplier"],
        "Person: Santiago Vila (sanvila@debian.org)"
    );
    assert_eq!(base["licenseDeclared"], "NOASSERTION");
    assert_eq!(packages[2]["licenseDeclared"], "MIT");
    assert_eq!(packages[2]["originator"], "Person: Benjamin Peterson");
    let ids: BTreeSet<&str> = packages
        .iter()
        .map(|p| p["SPDXID"].as_str().unwrap())
        .collect();
    assert_eq!(ids.len(), 4);
    assert_eq!(doc["relationships"].as_array().unwrap().len(), 4);
    assert!(doc.get("comment").is_none());
    // The same image gives the same document.
    let again = report_of(&[debian()], LIMITS).to_spdx_json("img", "ns", "t");
    assert_eq!(r.to_spdx_json("img", "ns", "t"), again);
}

#[test]
fn what_is_not_covered() {
    use E::*;
    let none = report_of(&[layer(&[F("bin/busybox", "x"), D("etc")])], LIMITS);
    assert_eq!(none.packages, []);
    assert_eq!(none.not_covered.len(), 1);
    assert!(
        none.not_covered[0]
            .reason
            .starts_with("no package database found")
    );
    let doc = none.to_spdx_json("busybox", "ns", "t");
    assert_eq!(doc["packages"].as_array().unwrap().len(), 1);
    assert!(
        doc["comment"]
            .as_str()
            .unwrap()
            .contains("no package database found")
    );
    assert_eq!(doc["annotations"].as_array().unwrap().len(), 1);

    let deleted = report_of(
        &[debian(), layer(&[F("var/lib/dpkg/.wh.status", "")])],
        LIMITS,
    );
    assert!(
        deleted
            .packages
            .iter()
            .all(|p| p.ecosystem != Ecosystem::Deb)
    );
    assert_eq!(deleted.packages.len(), 2);

    let rpm = report_of(
        &[layer(&[
            F("var/lib/rpm/rpmdb.sqlite", "SQLite format 3"),
            F("usr/lib/sysimage/rpm/Packages", "BerkeleyDB"),
        ])],
        LIMITS,
    );
    let gaps: Vec<(Option<&str>, &str)> = rpm
        .not_covered
        .iter()
        .map(|n| (n.path.as_deref(), n.reason.as_str()))
        .collect();
    assert_eq!(gaps.len(), 2, "{gaps:?}");
    assert_eq!(gaps[0].0, Some("var/lib/rpm/rpmdb.sqlite"));
    assert!(
        gaps[0]
            .1
            .starts_with("not read: failed to open it as a SQLite database"),
        "{gaps:?}"
    );
    assert_eq!(gaps[1].0, Some("usr/lib/sysimage/rpm/Packages"));
    assert!(gaps[1].1.contains("(BerkeleyDB) present but not read"));

    let small = Limits {
        file: 64,
        total: 1 << 20,
    };
    let big = report_of(&[debian()], small);
    let gap = big
        .not_covered
        .iter()
        .find(|n| n.path.as_deref() == Some("var/lib/dpkg/status"))
        .expect("the status file is reported");
    assert!(
        gap.reason.contains("over the limit of 64 bytes"),
        "{}",
        gap.reason
    );

    let broken = report_of(
        &[layer(&[
            F("app/package-lock.json", "{not json"),
            F("var/lib/dpkg/status", "Package: x\n\nVersion: 1\n"),
        ])],
        LIMITS,
    );
    let reasons: Vec<&str> = broken
        .not_covered
        .iter()
        .map(|n| n.reason.as_str())
        .collect();
    assert_eq!(broken.packages, []);
    assert_eq!(reasons.len(), 2, "{reasons:?}");
    assert!(reasons[0].starts_with("2 entries without"), "{reasons:?}");
    assert!(reasons[1].starts_with("not JSON"), "{reasons:?}");
}

#[test]
fn os_release() {
    let cases: &[(&str, Option<&str>)] = &[
        ("ID=debian\nVERSION_ID=\"12\"\n", Some("debian-12")),
        ("ID='alpine'\nVERSION_ID=3.19.1", Some("alpine-3.19.1")),
        (
            "ID=debian\nVERSION_CODENAME=trixie\n",
            Some("debian-trixie"),
        ),
        ("ID=\"a\\\"b\"\nVERSION_ID=1", Some("a\"b-1")),
        ("VERSION_ID=1", None),
        ("ID=x", None),
        ("\"", None),
        ("ID=\"", None),
    ];
    for (text, want) in cases {
        assert_eq!(
            OsRelease::parse(text).distro().as_deref(),
            *want,
            "{text:?}"
        );
    }
}
