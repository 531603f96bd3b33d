//! TLS material for `rediss://` stores: the CA, client certificate and key files named by
//! `SKYLARK_TLS_*`, read and checked when the configuration is read, so that a bad file
//! fails the configuration rather than a connection.

use super::error::ConfigError;
use super::vars::{Lookup, TLS_CA_FILE, TLS_CERT_FILE, TLS_KEY_FILE};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use std::fmt;

/// A PEM file read at configuration time. `Debug` shows the path and size, not the
/// contents (the client key is a secret).
#[derive(Clone, PartialEq)]
pub struct PemFile {
    pub path: String,
    pub pem: Vec<u8>,
}

impl fmt::Debug for PemFile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PemFile({:?}, {} bytes)", self.path, self.pem.len())
    }
}

/// TLS material for `rediss://` stores (the node-local, remote and global ones alike).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Tls {
    /// Roots the servers must chain to; `None`: the system's roots.
    pub ca: Option<PemFile>,
    /// Client certificate chain and its key, for servers that require client certificates.
    pub client: Option<(PemFile, PemFile)>,
}

impl Tls {
    /// Whether anything differs from the defaults (system roots, no client certificate).
    pub fn is_set(&self) -> bool {
        self.ca.is_some() || self.client.is_some()
    }
}

/// Reads and checks `SKYLARK_TLS_CA_FILE`, `SKYLARK_TLS_CERT_FILE` and
/// `SKYLARK_TLS_KEY_FILE`, so that a bad file fails the configuration, not a connection.
pub(super) fn read(var: Lookup<'_>) -> Result<Tls, ConfigError> {
    const CA: &str = TLS_CA_FILE.name;
    const CERT: &str = TLS_CERT_FILE.name;
    const KEY: &str = TLS_KEY_FILE.name;
    let ca = match var(CA) {
        None => None,
        Some(path) => {
            let file = read_file(CA, &path)?;
            let mut roots = rustls::RootCertStore::empty();
            for cert in certificates(CA, &file)? {
                roots.add(cert).map_err(|e| {
                    ConfigError::file(
                        CA,
                        &path,
                        format!("{CA} {path:?}: not a usable CA certificate: {e}"),
                    )
                })?;
            }
            Some(file)
        }
    };
    let client = match (var(CERT), var(KEY)) {
        (None, None) => None,
        (Some(_), None) => {
            return Err(ConfigError::conflict(
                CERT,
                KEY,
                format!("{CERT} is set without {KEY}"),
            ))
        }
        (None, Some(_)) => {
            return Err(ConfigError::conflict(
                KEY,
                CERT,
                format!("{KEY} is set without {CERT}"),
            ))
        }
        (Some(cert_path), Some(key_path)) => {
            let cert = read_file(CERT, &cert_path)?;
            let key = read_file(KEY, &key_path)?;
            let chain = certificates(CERT, &cert)?;
            // The parser's message may quote the file; the key file is a secret.
            let der = PrivateKeyDer::from_pem_slice(&key.pem).map_err(|_| {
                ConfigError::file(
                    KEY,
                    &key_path,
                    format!("{KEY} {key_path:?} holds no PEM private key (PKCS#8, PKCS#1 or SEC1)"),
                )
            })?;
            let provider = rustls::crypto::ring::default_provider();
            rustls::sign::CertifiedKey::from_der(chain, der, &provider).map_err(|e| {
                ConfigError::conflict(
                    CERT,
                    KEY,
                    format!(
                        "{CERT} {cert_path:?} and {KEY} {key_path:?} are not a usable pair: {e}"
                    ),
                )
            })?;
            Some((cert, key))
        }
    };
    Ok(Tls { ca, client })
}

fn read_file(name: &str, path: &str) -> Result<PemFile, ConfigError> {
    let pem = std::fs::read(path)
        .map_err(|e| ConfigError::file(name, path, format!("{name} {path:?}: cannot read: {e}")))?;
    Ok(PemFile {
        path: path.to_string(),
        pem,
    })
}

/// The certificates of a PEM file; at least one.
fn certificates(name: &str, file: &PemFile) -> Result<Vec<CertificateDer<'static>>, ConfigError> {
    let fail = |what: String| ConfigError::file(name, &file.path, what);
    let certs = CertificateDer::pem_slice_iter(&file.pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| fail(format!("{name} {:?}: not PEM certificates: {e}", file.path)))?;
    if certs.is_empty() {
        return Err(fail(format!(
            "{name} {:?} holds no PEM certificate",
            file.path
        )));
    }
    Ok(certs)
}

