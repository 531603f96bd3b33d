//! The table of every environment variable the plugin reads: name, README section,
//! what it accepts (with its default and range) and what it means. Parsing reads defaults
//! and ranges from here, and README.md's configuration tables are rendered from it (a test
//! checks that README holds exactly what [`render`] gives).

use super::error::ConfigError;

/// Which of README's configuration tables a variable is listed in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Section {
    /// The node-local store, limits and logging.
    Store,
    /// Authentication and TLS.
    Access,
    /// Propagation and fallback reads.
    Propagation,
}

/// What a variable accepts, and its default.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Kind {
    /// An integer in `min..=max`.
    Int { default: u64, min: u64, max: u64 },
    /// A finite number, `>= 0` if `zero_ok`, else `> 0`.
    Rate { default: f64, zero_ok: bool },
    /// `on` or `off` (also `1`/`0`, `true`/`false`, `yes`/`no`).
    Switch { default: bool },
    /// Text with a literal default, parsed by its own code; `accepts` says what for README.
    Str {
        default: &'static str,
        accepts: &'static str,
    },
    /// Text without a literal default (README shows `shown`), parsed by its own code.
    Opt {
        shown: &'static str,
        accepts: &'static str,
    },
}

/// One environment variable.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Var {
    pub name: &'static str,
    pub section: Section,
    pub kind: Kind,
    /// README's "meaning" column (Markdown).
    pub doc: &'static str,
}

/// Largest value Redis accepts in one string or hash field.
pub const REDIS_MAX_VALUE: u64 = 512 * 1024 * 1024;

pub const REDIS_URL: Var = Var {
    name: "SKYLARK_REDIS_URL",
    section: Section::Store,
    kind: Kind::Str { default: "redis://127.0.0.1:6379", accepts: "a Redis URL" },
    doc: "node-local store: `redis://[user:pass@]host:port[/db]`, `rediss://...` (TLS), `unix:///path/redis.sock` or `redis+unix:///path`",
};

pub const NODE_NAME: Var = Var {
    name: "SKYLARK_NODE_NAME",
    section: Section::Store,
    kind: Kind::Opt {
        shown: "`$HOSTNAME`, else `local`",
        accepts: "an id: 1-128 bytes of `[A-Za-z0-9._-]`",
    },
    doc: "name of this node, reported with every bundle",
};

pub const NAMESPACE: Var = Var {
    name: "SKYLARK_NAMESPACE",
    section: Section::Store,
    kind: Kind::Str {
        default: "skylark",
        accepts: "an id of 1-64 bytes",
    },
    doc: "prefix of every key: a bundle lives at `<namespace>:bundle:<chain>`",
};

pub const TTL_SECS: Var = Var {
    name: "SKYLARK_TTL_SECS",
    section: Section::Store,
    kind: Kind::Int {
        default: 86_400,
        min: 0,
        max: 10 * 365 * 86_400,
    },
    doc: "expiry of a bundle after its last write; `0` = never",
};

pub const MAX_VALUE_BYTES: Var = Var {
    name: "SKYLARK_MAX_VALUE_BYTES",
    section: Section::Store,
    kind: Kind::Int {
        default: 64 << 20,
        min: 1,
        max: REDIS_MAX_VALUE,
    },
    doc: "largest value of one field",
};

pub const MAX_FIELDS: Var = Var {
    name: "SKYLARK_MAX_FIELDS",
    section: Section::Store,
    kind: Kind::Int {
        default: 1024,
        min: 1,
        max: 1 << 20,
    },
    doc: "most fields in one `skylark_put_many`",
};

pub const MAX_BUNDLE_BYTES: Var = Var {
    name: "SKYLARK_MAX_BUNDLE_BYTES",
    section: Section::Store,
    kind: Kind::Int {
        default: 256 << 20,
        min: 1,
        max: u32::MAX as u64,
    },
    doc: "largest bundle `skylark_get_bundle` delivers, and a put may make: a put that would take its bundle beyond it (or its reserved fields beyond twice it plus 1 MiB) fails with `BundleTooLarge` (18) and stores nothing",
};

