//! Secrets: passwords (never printed), the credentials read from `SKYLARK_*_USERNAME`,
//! `_PASSWORD` and `_PASSWORD_FILE`, and the redaction of passwords in URLs for messages.

use super::error::ConfigError;
use super::vars::{Lookup, Var};
use std::fmt;

/// A password. Never printed: its `Debug` form is `***`.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(s: impl Into<String>) -> Secret {
        Secret(s.into())
    }

    /// The secret itself, for handing to the Redis client only.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

/// A user name and password for Redis `AUTH`, applied to a store whose URL carries none.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Credentials {
    /// ACL user; `None` authenticates as the `default` user.
    pub username: Option<String>,
    /// `None`: no `AUTH` at all.
    pub password: Option<Secret>,
    /// The variables these came from, for messages (`""` when there are none).
    pub source: String,
}

/// Reads a user name, password and password file variable (`SKYLARK_REDIS_*` or
/// `SKYLARK_GLOBAL_*`); `None`
/// when none of them is set. Messages name the variables and files, never the password.
pub(super) fn read_credentials(
    var: Lookup<'_>,
    [user, pass, file]: [&Var; 3],
) -> Result<Option<Credentials>, ConfigError> {
    let (user_var, pass_var, file_var) = (
        user.name.to_string(),
        pass.name.to_string(),
        file.name.to_string(),
    );
    let (username, password, file) = (var(&user_var), var(&pass_var), var(&file_var));
    if username.is_none() && password.is_none() && file.is_none() {
        return Ok(None);
    }
    if let Some(u) = &username {
        if u.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err(ConfigError::value(
                &user_var,
                format!("{user_var} {u:?} contains whitespace or control characters"),
            ));
        }
    }
    let (password, from) = match (password, file) {
        (Some(_), Some(_)) => {
            return Err(ConfigError::conflict(
                &pass_var,
                &file_var,
                format!("{pass_var} and {file_var} are both set: set only one"),
            ))
        }
        (Some(p), None) => (p, pass_var),
        (None, Some(path)) => (read_password(&file_var, &path)?, file_var),
        (None, None) => {
            return Err(ConfigError::conflict(
                &user_var,
                &pass_var,
                format!(
                "{user_var} is set without {pass_var} or {file_var}: an ACL user needs a password"
            ),
            ))
        }
    };
    let source = match &username {
        Some(_) => format!("{user_var}, {from}"),
        None => from,
    };
    Ok(Some(Credentials {
        username,
        password: Some(Secret(password)),
        source,
    }))
}

/// The password in file `path` (named by variable `name`), without its trailing newline.
fn read_password(name: &str, path: &str) -> Result<String, ConfigError> {
    let fail = |what: String| ConfigError::file(name, path, what);
    let bytes =
        std::fs::read(path).map_err(|e| fail(format!("{name} {path:?}: cannot read: {e}")))?;
    let text =
        String::from_utf8(bytes).map_err(|_| fail(format!("{name} {path:?} is not UTF-8 text")))?;
    let password = text.trim_end_matches(['\r', '\n']);
    if password.is_empty() {
        return Err(fail(format!("{name} {path:?} is empty")));
    }
    if password.contains(['\r', '\n']) {
        return Err(fail(format!(
            "{name} {path:?} holds more than one line (expected the password alone)"
        )));
    }
    Ok(password.to_string())
}

/// The URL with any password replaced by `***`, for messages and logs.
pub fn redact(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_string();
    };
    let (authority, path) = match rest.find('/') {
        Some(i) => rest.split_at(i),
        None => (rest, ""),
    };
    let Some((userinfo, host)) = authority.rsplit_once('@') else {
        let redacted_path = redact_query_password(path);
        return format!("{scheme}://{authority}{redacted_path}");
    };
    let user = userinfo.split_once(':').map(|(u, _)| u).unwrap_or(userinfo);
    let redacted_path = redact_query_password(path);
    if userinfo.contains(':') {
        format!("{scheme}://{user}:***@{host}{redacted_path}")
    } else {
        format!("{scheme}://{userinfo}@{host}{redacted_path}")
    }
}

fn redact_query_password(path: &str) -> String {
    let Some((base, query)) = path.split_once('?') else {
        return path.to_string();
    };
    let parts: Vec<String> = query
        .split('&')
        .map(|kv| match kv.split_once('=') {
            Some((k, _))
                if k.eq_ignore_ascii_case("pass") || k.eq_ignore_ascii_case("password") =>
            {
                format!("{k}=***")
            }
            _ => kv.to_string(),
        })
        .collect();
    format!("{base}?{}", parts.join("&"))
}

#[cfg(test)]
mod tests {
    use super::super::fixtures::*;
    use super::*;

