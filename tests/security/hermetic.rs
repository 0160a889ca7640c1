//! The same attacks in hermetic mode, built by Nix in its sandbox: each is refused exactly
//! as in pure mode (the attack's `result.txt`, every attempt and how it ended, is the same
//! file byte for byte), and the host around the lab is untouched.

use std::fs;

use crate::common::{repx_with_env, static_repx};
use crate::{HostState, assert_untouched, one_attack, output_of, refusals, run_attack};

/// Runs the attack pure, then hermetic on the same lab from an empty store; returns the
/// two `result.txt`.
fn pure_and_hermetic(plugin: &str, params: &str) -> (String, String) {
    let lab = one_attack(plugin, params);
    let pure = run_attack(&lab, &["--pure"]);
    pure.expect_code(0);
    refusals(lab.path(), &pure, "attack");
    let pure_result =
        fs::read_to_string(output_of(lab.path(), "attack").join("result.txt")).unwrap();
    crate::common::remove_tree(&crate::common::default_store(lab.path()));

    let before = HostState::of(lab.path());
    let builder = static_repx();
    let hermetic = repx_with_env(
        lab.path(),
        &["run", "--continue-on-failure", "--hermetic"],
        &[("REPX_NIX_BUILDER", builder.to_str().unwrap())],
    );
    assert_untouched(lab.path(), &before);
    hermetic.expect_code(0);
    refusals(lab.path(), &hermetic, "attack");
    let record = fs::read_to_string(lab.path().join(".repx/records.jsonl")).unwrap();
    assert!(record.contains("\"mode\":\"hermetic\""), "{record}");
    let hermetic_result =
        fs::read_to_string(output_of(lab.path(), "attack").join("result.txt")).unwrap();
    (pure_result, hermetic_result)
}

#[test]
fn read_outside_the_inputs_is_refused_as_in_pure_mode() {
    let (pure, hermetic) = pure_and_hermetic("traverse-dotdot", "");
    assert!(pure.lines().filter(|l| l.starts_with("refused ")).count() > 250);
    assert_eq!(hermetic, pure);
}

#[test]
fn absolute_paths_are_refused_as_in_pure_mode() {
    let (pure, hermetic) = pure_and_hermetic("traverse-absolute", r#"host_dir = "{lab}""#);
    assert!(pure.contains("refused read /etc/passwd"), "{pure}");
    assert_eq!(hermetic, pure);
}

#[test]
fn writing_into_the_inputs_is_refused_as_in_pure_mode() {
    let (pure, hermetic) = pure_and_hermetic("write-in-input", "");
    assert!(
        pure.contains("refused overwrite /in/data/file.txt"),
        "{pure}"
    );
    assert_eq!(hermetic, pure);
}