#[cfg(test)]
mod tests {
    use super::super::fixtures::*;

    #[test]
    fn reads_tls_files() {
        let ca = TempFile::new("ca.pem", CERT.as_bytes());
        let cert = TempFile::new("client.pem", CERT.as_bytes());
        let key = TempFile::new("client.key", KEY.as_bytes());
        let c = cfg(&[
            ("SKYLARK_TLS_CA_FILE", ca.path()),
            ("SKYLARK_TLS_CERT_FILE", cert.path()),
            ("SKYLARK_TLS_KEY_FILE", key.path()),
            ("SKYLARK_REMOTE_TLS", "on"),
        ])
        .unwrap();
        assert_eq!(
            c.tls.ca.as_ref().map(|f| f.pem.as_slice()),
            Some(CERT.as_bytes())
        );
        let (cert_file, key_file) = c.tls.client.as_ref().unwrap();
        assert_eq!(cert_file.path, cert.path());
        assert_eq!(key_file.pem, KEY.as_bytes());
        assert!(c.propagation.remote_tls);
        // The key never shows in Debug output.
        assert!(!format!("{c:?}").contains("PRIVATE KEY"));
        // A CA alone (server authentication only) is fine too.
        let c = cfg(&[("SKYLARK_TLS_CA_FILE", ca.path())]).unwrap();
        assert!(c.tls.is_set() && c.tls.client.is_none());
    }

    #[test]
    fn rejects_bad_tls_files_naming_variable_and_file() {
        let cert = TempFile::new("client.pem", CERT.as_bytes());
        let key = TempFile::new("client.key", KEY.as_bytes());
        let other = TempFile::new("other.key", OTHER_KEY.as_bytes());
        let garbage = TempFile::new("garbage.pem", b"not a certificate\n");
        // (environment, expected in the message, also expected in the message)
        type Case<'a> = (Vec<(&'a str, &'a str)>, &'a str, &'a str);
        let cases: Vec<Case> = vec![
            (
                vec![("SKYLARK_TLS_CA_FILE", "/nonexistent/ca.pem")],
                "SKYLARK_TLS_CA_FILE",
                "/nonexistent/ca.pem",
            ),
            (
                vec![("SKYLARK_TLS_CA_FILE", garbage.path())],
                "SKYLARK_TLS_CA_FILE",
                garbage.path(),
            ),
            (
                vec![("SKYLARK_TLS_CA_FILE", key.path())],
                "SKYLARK_TLS_CA_FILE",
                "no PEM certificate",
            ),
            (
                vec![("SKYLARK_TLS_CERT_FILE", cert.path())],
                "SKYLARK_TLS_CERT_FILE is set without SKYLARK_TLS_KEY_FILE",
                "",
            ),
            (
                vec![("SKYLARK_TLS_KEY_FILE", key.path())],
                "SKYLARK_TLS_KEY_FILE is set without SKYLARK_TLS_CERT_FILE",
                "",
            ),
            (
                vec![
                    ("SKYLARK_TLS_CERT_FILE", cert.path()),
                    ("SKYLARK_TLS_KEY_FILE", cert.path()),
                ],
                "SKYLARK_TLS_KEY_FILE",
                "no PEM private key",
            ),
            (
                vec![
                    ("SKYLARK_TLS_CERT_FILE", key.path()),
                    ("SKYLARK_TLS_KEY_FILE", key.path()),
                ],
                "SKYLARK_TLS_CERT_FILE",
                "no PEM certificate",
            ),
            (
                vec![
                    ("SKYLARK_TLS_CERT_FILE", cert.path()),
                    ("SKYLARK_TLS_KEY_FILE", other.path()),
                ],
                "not a usable pair",
                other.path(),
            ),
            (
                vec![("SKYLARK_REMOTE_TLS", "maybe")],
                "SKYLARK_REMOTE_TLS",
                "",
            ),
        ];
        for (env, expect, also) in cases {
            let err = cfg(&env).unwrap_err();
            assert!(err.contains(expect) && err.contains(also), "{env:?}: {err}");
            assert!(!err.contains("BEGIN"), "{env:?}: file contents in {err}");
        }
    }
}
