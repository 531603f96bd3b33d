//! The ACLs README.md documents ("Minimal ACL") grant every command the plugin sends: each
//! `redis.call`/`redis.pcall` of every Lua script (`skylark_core::acl::scripts`) under the
//! rules of every user that runs it, and the plain commands the plugin's source sends
//! (`cmd("X")`, transactions, pub/sub). And the rules have one source: testkit's
//! `node_acl`/`peer_acl` read README.md, and `runtimeclass/make-redis-secrets.sh` must
//! generate the same rules (plus the global store's extra commands).

use skylark_core::acl::{scripts, Runs, GLOBAL_COMMANDS, HANDSHAKE_COMMANDS, REMOTE_COMMANDS};
use skylark_testkit::secure::{node_acl, peer_acl, readme_acl, README_NAMESPACE};
use std::path::{Path, PathBuf};
use std::process::Command;

/// Commands that only name a group of subcommands, which ACL rules grant one by one
/// (`+memory|usage`): their first argument is part of the command's name.
const CONTAINERS: &[&str] = &["memory", "cluster", "client", "config", "object", "script"];

/// The commands (lower case, `name|sub` for a container) that `body` calls through
/// `redis.call` or `redis.pcall`, each once, in order. A call whose command is not a
/// string literal fails: the check could not see it.
fn lua_commands(name: &str, body: &str) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for call in ["redis.call(", "redis.pcall("] {
        for (at, _) in body.match_indices(call) {
            let rest = body[at + call.len()..].trim_start();
            let (first, rest) = literal(rest).unwrap_or_else(|| {
                panic!(
                    "{name}: {call} without a literal command name: {}",
                    head(rest)
                )
            });
            let mut command = first.to_ascii_lowercase();
            if CONTAINERS.contains(&command.as_str()) {
                let sub = rest
                    .trim_start()
                    .strip_prefix(',')
                    .and_then(|r| literal(r.trim_start()))
                    .unwrap_or_else(|| {
                        panic!(
                            "{name}: {command} without a literal subcommand: {}",
                            head(rest)
                        )
                    })
                    .0;
                command = format!("{command}|{}", sub.to_ascii_lowercase());
            }
            if !out.contains(&command) {
                out.push(command);
            }
        }
    }
    out
}

/// A Lua string literal in `'` or `"` at the start of `s`, and what follows it.
fn literal(s: &str) -> Option<(&str, &str)> {
    let quote = s.chars().next().filter(|c| *c == '\'' || *c == '"')?;
    let end = s[1..].find(quote)? + 1;
    Some((&s[1..end], &s[end + 1..]))
}

fn head(s: &str) -> &str {
    &s[..s.len().min(40)]
}

/// Whether the ACL `rules` let a user run `command` (`name` or `name|sub`), evaluated as
/// Redis does, left to right. Only `-@all`/`+@all` of the categories: another category
/// fails the check (it would need Redis's category tables).
fn granted(rules: &str, command: &str) -> bool {
    let name = command.split('|').next().unwrap_or(command);
    let mut allowed = false;
    for rule in rules.split_whitespace() {
        let (allow, what) = match (rule.strip_prefix('+'), rule.strip_prefix('-')) {
            (Some(what), _) => (true, what),
            (_, Some(what)) => (false, what),
            _ if rule == "allcommands" => (true, "@all"),
            _ if rule == "nocommands" => (false, "@all"),
            _ => continue,
        };
        if what == "@all" {
            allowed = allow;
        } else if what.starts_with('@') {
            panic!("ACL category {rule} in {rules:?}: the check knows only @all");
        } else if what == name || what == command {
            allowed = allow;
        }
    }
    allowed
}

/// The users (README.md name and rules) that run what runs on `runs`.
fn users(runs: Runs) -> Vec<(&'static str, String)> {
    let node = ("skylark (node)", node_acl(README_NAMESPACE));
    match runs {
        Runs::NodeLocal => vec![node],
        Runs::AnyStore => vec![node, ("tenant (peer)", peer_acl(README_NAMESPACE))],
    }
}

#[test]
fn the_checker_reads_scripts_and_rules_as_redis_does() {
    let lua = "local a = redis.call('HGET', k)\nredis.pcall( \"PUBLISH\", c)\n\
               redis.call('MEMORY', 'USAGE', k)\nredis.call('HGET', k2)";
    assert_eq!(
        lua_commands("t", lua),
        ["hget", "memory|usage", "publish"].map(String::from)
    );
    let rules = "resetkeys ~a:* -@all +hget +memory|usage +client -client|kill";
    assert!(granted(rules, "hget"));
    assert!(granted(rules, "memory|usage"));
    assert!(!granted(rules, "memory|doctor"));
    assert!(granted(rules, "client|setinfo"));
    assert!(!granted(rules, "client|kill"));
    assert!(!granted(rules, "hexists"));
    assert!(!granted("+hget -@all", "hget"));
}

#[test]
fn every_script_finds_its_commands() {
    for s in scripts() {
        assert!(
            !lua_commands(s.name, s.body).is_empty(),
            "{}: no redis.call found",
            s.name
        );
    }
}

#[test]
fn the_list_of_scripts_holds_every_command_the_source_calls_from_lua() {
    // A script missing from `skylark_core::acl::scripts` would go unchecked: every
    // command any Lua text in the plugin's source (without its unit tests) calls must be
    // called by a listed script.
    let listed: Vec<String> = scripts()
        .iter()
        .flat_map(|s| lua_commands(s.name, s.body))
        .collect();
    for file in source_files() {
        let text = std::fs::read_to_string(&file).expect("read a source file");
        let code = text.split("#[cfg(test)]").next().unwrap_or("");
        for command in lua_commands(&file.display().to_string(), code) {
            assert!(
                listed.contains(&command),
                "{}: Lua calling {command}, in no script of skylark_core::acl::scripts",
                file.display()
            );
        }
    }
}

