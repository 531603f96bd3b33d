//! The error of reading the configuration: which variable (and file) is at fault, of
//! what kind, with a message that never shows a secret.

use std::fmt;

/// Why the configuration is invalid. Every message names the variable (and file) at
/// fault and never shows a secret.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConfigError {
    /// A variable holds a value it does not accept.
    Value { var: String, message: String },
    /// A file a variable names cannot be read or does not hold what it should.
    File {
        var: String,
        path: String,
        message: String,
    },
    /// Two variables that go together are set inconsistently (both, or one without the
    /// other, or files that do not match).
    Conflict {
        vars: (String, String),
        message: String,
    },
}

impl ConfigError {
    pub(super) fn value(var: &str, message: String) -> ConfigError {
        ConfigError::Value {
            var: var.to_string(),
            message,
        }
    }

    pub(super) fn file(var: &str, path: &str, message: String) -> ConfigError {
        ConfigError::File {
            var: var.to_string(),
            path: path.to_string(),
            message,
        }
    }

    pub(super) fn conflict(a: &str, b: &str, message: String) -> ConfigError {
        ConfigError::Conflict {
            vars: (a.to_string(), b.to_string()),
            message,
        }
    }

    /// The variable at fault (the first of a conflicting pair).
    pub fn var(&self) -> &str {
        match self {
            ConfigError::Value { var, .. } | ConfigError::File { var, .. } => var,
            ConfigError::Conflict { vars, .. } => &vars.0,
        }
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ConfigError::Value { message, .. }
            | ConfigError::File { message, .. }
            | ConfigError::Conflict { message, .. } => f.write_str(message),
        }
    }
}

impl std::error::Error for ConfigError {}