pub const NAMESPACE_MAX_BYTES: Var = Var {
    name: "SKYLARK_NAMESPACE_MAX_BYTES",
    section: Section::Store,
    kind: Kind::Int {
        default: 0,
        min: 0,
        max: 1 << 50,
    },
    doc: "quota of the namespace on the node-local store: the bytes (names and values) its bundles may hold there, as its puts on this node counted them at their last put; a put that would grow its bundle beyond it fails with `QuotaExceeded` (19) and stores nothing; `0`: no quota",
};

pub const MAX_REPLY_BYTES: Var = Var {
    name: "SKYLARK_MAX_REPLY_BYTES",
    section: Section::Store,
    kind: Kind::Int {
        default: 64 << 20,
        min: 64 << 10,
        max: u32::MAX as u64,
    },
    doc: "largest reply to a request that is no bundle read (a bundle read's may take \
          9 × `SKYLARK_MAX_BUNDLE_BYTES` + 4 MiB), on the plugin's runtime connections (not \
          on the guest-thread connection of a nearby node-local store, nor to a Redis \
          Cluster's nodes); a larger reply fails the call with `StoreError` and drops the \
          connection",
};

pub const TIMEOUT_MS: Var = Var {
    name: "SKYLARK_TIMEOUT_MS",
    section: Section::Store,
    kind: Kind::Int {
        default: 2000,
        min: 1,
        max: 3_600_000,
    },
    doc: "deadline of one store call, connecting included",
};

pub const CONNECT_TIMEOUT_MS: Var = Var {
    name: "SKYLARK_CONNECT_TIMEOUT_MS",
    section: Section::Store,
    kind: Kind::Int {
        default: 1000,
        min: 1,
        max: 3_600_000,
    },
    doc: "deadline of one connection attempt",
};

pub const MAX_PENDING: Var = Var {
    name: "SKYLARK_MAX_PENDING",
    section: Section::Store,
    kind: Kind::Int {
        default: 4,
        min: 1,
        max: 1024,
    },
    doc: "oversized results kept per instance for `skylark_take_result`",
};

pub const WAIT_MS: Var = Var {
    name: "SKYLARK_WAIT_MS",
    section: Section::Store,
    kind: Kind::Int {
        default: 10_000,
        min: 0,
        max: 3_600_000,
    },
    doc: "deadline of a `skylark_get_bundle` with `wait_for` that gives no `wait_ms` (at most `SKYLARK_MAX_WAIT_MS`)",
};

pub const MAX_WAIT_MS: Var = Var {
    name: "SKYLARK_MAX_WAIT_MS",
    section: Section::Store,
    kind: Kind::Int {
        default: 60_000,
        min: 0,
        max: 3_600_000,
    },
    doc: "longest `wait_ms` a get is granted; a larger one is cut to this",
};

pub const LOG: Var = Var {
    name: "SKYLARK_LOG",
    section: Section::Store,
    kind: Kind::Str {
        default: "warn",
        accepts: "a level",
    },
    doc: "`off`, `error`, `warn`, `info`, `debug` or `trace`, to stderr",
};

pub const REDIS_USERNAME: Var = Var {
    name: "SKYLARK_REDIS_USERNAME",
    section: Section::Access,
    kind: Kind::Opt {
        shown: "none",
        accepts: "a name without whitespace",
    },
    doc: "ACL user for every store whose URL names none; needs a password",
};

pub const REDIS_PASSWORD: Var = Var {
    name: "SKYLARK_REDIS_PASSWORD",
    section: Section::Access,
    kind: Kind::Opt {
        shown: "none",
        accepts: "text",
    },
    doc: "password (`AUTH`) for every store whose URL carries none",
};

pub const REDIS_PASSWORD_FILE: Var = Var {
    name: "SKYLARK_REDIS_PASSWORD_FILE",
    section: Section::Access,
    kind: Kind::Opt { shown: "none", accepts: "a path" },
    doc: "file holding that password (a trailing newline is ignored), e.g. a mounted Kubernetes secret; setting both this and `SKYLARK_REDIS_PASSWORD` is an error",
};

