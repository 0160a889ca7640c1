//! The documentation says what the binary does: the README's quickstart, its links, and a
//! `--help` without the verbs repx runs for itself.

use std::fs;

use crate::common::{TempDir, repo_root, repx};

#[test]
fn help_lists_the_users_verbs_and_not_the_internal_ones() {
    let dir = TempDir::new();
    let help = repx(dir.path(), &["--help"]);
    help.expect_code(0);
    let verbs: Vec<&str> = help
        .stdout
        .lines()
        .skip_while(|l| !l.starts_with("Commands:"))
        .skip(1)
        .take_while(|l| l.starts_with("  "))
        .filter_map(|l| l.split_whitespace().next())
        .collect();
    for verb in ["run", "list", "show", "log", "gc", "verify", "init"] {
        assert!(verbs.contains(&verb), "{verb} not in {verbs:?}");
    }
    for internal in ["worker", "exec-job", "compile-plugin"] {
        assert!(
            !verbs.contains(&internal),
            "{internal} shows in --help: {verbs:?}"
        );
    }
    // Hidden, not gone: SLURM allocations still call `repx worker`.
    repx(dir.path(), &["worker", "--help"]).expect_code(0);
}

#[test]
fn the_readme_quickstart_does_what_it_says() {
    let dir = TempDir::new();
    repx(dir.path(), &["init", "--template", "sweep", "my-lab"]).expect_code(0);
    let lab = dir.path().join("my-lab");
    let first = repx(&lab, &["run"]);
    first.expect_code(0);
    assert_eq!(first.ran().len(), 7, "{}", first.stderr);
    let results = repx(&lab, &["results"]);
    results.expect_code(0);
    assert_eq!(results.stdout.lines().count(), 8, "{}", results.stdout);
    let again = repx(&lab, &["run"]);
    again.expect_code(0);
    assert!(again.ran().is_empty(), "{}", again.stderr);
    assert!(again.summary().contains("7 cached"), "{}", again.stderr);

    let toml = fs::read_to_string(lab.join("repx.toml")).unwrap();
    let edited = toml.replace("slope = [1, 2, 5]", "slope = [1, 2, 5, 10]");
    assert_ne!(
        toml, edited,
        "the template's axis changed; update the README quickstart"
    );
    fs::write(lab.join("repx.toml"), edited).unwrap();
    let more = repx(&lab, &["run"]);
    more.expect_code(0);
    assert_eq!(more.ran(), ["combine", "point", "point"], "{}", more.stderr);

    let list = repx(&lab, &["list", "jobs"]);
    list.expect_code(0);
    assert_eq!(list.stdout.lines().count(), 9, "{}", list.stdout);
    repx(&lab, &["report"]).expect_code(0);
    assert!(lab.join("sweep-report.html").is_file());
}

#[test]
fn the_readme_installs_first_and_links_only_inside_the_repository() {
    let readme = fs::read_to_string(repo_root().join("README.md")).unwrap();
    let install = readme
        .find("cargo install --path host --locked")
        .expect("an install step");
    let quickstart = readme.find("## Quickstart").expect("a quickstart");
    let seed = readme.find("## The seed example").unwrap();
    assert!(
        install < quickstart && quickstart < seed,
        "install, then quickstart, right after the first commands"
    );
    assert!(!readme.contains("](../"), "a link leaves the repository");
    for link in [
        "docs/lab-reference.md",
        "docs/design.md",
        "docs/security.md",
    ] {
        assert!(
            readme.contains(&format!("]({link})")),
            "README does not link {link}"
        );
        assert!(repo_root().join(link).is_file(), "{link} is missing");
    }
}
