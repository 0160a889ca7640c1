//! Output hygiene: what a plugin or a lab controls reaches a terminal, a CSV file or the
//! report page only escaped, files the CLI writes never follow a link planted where they
//! go, and names given on the command line are checked as the lab's are.

use crate::attack_lab;
use crate::common::repx;

#[test]
fn ad_hoc_input_names_are_checked_as_lab_input_names() {
    let lab = attack_lab("", &["generate"]);
    let before = crate::HostState::of(lab.path());
    for depth in 1..=6 {
        let spec = format!("{}PWNED-input-{depth}=data", "../".repeat(depth));
        let out = repx(
            lab.path(),
            &["run", "--plugin", "plugins/generate.wasm", "--input", &spec],
        );
        out.expect_code(2)
            .expect_stderr(&[&format!("--input {spec}"), "is not a valid input name"]);
    }
    for bad in ["", ".", "..", "a/b", "/abs", "new\nline"] {
        let spec = format!("{bad}=data");
        repx(
            lab.path(),
            &["run", "--plugin", "plugins/generate.wasm", "--input", &spec],
        )
        .expect_code(2)
        .expect_stderr(&["is not a valid input name"]);
    }
    // Nothing was made anywhere, not even a store.
    assert!(!lab.path().join(".repx").exists());
    crate::assert_untouched(lab.path(), &before);
    // A good name still works.
    repx(
        lab.path(),
        &[
            "run",
            "--plugin",
            "plugins/generate.wasm",
            "--input",
            "data.v2=data",
        ],
    )
    .expect_code(0);
}
