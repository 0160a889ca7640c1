//! The CLI's error: what went wrong and which exit code it means.

use super::exit;

#[derive(Debug)]
pub enum CliError {
    /// The lab or the command line is wrong: exit 2.
    Invalid(anyhow::Error),
    /// Anything else that stopped the command: exit 1.
    Failed(anyhow::Error),
}

impl CliError {
    pub fn exit_code(&self) -> i32 {
        match self {
            CliError::Invalid(_) => exit::INVALID,
            CliError::Failed(_) => exit::FAILED,
        }
    }

    pub fn render(&self) -> String {
        let error = match self {
            CliError::Invalid(e) | CliError::Failed(e) => e,
        };
        format!("error: {error:#}")
    }
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
        CliError::Failed(e.into())
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