#[test]
fn the_documented_acls_grant_every_command_of_every_script() {
    let mut refused = Vec::new();
    for s in scripts() {
        for command in lua_commands(s.name, s.body) {
            for (user, rules) in users(s.runs) {
                if !granted(&rules, &command) {
                    refused.push(format!("{} calls {command}: user {user}", s.name));
                }
            }
        }
    }
    assert!(
        refused.is_empty(),
        "README.md \"Minimal ACL\" refuses commands the plugin's scripts call:\n{}",
        refused.join("\n")
    );
}

/// Every `.rs` file under `dir`.
fn sources(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).expect("read the plugin's source directory") {
        let path = entry.expect("a directory entry").path();
        if path.is_dir() {
            sources(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The plugin's source files (`plugin/core/src`).
fn source_files() -> Vec<PathBuf> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../plugin/core/src");
    let mut files = Vec::new();
    sources(&root, &mut files);
    files
}

/// The plain commands the plugin's source (without its unit tests) sends: `cmd("X")`,
/// `"X".into()` of an argument list, a transaction's `MULTI`/`EXEC`, pub/sub.
fn plain_commands() -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    let mut add = |c: &str| {
        let c = c.to_ascii_lowercase();
        if !out.contains(&c) {
            out.push(c);
        }
    };
    for file in source_files() {
        let text = std::fs::read_to_string(&file).expect("read a source file");
        let code = text.split("#[cfg(test)]").next().unwrap_or("");
        for (open, close) in [("cmd(\"", "\")"), ("\"", "\".into()")] {
            for (at, _) in code.match_indices(open) {
                let rest = &code[at + open.len()..];
                let Some(end) = rest.find(close) else {
                    continue;
                };
                let word = &rest[..end];
                if word.len() >= 3 && word.bytes().all(|b| b.is_ascii_uppercase()) {
                    add(word);
                }
            }
        }
        if code.contains(".atomic()") {
            add("MULTI");
            add("EXEC");
        }
        for c in ["subscribe", "unsubscribe"] {
            if code.contains(&format!(".{c}(")) {
                add(c);
            }
        }
    }
    out.sort();
    out
}

#[test]
fn the_node_acl_grants_every_plain_command_and_the_peer_acl_the_remote_ones() {
    let found = plain_commands();
    for expected in [
        "ping",
        "eval",
        "evalsha",
        "multi",
        "hset",
        "watch",
        "subscribe",
    ] {
        assert!(
            found.iter().any(|c| c == expected),
            "{expected} not found in {found:?}"
        );
    }
    let node = node_acl(README_NAMESPACE);
    let peer = peer_acl(README_NAMESPACE);
    let mut refused = Vec::new();
    for c in &found {
        if !GLOBAL_COMMANDS.contains(&c.as_str())
            && !HANDSHAKE_COMMANDS.contains(&c.as_str())
            && !granted(&node, c)
        {
            refused.push(format!("{c}: user skylark (node)"));
        }
    }
    for c in REMOTE_COMMANDS {
        assert!(
            found.iter().any(|f| f == c),
            "REMOTE_COMMANDS names {c}, never sent"
        );
        if !granted(&peer, c) {
            refused.push(format!("{c}: user tenant (peer)"));
        }
    }
    assert!(
        refused.is_empty(),
        "README.md \"Minimal ACL\" refuses commands the plugin sends:\n{}",
        refused.join("\n")
    );
}

/// The rules after `user <name> on #<hash>` of `name`'s line in the ACL file `acl`.
fn acl_file_rules<'a>(acl: &'a str, name: &str) -> &'a str {
    let head = format!("user {name} on #");
    let line = acl
        .lines()
        .find_map(|l| l.strip_prefix(head.as_str()))
        .unwrap_or_else(|| panic!("no `{head}` line in\n{acl}"));
    line.split_once(' ').map_or("", |(_hash, rules)| rules)
}

#[test]
fn make_redis_secrets_generates_the_documented_rules() {
    let script =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../runtimeclass/make-redis-secrets.sh");
    let dir = tempfile::tempdir().expect("a temporary directory");
    let out = Command::new("bash")
        .arg(&script)
        .arg("--files")
        .arg(dir.path())
        .arg(README_NAMESPACE)
        .arg("other")
        .output()
        .expect("run bash");
    assert!(
        out.status.success(),
        "make-redis-secrets.sh failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let read = |p: &str| std::fs::read_to_string(dir.path().join(p)).expect("an ACL file");
    let (node, global) = (read("users.acl"), read("_global/users.acl"));
    let extra: Vec<String> = GLOBAL_COMMANDS.iter().map(|c| format!("+{c}")).collect();
    for ns in [README_NAMESPACE, "other"] {
        let user = format!("tenant-{ns}");
        assert_eq!(
            acl_file_rules(&node, &user),
            node_acl(ns),
            "{user} in users.acl"
        );
        assert_eq!(
            acl_file_rules(&global, &user),
            format!("{} {}", node_acl(ns), extra.join(" ")),
            "{user} in _global/users.acl"
        );
    }
    // The README's own line is the `skylark` namespace's.
    assert!(readme_acl("skylark").starts_with("resetkeys ~skylark:* "));
}
