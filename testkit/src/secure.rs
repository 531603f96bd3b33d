//! Redis servers that want credentials or TLS, for the AUTH/ACL/TLS system tests: a
//! throw-away public key infrastructure made with the `openssl` CLI (a CA, a server
//! certificate for `127.0.0.1` and `localhost`, a client certificate, and an unrelated
//! second CA), and `redis-server` processes configured with `requirepass`, ACL users and
//! a TLS-only port.

use crate::redis::{Redis, ServerConfig};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

/// Certificates and keys (PEM) in a temporary directory that lives as long as this value.
pub struct Pki {
    dir: tempfile::TempDir,
}

fn openssl(dir: &Path, args: &[&str]) {
    let out = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("openssl not found: install it (apt-get install openssl)");
    assert!(
        out.status.success(),
        "openssl {} failed ({:?}):\n{}",
        args.join(" "),
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
}

/// `name.key` and a self-signed CA certificate `name.crt`.
fn make_ca(dir: &Path, name: &str) {
    let (key, crt, subj) = (
        format!("{name}.key"),
        format!("{name}.crt"),
        format!("/CN=Skylark test {name}"),
    );
    openssl(
        dir,
        &[
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-keyout",
            &key,
            "-out",
            &crt,
            "-days",
            "2",
            "-subj",
            &subj,
            "-addext",
            "basicConstraints=critical,CA:TRUE",
            "-addext",
            "keyUsage=critical,keyCertSign,cRLSign",
        ],
    );
}

/// `name.key` and `name.crt` signed by CA `ca`, with the given X.509 v3 extensions.
fn make_leaf(dir: &Path, ca: &str, name: &str, extensions: &str) {
    let (key, csr, crt, ext) = (
        format!("{name}.key"),
        format!("{name}.csr"),
        format!("{name}.crt"),
        format!("{name}.ext"),
    );
    std::fs::write(dir.join(&ext), extensions).expect("write extensions file");
    let subj = format!("/CN=skylark-test-{name}");
    openssl(
        dir,
        &[
            "req",
            "-new",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-keyout",
            &key,
            "-out",
            &csr,
            "-subj",
            &subj,
        ],
    );
    let (ca_crt, ca_key) = (format!("{ca}.crt"), format!("{ca}.key"));
    openssl(
        dir,
        &[
            "x509",
            "-req",
            "-in",
            &csr,
            "-CA",
            &ca_crt,
            "-CAkey",
            &ca_key,
            "-set_serial",
            "2",
            "-days",
            "2",
            "-out",
            &crt,
            "-extfile",
            &ext,
        ],
    );
}

impl Pki {
    /// Makes the CA, the server and client certificates, and a second, unrelated CA.
    pub fn new() -> Pki {
        let dir = tempfile::tempdir().expect("temp dir");
        let d = dir.path();
        make_ca(d, "ca");
        make_ca(d, "other-ca");
        make_leaf(
            d,
            "ca",
            "server",
            "basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature\n\
             extendedKeyUsage=serverAuth\nsubjectAltName=IP:127.0.0.1,DNS:localhost\n",
        );
        make_leaf(
            d,
            "ca",
            "client",
            "basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature\n\
             extendedKeyUsage=clientAuth\n",
        );
        Pki { dir }
    }

    fn file(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// The CA that signed the server and client certificates.
    pub fn ca(&self) -> PathBuf {
        self.file("ca.crt")
    }

    /// A CA that signed nothing the servers use.
    pub fn other_ca(&self) -> PathBuf {
        self.file("other-ca.crt")
    }

    pub fn server_cert(&self) -> PathBuf {
        self.file("server.crt")
    }

    pub fn server_key(&self) -> PathBuf {
        self.file("server.key")
    }

    pub fn client_cert(&self) -> PathBuf {
        self.file("client.crt")
    }

    pub fn client_key(&self) -> PathBuf {
        self.file("client.key")
    }

    /// The plugin's TLS settings: this CA and the client certificate.
    pub fn plugin_env(&self) -> Vec<(String, String)> {
        [
            ("SKYLARK_TLS_CA_FILE", self.ca()),
            ("SKYLARK_TLS_CERT_FILE", self.client_cert()),
            ("SKYLARK_TLS_KEY_FILE", self.client_key()),
        ]
        .into_iter()
        .map(|(k, p)| (k.to_string(), p.to_string_lossy().into_owned()))
        .collect()
    }

    fn read(&self, name: &str) -> Vec<u8> {
        std::fs::read(self.file(name)).expect("read test certificate")
    }
}

impl Default for Pki {
    fn default() -> Pki {
        Pki::new()
    }
}

/// How a [`SecureRedis`] is set up.
#[derive(Default)]
pub struct Setup<'a> {
    /// `requirepass`: the `default` user's password (also what the test itself uses).
    pub password: Option<&'a str>,
    /// ACL users, as `user` lines of redis.conf without the keyword
    /// (`skylark on >pw ~skylark:* +get ...`).
    pub users: &'a [String],
    /// A TLS-only server (`port 0`, `tls-port`) requiring client certificates of `pki`'s CA.
    pub tls: Option<&'a Pki>,
}

/// A redis-server with AUTH, ACL users and/or TLS that lives as long as this value.
pub struct SecureRedis {
    /// The process (SIGKILL on drop).
    _server: Redis,
    /// The TCP port, TLS or plain.
    pub port: u16,
    access: Access,
}

/// How the test itself connects as the `default` user.
#[derive(Clone)]
struct Access {
    tls: bool,
    password: Option<String>,
    /// Material for the test's own TLS connections.
    tls_certs: Option<redis::TlsCertificates>,
}

impl Access {
    fn scheme(&self) -> &'static str {
        if self.tls {
            "rediss"
        } else {
            "redis"
        }
    }

    /// A connection to `port` that answered `PING`.
    fn connect(&self, port: u16) -> Option<redis::Connection> {
        let url = match &self.password {
            Some(pw) => format!("{}://:{pw}@127.0.0.1:{port}", self.scheme()),
            None => format!("{}://127.0.0.1:{port}", self.scheme()),
        };
        let client = match &self.tls_certs {
            Some(certs) => redis::Client::build_with_tls(url.as_str(), certs.clone()).ok()?,
            None => redis::Client::open(url.as_str()).ok()?,
        };
        let mut c = client
            .get_connection_with_timeout(Duration::from_secs(1))
            .ok()?;
        redis::cmd("PING").query::<String>(&mut c).ok()?;
        Some(c)
    }
}