pub const GLOBAL_USERNAME: Var = Var {
    name: "SKYLARK_GLOBAL_USERNAME",
    section: Section::Access,
    kind: Kind::Opt {
        shown: "`SKYLARK_REDIS_USERNAME`",
        accepts: "a name without whitespace",
    },
    doc: "ACL user for the global store",
};

pub const GLOBAL_PASSWORD: Var = Var {
    name: "SKYLARK_GLOBAL_PASSWORD",
    section: Section::Access,
    kind: Kind::Opt {
        shown: "`SKYLARK_REDIS_PASSWORD`",
        accepts: "text",
    },
    doc: "password for the global store",
};

pub const GLOBAL_PASSWORD_FILE: Var = Var {
    name: "SKYLARK_GLOBAL_PASSWORD_FILE",
    section: Section::Access,
    kind: Kind::Opt {
        shown: "`SKYLARK_REDIS_PASSWORD_FILE`",
        accepts: "a path",
    },
    doc: "file holding the global store's password",
};

pub const TLS_CA_FILE: Var = Var {
    name: "SKYLARK_TLS_CA_FILE",
    section: Section::Access,
    kind: Kind::Opt { shown: "the system's roots", accepts: "a path" },
    doc: "PEM file of the CA certificate(s) `rediss://` servers must chain to (several CAs may be concatenated)",
};

pub const TLS_CERT_FILE: Var = Var {
    name: "SKYLARK_TLS_CERT_FILE",
    section: Section::Access,
    kind: Kind::Opt { shown: "none", accepts: "a path" },
    doc: "PEM client certificate (chain) presented to `rediss://` servers (`tls-auth-clients yes`); needs `SKYLARK_TLS_KEY_FILE`",
};

pub const TLS_KEY_FILE: Var = Var {
    name: "SKYLARK_TLS_KEY_FILE",
    section: Section::Access,
    kind: Kind::Opt {
        shown: "none",
        accepts: "a path",
    },
    doc: "PEM private key (PKCS#8, PKCS#1 or SEC1) of `SKYLARK_TLS_CERT_FILE`",
};

pub const PROPAGATION: Var = Var {
    name: "SKYLARK_PROPAGATION",
    section: Section::Propagation,
    kind: Kind::Str { default: "auto", accepts: "`on`, `off` or `auto`" },
    doc: "`on`, `off`, or `auto`: on when `SKYLARK_TOPOLOGY_FILE` or `SKYLARK_GLOBAL_URL` is set. Off means the plugin v1 behaviour: local store only",
};

pub const TOPOLOGY_FILE: Var = Var {
    name: "SKYLARK_TOPOLOGY_FILE",
    section: Section::Propagation,
    kind: Kind::Opt {
        shown: "none",
        accepts: "a path",
    },
    doc: "topology document (see below), from the operator: the only topology that may give store addresses (`redis`, `ip`); the node-local key `<namespace>:topology` overrides its links and slots",
};

pub const TOPOLOGY_KEY: Var = Var {
    name: "SKYLARK_TOPOLOGY_KEY",
    section: Section::Propagation,
    kind: Kind::Switch { default: true },
    doc: "`off`: ignore the node-local key `<namespace>:topology` (only the file counts). When on, the key may change nodes, links, slots and timing, never store addresses: its `redis` and `ip` entries are ignored, and it may not name another global node than the file",
};

pub const TOPOLOGY_REFRESH_MS: Var = Var {
    name: "SKYLARK_TOPOLOGY_REFRESH_MS",
    section: Section::Propagation,
    kind: Kind::Int {
        default: 1000,
        min: 10,
        max: 3_600_000,
    },
    doc: "how often a running plugin checks the file and the key for a new topology",
};

pub const NODE_ADDRS: Var = Var {
    name: "SKYLARK_NODE_ADDRS",
    section: Section::Propagation,
    kind: Kind::Opt {
        shown: "none",
        accepts: "`name=url` items, comma-separated",
    },
    doc: "store URL per node, overriding the topology: `name=url,name=url`",
};

