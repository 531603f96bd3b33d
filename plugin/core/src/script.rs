//! Lua scripts called by their SHA-1 (`EVALSHA`), so that a request carries the script's
//! 40-character digest instead of its text (the put's guard and undo scripts are about
//! 1.4 KB together, more than a 1 KiB value).
//!
//! Redis keeps every script it has run (`EVAL`) in a cache a `SCRIPT FLUSH`, a restart or
//! a failover empties. A request by digest that meets an empty cache (`NOSCRIPT`) is sent
//! again with the script's text ([`with_bodies`]), which also puts the script back in the
//! cache; an ACL user that may not run `EVALSHA` (`NOPERM`) gets the text from then on
//! (`Store`). Both are safe only for a request that is one command, or a pipeline that may
//! run again as a whole: a transaction (`MULTI`) never calls a script by digest, since a
//! `NOSCRIPT` inside `EXEC` fails that command alone and the commands after it would run
//! unguarded (see `write`, which makes a small put one script instead).

use crate::store::Request;
use redis::RedisError;
use std::collections::HashMap;
use std::sync::{Mutex, OnceLock};

/// A Lua script and its digest (computed on first use).
pub struct Script {
    body: &'static str,
    sha: OnceLock<String>,
}

/// Every script whose digest was computed, by digest: what [`with_bodies`] sends instead.
fn known() -> &'static Mutex<HashMap<String, &'static str>> {
    static KNOWN: OnceLock<Mutex<HashMap<String, &'static str>>> = OnceLock::new();
    KNOWN.get_or_init(|| Mutex::new(HashMap::new()))
}

impl Script {
    pub const fn new(body: &'static str) -> Script {
        Script {
            body,
            sha: OnceLock::new(),
        }
    }

    /// The script's text.
    pub fn body(&self) -> &'static str {
        self.body
    }

    /// The script's SHA-1 in lower-case hex, as Redis names it.
    pub fn sha(&self) -> &str {
        self.sha.get_or_init(|| {
            let sha = sha1_hex(self.body);
            known()
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner())
                .insert(sha.clone(), self.body);
            sha
        })
    }

    /// `EVALSHA <sha>`, to which the caller adds the key count, keys and arguments.
    pub fn cmd(&self) -> redis::Cmd {
        let mut cmd = redis::cmd("EVALSHA");
        cmd.arg(self.sha());
        cmd
    }

    /// [`Script::cmd`] for a request whose arguments carry `payload` bytes, unless they
    /// are at least [`TEXT_FROM_BYTES`]: then `EVAL <text>`, because a `NOSCRIPT` would
    /// send the payload a second time (a first 5 MB copy to a store took two transfers)
    /// while the text costs a few percent at most.
    pub fn cmd_for(&self, payload: usize) -> redis::Cmd {
        if payload < TEXT_FROM_BYTES {
            return self.cmd();
        }
        let mut cmd = redis::cmd("EVAL");
        cmd.arg(self.body);
        cmd
    }
}

/// Requests carrying at least this many bytes of arguments send the script's text
/// ([`Script::cmd_for`]).
pub const TEXT_FROM_BYTES: usize = 64 << 10;

/// SHA-1 of `body` in lower-case hex.
fn sha1_hex(body: &str) -> String {
    let digest = ring::digest::digest(&ring::digest::SHA1_FOR_LEGACY_USE_ONLY, body.as_bytes());
    digest.as_ref().iter().map(|b| format!("{b:02x}")).collect()
}

/// The text of the script with digest `sha`, if this process computed it.
fn body_of(sha: &[u8]) -> Option<&'static str> {
    let sha = std::str::from_utf8(sha).ok()?;
    known()
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
        .get(sha)
        .copied()
}

/// Whether a reply says the server's script cache lacks the script (`NOSCRIPT`; in a
/// pipeline's error only in the text).
pub fn is_noscript(e: &RedisError) -> bool {
    e.code() == Some("NOSCRIPT") || e.to_string().contains("NOSCRIPT")
}

/// Whether a reply says the ACL user may not run `EVALSHA` (`NOPERM ... 'evalsha'`).
pub fn is_evalsha_denied(e: &RedisError) -> bool {
    let text = e.to_string();
    (e.code() == Some("NOPERM") || text.contains("NOPERM")) && text.contains("evalsha")
}