    #[test]
    fn reads_credentials_from_variables_and_files() {
        let c = cfg(&[("SKYLARK_REDIS_PASSWORD", "s3cret")]).unwrap();
        assert_eq!(c.credentials.username, None);
        assert_eq!(c.credentials.password, Some(Secret::new("s3cret")));
        assert_eq!(c.credentials.source, "SKYLARK_REDIS_PASSWORD");
        // The global store falls back to the node-wide credentials.
        assert_eq!(c.global_credentials, c.credentials);

        let file = TempFile::new("pw", b"from-file\n");
        let c = cfg(&[
            ("SKYLARK_REDIS_USERNAME", "skylark"),
            ("SKYLARK_REDIS_PASSWORD_FILE", file.path()),
            ("SKYLARK_GLOBAL_USERNAME", "tenant"),
            ("SKYLARK_GLOBAL_PASSWORD", "cloud"),
        ])
        .unwrap();
        assert_eq!(c.credentials.username.as_deref(), Some("skylark"));
        assert_eq!(c.credentials.password, Some(Secret::new("from-file")));
        assert_eq!(
            c.credentials.source,
            "SKYLARK_REDIS_USERNAME, SKYLARK_REDIS_PASSWORD_FILE"
        );
        assert_eq!(c.global_credentials.username.as_deref(), Some("tenant"));
        assert_eq!(c.global_credentials.password, Some(Secret::new("cloud")));

        // CRLF is trimmed too; inner spaces are part of the password.
        let file = TempFile::new("pw", b"with space\r\n");
        let c = cfg(&[("SKYLARK_GLOBAL_PASSWORD_FILE", file.path())]).unwrap();
        assert_eq!(
            c.global_credentials.password,
            Some(Secret::new("with space"))
        );
        assert_eq!(c.credentials, Credentials::default());
    }

    #[test]
    fn rejects_bad_credentials_without_showing_them() {
        let empty = TempFile::new("pw", b"\n");
        let lines = TempFile::new("pw", b"pw-one\npw-two\n");
        let binary = TempFile::new("pw", b"\xff\xfe");
        let missing = "/nonexistent/skylark/password";
        let cases: Vec<(Vec<(&str, &str)>, &str)> = vec![
            (
                vec![
                    ("SKYLARK_REDIS_PASSWORD", "pw-env"),
                    ("SKYLARK_REDIS_PASSWORD_FILE", empty.path()),
                ],
                "SKYLARK_REDIS_PASSWORD and SKYLARK_REDIS_PASSWORD_FILE are both set",
            ),
            (
                vec![("SKYLARK_REDIS_USERNAME", "skylark")],
                "SKYLARK_REDIS_USERNAME is set without",
            ),
            (
                vec![
                    ("SKYLARK_REDIS_USERNAME", "sky lark"),
                    ("SKYLARK_REDIS_PASSWORD", "pw-env"),
                ],
                "SKYLARK_REDIS_USERNAME",
            ),
            (
                vec![("SKYLARK_REDIS_PASSWORD_FILE", missing)],
                "SKYLARK_REDIS_PASSWORD_FILE \"/nonexistent/skylark/password\": cannot read",
            ),
            (
                vec![("SKYLARK_REDIS_PASSWORD_FILE", empty.path())],
                "is empty",
            ),
            (
                vec![("SKYLARK_GLOBAL_PASSWORD_FILE", lines.path())],
                "SKYLARK_GLOBAL_PASSWORD_FILE",
            ),
            (
                vec![("SKYLARK_REDIS_PASSWORD_FILE", binary.path())],
                "not UTF-8",
            ),
            (
                vec![("SKYLARK_GLOBAL_USERNAME", "tenant")],
                "SKYLARK_GLOBAL_USERNAME is set without",
            ),
        ];
        for (env, expect) in cases {
            let err = cfg(&env).unwrap_err();
            assert!(err.contains(expect), "{env:?}: {err}");
            assert!(!err.contains("pw-"), "{env:?}: secret in {err}");
        }
    }

    #[test]
    fn debug_output_shows_no_secret() {
        let c = cfg(&[
            ("SKYLARK_REDIS_URL", "redis://user:url-secret@10.0.0.1:6379"),
            ("SKYLARK_GLOBAL_URL", "rediss://:global-secret@cloud:6380"),
            (
                "SKYLARK_NODE_ADDRS",
                "n1=redis://:node-secret@10.0.0.2:6379",
            ),
            ("SKYLARK_REDIS_PASSWORD", "env-secret"),
        ])
        .unwrap();
        let shown = format!("{c:?}");
        for secret in ["url-secret", "global-secret", "node-secret", "env-secret"] {
            assert!(!shown.contains(secret), "{secret} in {shown}");
        }
        assert!(shown.contains("redis://user:***@10.0.0.1:6379"), "{shown}");
        // The URL itself is intact for connecting.
        assert_eq!(
            c.redis_url.as_str(),
            "redis://user:url-secret@10.0.0.1:6379"
        );
    }

    #[test]
    fn redacts_passwords() {
        assert_eq!(
            redact("redis://user:secret@host:6379/0"),
            "redis://user:***@host:6379/0"
        );
        assert_eq!(redact("redis://:secret@host"), "redis://:***@host");
        assert_eq!(
            redact("redis+unix:///s.sock?pass=secret&db=1"),
            "redis+unix:///s.sock?pass=***&db=1"
        );
        assert_eq!(redact("redis://host:1"), "redis://host:1");
    }
}