pub const NODE_ADDR_TEMPLATE: Var = Var {
    name: "SKYLARK_NODE_ADDR_TEMPLATE",
    section: Section::Propagation,
    kind: Kind::Opt { shown: "none", accepts: "a Redis URL containing `{name}`" },
    doc: "store URL of a node that neither `SKYLARK_NODE_ADDRS` nor the topology file gives one, with `{name}` replaced by the node's name, e.g. `rediss://{name}.redis.example:6379`",
};

pub const REMOTE_PORT: Var = Var {
    name: "SKYLARK_REMOTE_PORT",
    section: Section::Propagation,
    kind: Kind::Int {
        default: 6379,
        min: 1,
        max: 65_535,
    },
    doc: "Redis port of nodes the topology knows only by IP",
};

pub const REMOTE_TLS: Var = Var {
    name: "SKYLARK_REMOTE_TLS",
    section: Section::Propagation,
    kind: Kind::Switch { default: false },
    doc: "`on`: reach nodes the topology knows only by IP at `rediss://<ip>:SKYLARK_REMOTE_PORT` (TLS), and refuse every other store (node, global) whose URL is `redis://` (plain TCP)",
};

pub const GLOBAL_URL: Var = Var {
    name: "SKYLARK_GLOBAL_URL",
    section: Section::Propagation,
    kind: Kind::Opt {
        shown: "the topology's global node",
        accepts: "a Redis URL",
    },
    doc: "URL of the global store: any form of `SKYLARK_REDIS_URL`, a Redis Cluster `redis+cluster://[user:pass@]host:port,host:port` or a Sentinel-managed primary `redis+sentinel://[user:pass@]host:port,host:port/<master name>` (`rediss+...` for TLS); only the global store may be a cluster or Sentinel",
};

pub const GLOBAL_MIN_REPLICAS: Var = Var {
    name: "SKYLARK_GLOBAL_MIN_REPLICAS",
    section: Section::Propagation,
    kind: Kind::Int {
        default: 0,
        min: 0,
        max: 64,
    },
    doc: "replicas of the global store that must confirm a write (`WAIT`, on the write's own connection, to the primary that took it) before a copy or a Stateless put counts as done; fewer within `SKYLARK_GLOBAL_WAIT_MS`: the copy fails and is retried, the Stateless put fails. 0: no `WAIT`",
};

pub const GLOBAL_WAIT_MS: Var = Var {
    name: "SKYLARK_GLOBAL_WAIT_MS",
    section: Section::Propagation,
    kind: Kind::Int {
        default: 1000,
        min: 1,
        max: 3_600_000,
    },
    doc: "how long that `WAIT` may take (added to the write's deadline)",
};

pub const POLICY: Var = Var {
    name: "SKYLARK_POLICY",
    section: Section::Propagation,
    kind: Kind::Str { default: "skylark", accepts: "a policy name" },
    doc: "default policy: `skylark`, `random`, `stateless` or `local` (a put or get may choose its own)",
};

pub const ELECTION: Var = Var {
    name: "SKYLARK_ELECTION",
    section: Section::Propagation,
    kind: Kind::Str { default: "retrieval", accepts: "`retrieval` or `research`" },
    doc: "rule of the `skylark` policy: `retrieval` elects the node on the path to the destination with the least expected retrieval time for the consumer (within the SLO when some node meets it); `research` is the original rule (the node nearest the destination within the SLO, else keep local)",
};

pub const SLO_MAX_LATENCY_MS: Var = Var {
    name: "SKYLARK_SLO_MAX_LATENCY_MS",
    section: Section::Propagation,
    kind: Kind::Int {
        default: 5000,
        min: 1,
        max: 86_400_000,
    },
    doc: "default latency budget of a step",
};

pub const SLO_MIN_BANDWIDTH_MBPS: Var = Var {
    name: "SKYLARK_SLO_MIN_BANDWIDTH_MBPS",
    section: Section::Propagation,
    kind: Kind::Rate {
        default: 0.0,
        zero_ok: true,
    },
    doc: "default least bottleneck bandwidth on the path to an elected node",
};