/// Whether `e` calls for sending the request again with the scripts' text.
pub fn needs_body(e: &RedisError) -> bool {
    is_noscript(e) || is_evalsha_denied(e)
}

/// `cmd` with `EVALSHA <sha>` replaced by `EVAL <text>`; `None` if it is no `EVALSHA` of
/// a script this process knows.
pub fn cmd_with_body(cmd: &redis::Cmd) -> Option<redis::Cmd> {
    let args: Vec<&[u8]> = cmd
        .args_iter()
        .map(|a| match a {
            redis::Arg::Simple(b) => Some(b),
            _ => None,
        })
        .collect::<Option<_>>()?;
    let [name, sha, rest @ ..] = args.as_slice() else {
        return None;
    };
    if !name.eq_ignore_ascii_case(b"EVALSHA") {
        return None;
    }
    let mut eval = redis::cmd("EVAL");
    eval.arg(body_of(sha)?);
    for a in rest {
        eval.arg(*a);
    }
    Some(eval)
}

/// `cmd` as it may go in a transaction (`MULTI`): with its script's text if it calls a
/// script by digest (see the module docs).
pub fn in_transaction(cmd: redis::Cmd) -> redis::Cmd {
    cmd_with_body(&cmd).unwrap_or(cmd)
}

/// `request` (one command) with its script's text instead of its digest; `None` for a
/// pipeline or a command that is no `EVALSHA` of a known script.
pub fn with_bodies(request: &Request) -> Option<Request> {
    match request {
        Request::Cmd(c) => cmd_with_body(c).map(Request::Cmd),
        Request::Pipe(_) => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    static RETURN_ONE: Script = Script::new("return 1");

    #[test]
    fn the_digest_is_redis_s() {
        // `redis-cli SCRIPT LOAD "return 1"`.
        assert_eq!(RETURN_ONE.sha(), "e0e1f9fabfc9d4800c877a703b823ac0578ff8db");
    }

    #[test]
    fn a_large_request_goes_with_the_text() {
        let first = |cmd: redis::Cmd| -> Vec<Vec<u8>> {
            cmd.args_iter()
                .take(2)
                .filter_map(|a| match a {
                    redis::Arg::Simple(b) => Some(b.to_vec()),
                    _ => None,
                })
                .collect()
        };
        assert_eq!(
            first(RETURN_ONE.cmd_for(TEXT_FROM_BYTES - 1)),
            vec![b"EVALSHA".to_vec(), RETURN_ONE.sha().as_bytes().to_vec()]
        );
        assert_eq!(
            first(RETURN_ONE.cmd_for(TEXT_FROM_BYTES)),
            vec![b"EVAL".to_vec(), b"return 1".to_vec()]
        );
    }

    #[test]
    fn a_command_by_digest_gets_its_text_back() {
        let mut cmd = RETURN_ONE.cmd();
        cmd.arg(1).arg("k").arg(b"v\0".as_slice());
        let Some(Request::Cmd(eval)) = with_bodies(&Request::Cmd(cmd)) else {
            panic!("an EVALSHA of a known script");
        };
        let mut expected = redis::cmd("EVAL");
        expected
            .arg("return 1")
            .arg(1)
            .arg("k")
            .arg(b"v\0".as_slice());
        assert_eq!(eval.get_packed_command(), expected.get_packed_command());
        // Not a script by digest, or an unknown digest: nothing to replace.
        assert!(with_bodies(&Request::Cmd(redis::cmd("PING"))).is_none());
        let mut unknown = redis::cmd("EVALSHA");
        unknown.arg("0".repeat(40)).arg(0);
        assert!(with_bodies(&Request::Cmd(unknown)).is_none());
        assert!(with_bodies(&Request::Pipe(redis::pipe())).is_none());
        // In a transaction: the text.
        let mut cmd = RETURN_ONE.cmd();
        cmd.arg(0);
        let mut expected = redis::cmd("EVAL");
        expected.arg("return 1").arg(0);
        assert_eq!(
            in_transaction(cmd).get_packed_command(),
            expected.get_packed_command()
        );
    }
}