/// The configuration of `setup` for a server on `port` (TLS only: plain port 0).
fn server_config(setup: &Setup, port: u16) -> ServerConfig {
    let mut extra = Vec::new();
    if let Some(pw) = setup.password {
        extra.push(format!("requirepass {pw}"));
    }
    for user in setup.users {
        extra.push(format!("user {user}"));
    }
    let port = match setup.tls {
        None => port,
        Some(pki) => {
            extra.extend([
                format!("tls-port {port}"),
                "tls-auth-clients yes".to_string(),
                format!("tls-cert-file {}", pki.server_cert().display()),
                format!("tls-key-file {}", pki.server_key().display()),
                format!("tls-ca-cert-file {}", pki.ca().display()),
            ]);
            0
        }
    };
    ServerConfig {
        port,
        extra,
        ..ServerConfig::default()
    }
}

impl SecureRedis {
    /// Starts a server as `setup` says on a free loopback port; returns once it answers.
    pub fn start(setup: &Setup) -> SecureRedis {
        let access = Access {
            tls: setup.tls.is_some(),
            password: setup.password.map(str::to_string),
            tls_certs: setup.tls.map(|pki| redis::TlsCertificates {
                client_tls: Some(redis::ClientTlsConfig {
                    client_cert: pki.read("client.crt"),
                    client_key: pki.read("client.key"),
                }),
                root_cert: Some(pki.read("ca.crt")),
            }),
        };
        let server = Redis::start_on_free_port(
            |port| server_config(setup, port),
            None,
            |server| access.connect(server.port).is_some(),
        )
        .unwrap_or_else(|e| panic!("secure redis-server did not start: {e}"));
        SecureRedis {
            port: server.port,
            _server: server,
            access,
        }
    }

    /// The URL for the plugin, without credentials: `redis://` or `rediss://` to
    /// `127.0.0.1`.
    pub fn url(&self) -> String {
        self.url_at("127.0.0.1")
    }

    /// The URL naming the server by `host` (`localhost` checks DNS names in certificates).
    pub fn url_at(&self, host: &str) -> String {
        format!("{}://{host}:{}", self.access.scheme(), self.port)
    }