pub const QUEUE_LEN: Var = Var {
    name: "SKYLARK_QUEUE_LEN",
    section: Section::Propagation,
    kind: Kind::Int {
        default: 256,
        min: 1,
        max: 1 << 20,
    },
    doc: "propagation jobs in flight per process; beyond that, jobs wait in the outbox",
};

pub const MAX_OUTBOX: Var = Var {
    name: "SKYLARK_MAX_OUTBOX",
    section: Section::Propagation,
    kind: Kind::Int { default: 100_000, min: 1, max: 1 << 32 },
    doc: "propagation jobs the node's outbox may hold; while it is full, puts fail with `Backlogged` (23) and store nothing (checked against the length the last put or sweep saw, so concurrent processes may overshoot it by a few)",
};

pub const MAX_OUTBOX_BYTES: Var = Var {
    name: "SKYLARK_MAX_OUTBOX_BYTES",
    section: Section::Propagation,
    kind: Kind::Int {
        default: 64 << 20,
        min: 1024,
        max: 1 << 40,
    },
    doc: "bytes the jobs in the node's outbox may take (a job lists its task ids); a put whose job would take the outbox beyond it fails with `Backlogged` (23) and stores nothing",
};

pub const COPY_MIN_MBPS: Var = Var {
    name: "SKYLARK_COPY_MIN_MBPS",
    section: Section::Propagation,
    kind: Kind::Rate { default: 5.0, zero_ok: false },
    doc: "slowest transfer rate a copy may have: a copy of B bytes fails (and is retried) after `SKYLARK_TIMEOUT_MS` + B at this rate, so large bundles over slow links are not cut off at the plain timeout",
};

pub const RETRIES: Var = Var {
    name: "SKYLARK_RETRIES",
    section: Section::Propagation,
    kind: Kind::Int {
        default: 3,
        min: 1,
        max: 1000,
    },
    doc: "failed copies to one node before the job is re-targeted",
};

pub const RETRY_BASE_MS: Var = Var {
    name: "SKYLARK_RETRY_BASE_MS",
    section: Section::Propagation,
    kind: Kind::Int {
        default: 100,
        min: 1,
        max: 60_000,
    },
    doc: "first retry delay; doubles per attempt, at most 10 s",
};

pub const LINGER_MS: Var = Var {
    name: "SKYLARK_LINGER_MS",
    section: Section::Propagation,
    kind: Kind::Int { default: 2, min: 0, max: 10_000 },
    doc: "a job waits this long before reading the bundle, so a burst of puts of one chain becomes one copy",
};

pub const LEASE_MS: Var = Var {
    name: "SKYLARK_LEASE_MS",
    section: Section::Propagation,
    kind: Kind::Int { default: 5000, min: 10, max: 3_600_000 },
    doc: "how long an outbox job stays with the process that owns it before other processes may claim it; the owner renews it every third of this while it runs the job, and releases it when its exit flush gives the job up",
};

pub const SWEEP_MS: Var = Var {
    name: "SKYLARK_SWEEP_MS",
    section: Section::Propagation,
    kind: Kind::Int {
        default: 2000,
        min: 10,
        max: 3_600_000,
    },
    doc: "how often a running plugin claims due outbox jobs",
};

pub const EXIT_FLUSH_MS: Var = Var {
    name: "SKYLARK_EXIT_FLUSH_MS",
    section: Section::Propagation,
    kind: Kind::Int {
        default: 5000,
        min: 0,
        max: 3_600_000,
    },
    doc: "at process exit, how long to wait for propagation still in flight",
};

pub const INCOMING_WAIT_MS: Var = Var {
    name: "SKYLARK_INCOMING_WAIT_MS",
    section: Section::Propagation,
    kind: Kind::Int { default: 3000, min: 0, max: 600_000 },
    doc: "a copy announces itself on its target just before it is sent, live for the copy's expected transfer over the current route plus this long; a read on that node waits that long for it (at most `SKYLARK_MAX_WAIT_MS`) instead of fetching the state from elsewhere (`0`: no announcements, no waiting)",
};

