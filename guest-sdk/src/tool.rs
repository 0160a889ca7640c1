//! Running external tools granted to the stage.

use crate::Result;
use crate::bindings::repx::stage::host::{self, ToolRequest};

/// A command to run through the host: a granted tool, or an executable from an input.
#[derive(Clone, Debug)]
pub struct Tool {
    request: ToolRequest,
}

impl Tool {
    /// A granted tool by name (`make`), or the guest path of an executable in an input.
    pub fn new(tool: impl Into<String>) -> Tool {
        Tool {
            request: ToolRequest {
                tool: tool.into(),
                args: Vec::new(),
                cwd: String::from("/tmp"),
                env: Vec::new(),
                stdout_file: None,
            },
        }
    }

    /// Appends one argument.
    pub fn arg(mut self, arg: impl Into<String>) -> Tool {
        self.request.args.push(arg.into());
        self
    }

    /// Appends arguments.
    pub fn args<I, S>(mut self, args: I) -> Tool
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.request.args.extend(args.into_iter().map(Into::into));
        self
    }

    /// The working directory, a guest path inside a directory the plugin was given.
    pub fn cwd(mut self, cwd: impl Into<String>) -> Tool {
        self.request.cwd = cwd.into();
        self
    }

    /// Sets one environment variable.
    pub fn env(mut self, key: impl Into<String>, value: impl Into<String>) -> Tool {
        self.request.env.push((key.into(), value.into()));
        self
    }

    /// Sends the command's stdout to a file (a guest path in a writable directory).
    pub fn stdout_file(mut self, path: impl Into<String>) -> Tool {
        self.request.stdout_file = Some(path.into());
        self
    }

    /// Runs the command and returns its exit status.
    pub fn status(&self) -> Result<i32> {
        Ok(host::run_tool(&self.request)?)
    }

    /// Runs the command; a non-zero exit status is an error naming the tool.
    pub fn run(&self) -> Result<()> {
        match self.status()? {
            0 => Ok(()),
            code => Err(format!("`{}` exited with status {code}", self.request.tool).into()),
        }
    }
}