    /// The URL with the `default` user's password (plain TCP servers only), for helpers
    /// that take a URL, such as [`crate::Events::subscribe`].
    pub fn url_with_password(&self) -> String {
        match &self.access.password {
            Some(pw) => format!("{}://:{pw}@127.0.0.1:{}", self.access.scheme(), self.port),
            None => self.url(),
        }
    }

    fn try_admin(&self) -> Option<redis::Connection> {
        self.access.connect(self.port)
    }

    /// A connection as the `default` user (with the server's password and the client
    /// certificate), for setting up and checking.
    pub fn admin(&self) -> redis::Connection {
        self.try_admin()
            .expect("connect to the test redis-server as admin")
    }

    /// Every field of a hash, as a sorted map.
    pub fn hgetall(&self, key: &str) -> std::collections::BTreeMap<String, Vec<u8>> {
        redis::cmd("HGETALL")
            .arg(key)
            .query(&mut self.admin())
            .expect("HGETALL")
    }

    /// The state fields of a bundle hash (no reserved `@` fields).
    pub fn state(&self, key: &str) -> std::collections::BTreeMap<String, Vec<u8>> {
        crate::redis::state_fields(self.hgetall(key))
    }

    /// Deletes `key`.
    pub fn del(&self, key: &str) {
        redis::cmd("DEL")
            .arg(key)
            .query::<i64>(&mut self.admin())
            .expect("DEL");
    }

    /// The entries of `ACL LOG` (commands, keys or channels the server refused an ACL
    /// user), each as its `reason`, `object` and `username`, and the log reset.
    pub fn take_acl_log(&self) -> Vec<String> {
        let mut c = self.admin();
        let entries: Vec<std::collections::HashMap<String, redis::Value>> =
            redis::cmd("ACL").arg("LOG").query(&mut c).expect("ACL LOG");
        redis::cmd("ACL")
            .arg("LOG")
            .arg("RESET")
            .query::<()>(&mut c)
            .expect("ACL LOG RESET");
        let text = |e: &std::collections::HashMap<String, redis::Value>, k: &str| match e.get(k) {
            Some(redis::Value::BulkString(b)) => String::from_utf8_lossy(b).into_owned(),
            Some(redis::Value::SimpleString(s)) => s.clone(),
            other => format!("{other:?}"),
        };
        entries
            .iter()
            .map(|e| {
                format!(
                    "{} {} (user {})",
                    text(e, "reason"),
                    text(e, "object"),
                    text(e, "username")
                )
            })
            .collect()
    }
}

/// README.md, whose "Minimal ACL" section is the one statement of the ACL rules the plugin
/// needs: the tests run under exactly those rules.
pub const README: &str = include_str!("../../README.md");

/// The namespace the README's ACL rules are written for.
pub const README_NAMESPACE: &str = "skylark";

/// The rules (after the user name, `on` and the password) of the README's
/// `ACL SETUSER <user> on >PASSWORD ...` line for `user`, in the "Minimal ACL" section.
pub fn readme_acl(user: &str) -> &'static str {
    let section = README
        .split_once("**Minimal ACL.**")
        .expect("README.md has a \"Minimal ACL\" section")
        .1;
    let head = format!("ACL SETUSER {user} on >PASSWORD ");
    let mut lines = section
        .lines()
        .filter_map(|l| l.strip_prefix(head.as_str()));
    let rules = lines
        .next()
        .unwrap_or_else(|| panic!("README.md \"Minimal ACL\" has no `{head}...` line"));
    rules.trim()
}

/// `rules` for namespace `ns` instead of the README's [`README_NAMESPACE`] (every key and
/// channel pattern names it as `skylark:` or `skylark/`).
fn for_namespace(rules: &str, ns: &str) -> String {
    rules
        .replace(&format!("{README_NAMESPACE}:"), &format!("{ns}:"))
        .replace(&format!("{README_NAMESPACE}/"), &format!("{ns}/"))
}

/// The ACL rules (after the user name, `on` and the password) that a plugin needs on its
/// node-local store for namespace `ns`: README.md's `skylark` user.
pub fn node_acl(ns: &str) -> String {
    for_namespace(readme_acl("skylark"), ns)
}

/// The ACL rules that other nodes' plugins need on a store that is only ever their
/// remote or global store (bundles only): README.md's `tenant` user.
pub fn peer_acl(ns: &str) -> String {
    for_namespace(readme_acl("tenant"), ns)
}