pub const READ_CACHE: Var = Var {
    name: "SKYLARK_READ_CACHE",
    section: Section::Propagation,
    kind: Kind::Switch { default: true },
    doc: "keep a local copy of a bundle read from another node",
};

pub const EVENTS: Var = Var {
    name: "SKYLARK_EVENTS",
    section: Section::Propagation,
    kind: Kind::Switch { default: true },
    doc: "publish placement and propagation events",
};

/// Every variable, in README's order.
pub const VARS: &[Var] = &[
    REDIS_URL,
    NODE_NAME,
    NAMESPACE,
    TTL_SECS,
    MAX_VALUE_BYTES,
    MAX_FIELDS,
    MAX_BUNDLE_BYTES,
    MAX_REPLY_BYTES,
    NAMESPACE_MAX_BYTES,
    TIMEOUT_MS,
    CONNECT_TIMEOUT_MS,
    MAX_PENDING,
    WAIT_MS,
    MAX_WAIT_MS,
    LOG,
    REDIS_USERNAME,
    REDIS_PASSWORD,
    REDIS_PASSWORD_FILE,
    GLOBAL_USERNAME,
    GLOBAL_PASSWORD,
    GLOBAL_PASSWORD_FILE,
    TLS_CA_FILE,
    TLS_CERT_FILE,
    TLS_KEY_FILE,
    PROPAGATION,
    TOPOLOGY_FILE,
    TOPOLOGY_KEY,
    TOPOLOGY_REFRESH_MS,
    NODE_ADDRS,
    NODE_ADDR_TEMPLATE,
    REMOTE_PORT,
    REMOTE_TLS,
    GLOBAL_URL,
    GLOBAL_MIN_REPLICAS,
    GLOBAL_WAIT_MS,
    POLICY,
    ELECTION,
    SLO_MAX_LATENCY_MS,
    SLO_MIN_BANDWIDTH_MBPS,
    QUEUE_LEN,
    MAX_OUTBOX,
    MAX_OUTBOX_BYTES,
    COPY_MIN_MBPS,
    RETRIES,
    RETRY_BASE_MS,
    LINGER_MS,
    LEASE_MS,
    SWEEP_MS,
    EXIT_FLUSH_MS,
    INCOMING_WAIT_MS,
    READ_CACHE,
    EVENTS,
];

impl Var {
    /// The literal default of a [`Kind::Str`] variable ("" for other kinds).
    pub fn text_default(&self) -> &'static str {
        match self.kind {
            Kind::Str { default, .. } => default,
            _ => "",
        }
    }

    /// README's default column.
    fn shown_default(&self) -> String {
        match self.kind {
            Kind::Int { default, .. } => {
                const MIB: u64 = 1 << 20;
                if default >= MIB && default % MIB == 0 {
                    format!("`{default}` ({} MiB)", default / MIB)
                } else {
                    format!("`{default}`")
                }
            }
            Kind::Rate { default, .. } => format!("`{default}`"),
            Kind::Switch { default } => format!("`{}`", if default { "on" } else { "off" }),
            Kind::Str { default, .. } => format!("`{default}`"),
            Kind::Opt { shown, .. } => shown.to_string(),
        }
    }

    /// README's "accepts" column.
    fn shown_accepts(&self) -> String {
        match self.kind {
            Kind::Int { min, max, .. } => format!("`{min}` to `{max}`"),
            Kind::Rate { zero_ok: true, .. } => "a number >= 0".to_string(),
            Kind::Rate { zero_ok: false, .. } => "a number > 0".to_string(),
            Kind::Switch { .. } => "`on` or `off`".to_string(),
            Kind::Str { accepts, .. } | Kind::Opt { accepts, .. } => accepts.to_string(),
        }
    }
}

/// README's table of the variables of `section`, header included, one line each.
pub fn render(section: Section) -> String {
    let mut out =
        String::from("| variable | default | accepts | meaning |\n| --- | --- | --- | --- |\n");
    for v in VARS.iter().filter(|v| v.section == section) {
        out.push_str(&format!(
            "| `{}` | {} | {} | {} |\n",
            v.name,
            v.shown_default(),
            v.shown_accepts(),
            v.doc
        ));
    }
    out
}

