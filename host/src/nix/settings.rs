//! Which Nix settings a run may pass to the builds of its hermetic jobs.
//!
//! A hermetic output promises that it was built in the Nix sandbox from its inputs alone,
//! and Nix trusts a valid output for every later build of the same derivation. So the
//! settings a run adds (`--nix-option NAME=VALUE`, and the lines of `NIX_CONFIG`) are held
//! to an allowlist of settings that change how much and when Nix builds or fetches, never
//! what a build sees nor which outputs Nix takes as valid. It follows what the Nix daemon
//! lets a user it does not trust set, and refuses the rest (`sandbox=false`,
//! `extra-sandbox-paths`, hooks, remote builders, signing keys, `require-sigs=false`…):
//! such settings are the machine's choice and belong in its `nix.conf`.
//!
//! This is one of three guards: the effective configuration, with these settings applied,
//! must build in the sandbox (see [`super::Nix::new`]), and the builder refuses to run
//! anywhere else (see [`super::sandboxed`]), so an output built outside a sandbox never
//! exists under a repx derivation, whatever the configuration.

use serde::{Deserialize, Serialize};

/// What a run asked of Nix, passed on to the SLURM workers that build its hermetic jobs.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Settings {
    /// `--nix-option NAME=VALUE`, in order; each one allowed by [`check`].
    pub options: Vec<(String, String)>,
    /// `--publish-private-inputs`: add to the Nix store, where every local user can read
    /// them, inputs that other users cannot read where they are.
    #[serde(default)]
    pub publish_private: bool,
}

/// Settings a run may pass, with the one value it may give when only one is safe.
const ALLOWED: &[(&str, Option<&str>)] = &[
    ("max-jobs", None),
    ("cores", None),
    ("keep-going", None),
    ("keep-failed", None),
    ("fallback", None),
    ("max-silent-time", None),
    ("timeout", None),
    ("build-timeout", None),
    ("connect-timeout", None),
    ("stalled-download-timeout", None),
    ("download-attempts", None),
    ("http-connections", None),
    ("log-lines", None),
    // Substituted outputs must still be signed by a key the machine's nix.conf trusts.
    ("substitute", None),
    ("substituters", None),
    ("extra-substituters", None),
    ("narinfo-cache-negative-ttl", None),
    ("narinfo-cache-positive-ttl", None),
    // Only ways of saying what hermetic mode needs anyway.
    ("builders", Some("")),
    ("require-sigs", Some("true")),
    ("sandbox", Some("true")),
    ("sandbox-fallback", Some("false")),
];

/// A setting refused: where it was given, and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "{given}: hermetic jobs take no per-run Nix setting that could weaken the sandbox or what \
     Nix trusts ({why}); a run may set only {allowed}. A setting this machine should always \
     have (remote builders, signing keys) belongs in /etc/nix/nix.conf",
    allowed = allowed_list()
)]
pub struct Refused {
    /// `--nix-option NAME=VALUE`, or `NIX_CONFIG: NAME = VALUE`.
    pub given: String,
    pub why: String,
}

fn allowed_list() -> String {
    ALLOWED
        .iter()
        .map(|(name, only)| match only {
            Some(value) => format!("{name}={value}"),
            None => name.to_string(),
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// Checks one setting `name` = `value`, given as `given` (for the message).
pub fn check(name: &str, value: &str, given: &str) -> Result<(), Refused> {
    let refused = |why: String| Refused {
        given: given.to_string(),
        why,
    };
    match ALLOWED.iter().find(|(allowed, _)| *allowed == name) {
        None => Err(refused(format!(
            "`{name}` is not one of the settings known to leave builds as they are"
        ))),
        Some((_, Some(only))) if value.trim() != *only => Err(refused(format!(
            "`{name}` may only be `{only}` here, not `{}`",
            value.trim()
        ))),
        Some(_) => Ok(()),
    }
}

/// Checks every setting of a `NIX_CONFIG` value (nix.conf syntax: `NAME = VALUE` lines,
/// `#` comments); an `include` would bring in settings unseen, so it is refused too.
pub fn check_nix_config(text: &str) -> Result<(), Refused> {
    for line in text.lines() {
        let line = line.split('#').next().unwrap_or("").trim();
        if line.is_empty() {
            continue;
        }
        let given = format!("NIX_CONFIG: {line}");
        match line.split_once('=') {
            Some((name, value)) => check(name.trim(), value, &given)?,
            None => {
                return Err(Refused {
                    given,
                    why: "an include or a line that is not `NAME = VALUE`".into(),
                });
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn isolation_and_trust_are_refused_throughput_is_not() {
        for (name, value) in [
            ("sandbox", "false"),
            ("sandbox", "relaxed"),
            ("sandbox-fallback", "true"),
            ("extra-sandbox-paths", "/etc"),
            ("sandbox-paths", "/bin/sh=/bin/sh /etc"),
            ("build-users-group", ""),
            ("allowed-impure-host-deps", "/usr"),
            ("pre-build-hook", "/tmp/hook"),
            ("post-build-hook", "/tmp/hook"),
            ("builders", "ssh://elsewhere x86_64-linux"),
            ("require-sigs", "false"),
            ("trusted-public-keys", "mine:AAAA"),
            ("trusted-substituters", "file:///tmp/cache"),
            ("diff-hook", "/tmp/hook"),
            ("experimental-features", "flakes"),
        ] {
            let err = check(name, value, "x").unwrap_err();
            assert!(err.why.contains(name), "{err}");
        }
        for (name, value) in [
            ("max-jobs", "0"),
            ("cores", "2"),
            ("substituters", "https://cache.example"),
            ("builders", ""),
            ("sandbox", "true"),
            ("require-sigs", " true"),
        ] {
            check(name, value, "x").unwrap();
        }
    }

    #[test]
    fn nix_config_lines_are_checked_one_by_one() {
        check_nix_config("# a comment\nmax-jobs = 4\n\ncores = 2 # two\n").unwrap();
        let err = check_nix_config("max-jobs = 4\nsandbox = false\n").unwrap_err();
        assert_eq!(err.given, "NIX_CONFIG: sandbox = false");
        assert!(check_nix_config("include /tmp/other.conf").is_err());
    }
}
