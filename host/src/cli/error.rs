//! The CLI's error: what went wrong and which exit code it means.

use super::exit;

#[derive(Debug)]
pub enum CliError {
    /// The lab or the command line is wrong: exit 2.
    Invalid(anyhow::Error),
    /// Anything else that stopped the command: exit 1.
    Failed(anyhow::Error),
    /// The store could not be read or written: exit 3.
    Store(anyhow::Error),
}

impl CliError {
    pub fn exit_code(&self) -> i32 {
        match self {
            CliError::Invalid(_) => exit::INVALID,
            CliError::Failed(_) => exit::FAILED,
            CliError::Store(_) => exit::STORE,
        }
    }

    /// `error: ` and the error with its causes, each said once.
    pub fn render(&self) -> String {
        let error = match self {
            CliError::Invalid(e) | CliError::Failed(e) | CliError::Store(e) => e,
        };
        format!("error: {}", chain(error.chain().map(|e| e.to_string())))
    }
}

/// An error's messages, outermost first, joined by `: `, leaving out a cause that the
/// message before it already ends with: most errors below the CLI say their source in
/// their own message too (`store X: Read-only file system (os error 30)`), and anyhow's
/// `{:#}` would say it again.
fn chain(messages: impl Iterator<Item = String>) -> String {
    let mut text = String::new();
    let mut last = String::new();
    for message in messages {
        if !last.ends_with(&message) {
            if !text.is_empty() {
                text.push_str(": ");
            }
            text.push_str(&message);
        }
        last = message;
    }
    text
}

/// Shorthand for an invalid-input error.
pub fn invalid(message: impl std::fmt::Display) -> CliError {
    CliError::Invalid(anyhow::anyhow!("{message}"))
}

impl From<crate::lab::LabError> for CliError {
    fn from(e: crate::lab::LabError) -> CliError {
        CliError::Invalid(e.into())
    }
}

/// Nix absent or unfit for hermetic jobs: nothing can run until the setup is fixed.
impl From<crate::nix::NixError> for CliError {
    fn from(e: crate::nix::NixError) -> CliError {
        CliError::Invalid(e.into())
    }
}

impl From<crate::store::StoreError> for CliError {
    fn from(e: crate::store::StoreError) -> CliError {
        use crate::store::StoreError;
        match e {
            StoreError::Io { .. } => CliError::Store(e.into()),
            StoreError::Locked {
                path,
                holder: Some(holder),
            } => CliError::Failed(anyhow::anyhow!(
                "store {} is in use by repx process {} (`{}`, holding it since {}); wait for \
                 it to finish, or use another --store",
                path.display(),
                holder.pid,
                holder.command.escape_debug(),
                super::show_job::when(holder.since_ms),
            )),
            e => CliError::Failed(e.into()),
        }
    }
}

impl From<crate::plan::PlanError> for CliError {
    fn from(e: crate::plan::PlanError) -> CliError {
        CliError::Invalid(e.into())
    }
}

impl From<crate::wasm::RuntimeError> for CliError {
    fn from(e: crate::wasm::RuntimeError) -> CliError {
        CliError::Failed(e.into())
    }
}

impl From<std::io::Error> for CliError {
    fn from(e: std::io::Error) -> CliError {
        CliError::Failed(e.into())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cause_is_said_once() {
        let os = std::io::Error::from_raw_os_error(30);
        let store = crate::store::StoreError::Io {
            path: "/s".into(),
            source: os,
        };
        let rendered = CliError::from(store).render();
        assert_eq!(
            rendered,
            "error: store /s: Read-only file system (os error 30)"
        );
        let wrapped =
            anyhow::Error::from(std::io::Error::from_raw_os_error(28)).context("writing x");
        assert_eq!(
            CliError::Failed(wrapped).render(),
            "error: writing x: No space left on device (os error 28)"
        );
    }
}