/// Reads one variable through `get` (a name to its value; blank counts as unset).
pub type Lookup<'a> = &'a dyn Fn(&str) -> Option<String>;

/// An [`Kind::Int`] variable: its value, or its default when unset.
pub fn int(get: Lookup<'_>, v: &Var) -> Result<u64, ConfigError> {
    let Kind::Int { default, min, max } = v.kind else {
        unreachable!("{} is not an integer variable", v.name)
    };
    let name = v.name;
    let Some(raw) = get(name) else {
        return Ok(default);
    };
    let n: u64 = raw.trim().parse().map_err(|_| {
        ConfigError::value(
            name,
            format!("{name} {raw:?} is not a non-negative integer"),
        )
    })?;
    if n < min || n > max {
        return Err(ConfigError::value(
            name,
            format!("{name} {n} is outside {min}..={max}"),
        ));
    }
    Ok(n)
}

/// A [`Kind::Switch`] variable.
pub fn switch(get: Lookup<'_>, v: &Var) -> Result<bool, ConfigError> {
    let Kind::Switch { default } = v.kind else {
        unreachable!("{} is not an on/off variable", v.name)
    };
    match get(v.name) {
        None => Ok(default),
        Some(raw) => parse_switch(v.name, &raw),
    }
}

/// `on`/`1`/`true`/`yes` or `off`/`0`/`false`/`no` (any case), the value of `name`.
pub fn parse_switch(name: &str, raw: &str) -> Result<bool, ConfigError> {
    let v = raw.trim().to_ascii_lowercase();
    match v.as_str() {
        "on" | "1" | "true" | "yes" => Ok(true),
        "off" | "0" | "false" | "no" => Ok(false),
        _ => Err(ConfigError::value(
            name,
            format!("{name} {v:?} is not on or off"),
        )),
    }
}

/// A [`Kind::Rate`] variable.
pub fn rate(get: Lookup<'_>, v: &Var) -> Result<f64, ConfigError> {
    let Kind::Rate { default, zero_ok } = v.kind else {
        unreachable!("{} is not a number variable", v.name)
    };
    let name = v.name;
    let Some(raw) = get(name) else {
        return Ok(default);
    };
    match raw.trim().parse::<f64>() {
        Ok(x) if x.is_finite() && (x > 0.0 || (zero_ok && x == 0.0)) => Ok(x),
        _ if zero_ok => Err(ConfigError::value(
            name,
            format!("{name} {raw:?} is not a non-negative number"),
        )),
        _ => Err(ConfigError::value(
            name,
            format!("{name} {raw:?} is not a positive number"),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const README: &str = include_str!("../../../../README.md");

    #[test]
    fn readme_tables_are_rendered_from_the_table() {
        let mut wrong = String::new();
        for section in [Section::Store, Section::Access, Section::Propagation] {
            let table = render(section);
            if !README.contains(&table) {
                wrong.push_str(&format!("{section:?} table, which should read:\n{table}\n"));
            }
        }
        assert!(
            wrong.is_empty(),
            "README.md differs from the variable table (config/vars.rs) in its\n{wrong}"
        );
    }

    #[test]
    fn readme_lists_only_known_variables() {
        let section = README
            .split("## Configuration")
            .nth(1)
            .and_then(|s| s.split("\n## ").next())
            .expect("README has a Configuration section");
        for line in section.lines() {
            let Some(rest) = line.strip_prefix("| `") else {
                continue;
            };
            let name = rest.split('`').next().unwrap_or("");
            assert!(
                VARS.iter().any(|v| v.name == name),
                "README documents {name}, which VARS does not list"
            );
        }
    }

    #[test]
    fn names_are_unique_and_defaults_in_range() {
        for (i, v) in VARS.iter().enumerate() {
            assert!(
                VARS[..i].iter().all(|w| w.name != v.name),
                "{} twice",
                v.name
            );
            if let Kind::Int { default, min, max } = v.kind {
                assert!(min <= default && default <= max, "{}", v.name);
            }
        }
    }
}
