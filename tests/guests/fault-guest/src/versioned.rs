//! The overwrite workload (`ver` mode), defined once for the guest and for the host that
//! checks it: each node owns a small pool of fields (chains × tasks) and overwrites them
//! again and again, one put after the other, each value carrying its version.
//!
//! * Put number `id` of a node writes field [`Pool::field`]`(id)`, picked pseudo-randomly,
//!   as version `1 + ` the number of earlier puts of that node to the same field
//!   ([`Pool::puts`] computes the whole sequence), so the version order of a field is the
//!   order in which its single writer made the puts.
//! * A value ([`value`]) is `<chain>/<task>/<version>/`, then a pattern seeded by those
//!   three, then the FNV-1a hash of everything before it (8 bytes, little-endian). Its
//!   size follows from the same three. [`decode`] tells a value that is exactly what a put
//!   of that version wrote from a torn one (bad checksum or length), a foreign one (it
//!   names another field) or garbage.
//! * Policies: a few chains are `stateless` for every put (a chain mixing `stateless`
//!   with copying puts would leave copies the global-only writes never update, see
//!   RELIABILITY.md); the other puts are `skylark`, `random` or `local`, name a
//!   destination, and some ask for `cleanup`.
//! * After some puts the guest reads one of its chains ([`Pool::read_after`]) and reports
//!   what every field held.

use crate::{hash, mix};

/// How a node's pool of overwritten fields is laid out.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Pool {
    /// Chains per node.
    pub chains: u64,
    /// Tasks per chain (`t0`, `t1`, ...).
    pub tasks: u64,
    /// Percentage of puts that ask for `cleanup`.
    pub cleanup_pct: u64,
    /// Percentage of puts followed by a read.
    pub read_pct: u64,
}

impl Default for Pool {
    fn default() -> Self {
        Pool {
            chains: 12,
            tasks: 3,
            cleanup_pct: 25,
            read_pct: 50,
        }
    }
}

/// One put of the `ver` mode.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VPut {
    pub id: u64,
    pub chain: String,
    pub task: String,
    /// 1 for the first put of this field.
    pub version: u64,
    /// `skylark`, `random`, `local` or `stateless`.
    pub policy: &'static str,
    /// Picks the destination: index `dest % n` of the guest's list of `n` nodes.
    pub dest: u64,
    pub cleanup: bool,
}

impl VPut {
    /// The bytes this put stores.
    pub fn value(&self) -> Vec<u8> {
        value(&self.chain, &self.task, self.version)
    }
}

/// Chain number `c` of `node` in run `run`.
pub fn chain_name(run: &str, node: &str, c: u64) -> String {
    format!("v-{run}-{node}-{c}")
}

/// True if every put of `chain` uses policy `stateless` (about one chain in ten).
pub fn stateless_chain(chain: &str) -> bool {
    mix(hash(&[chain, "stateless"])).is_multiple_of(10)
}

impl Pool {
    fn fields(&self) -> u64 {
        self.chains.max(1) * self.tasks.max(1)
    }

    fn h(run: &str, node: &str, id: u64) -> u64 {
        mix(hash(&[run, node, "ver"]) ^ mix(id))
    }

    /// The field (chain number, task number) put number `id` writes.
    pub fn field(&self, run: &str, node: &str, id: u64) -> (u64, u64) {
        let f = Self::h(run, node, id) % self.fields();
        (f / self.tasks.max(1), f % self.tasks.max(1))
    }

    /// Puts `0..end` of `node`, in order, with their versions.
    pub fn puts(&self, run: &str, node: &str, end: u64) -> Vec<VPut> {
        let mut versions = vec![0u64; self.fields() as usize];
        (0..end)
            .map(|id| {
                let (c, t) = self.field(run, node, id);
                let slot = &mut versions[(c * self.tasks.max(1) + t) as usize];
                *slot += 1;
                let h = Self::h(run, node, id);
                let chain = chain_name(run, node, c);
                let policy = if stateless_chain(&chain) {
                    "stateless"
                } else {
                    match (h >> 40) % 100 {
                        0..=79 => "skylark",
                        80..=91 => "random",
                        _ => "local",
                    }
                };
                VPut {
                    id,
                    chain,
                    task: format!("t{t}"),
                    version: *slot,
                    policy,
                    dest: mix(h ^ 0x5eed),
                    cleanup: (h >> 20) % 100 < self.cleanup_pct,
                }
            })
            .collect()
    }

    /// The chain number read right after put `id`, if that put is followed by a read.
    pub fn read_after(&self, run: &str, node: &str, id: u64) -> Option<u64> {
        let h = mix(Self::h(run, node, id) ^ 0x7ead);
        (h % 100 < self.read_pct).then(|| (h >> 8) % self.chains.max(1))
    }
}

/// Values are never larger than this.
pub const MAX_VALUE: usize = 64 * 1024;

/// The size of a value, from its field and version: 70 % up to 1 KiB, 25 % up to
/// 16 KiB, 5 % up to [`MAX_VALUE`]; never below 64 bytes (room for the header).
fn size_of(chain: &str, task: &str, version: u64) -> usize {
    let h = mix(hash(&[chain, task]) ^ mix(version));
    let x = h >> 8;
    (match h % 100 {
        0..=69 => 64 + x % 961,
        70..=94 => 1024 + x % (15 * 1024),
        _ => 16 * 1024 + x % (MAX_VALUE as u64 - 16 * 1024 + 1),
    }) as usize
}

/// The bytes version `version` of field `task` of `chain` holds.
pub fn value(chain: &str, task: &str, version: u64) -> Vec<u8> {
    let head = format!("{chain}/{task}/{version}/");
    let size = size_of(chain, task, version).max(head.len() + 8);
    let mut v = head.into_bytes();
    let body = size - v.len() - 8;
    v.extend(probe::pattern(
        body,
        hash(&[chain, task, &version.to_string()]),
    ));
    let sum = fnv(&v);
    v.extend_from_slice(&sum.to_le_bytes());
    v
}

fn fnv(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in bytes {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

/// What a stored value turned out to be.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Exactly version `n` of the field it was read from.
    Version(u64),
    /// Its checksum or its length does not match: part of a value, or mixed bytes.
    Torn,
    /// A whole value of another field.
    Foreign(String),
    /// No header at all.
    Garbage,
}

impl Verdict {
    /// The one-word form the guest prints (`7`, `torn`, `foreign`, `garbage`).
    pub fn word(&self) -> String {
        match self {
            Verdict::Version(n) => n.to_string(),
            Verdict::Torn => "torn".into(),
            Verdict::Foreign(_) => "foreign".into(),
            Verdict::Garbage => "garbage".into(),
        }
    }

    /// Parses [`Verdict::word`] (a foreign value's origin is not printed).
    pub fn parse(word: &str) -> Verdict {
        match word {
            "torn" => Verdict::Torn,
            "foreign" => Verdict::Foreign(String::new()),
            w => w.parse().map_or(Verdict::Garbage, Verdict::Version),
        }
    }
}

/// Decodes `bytes` read from field `task` of `chain`.
pub fn decode(chain: &str, task: &str, bytes: &[u8]) -> Verdict {
    let mut parts = bytes.splitn(4, |b| *b == b'/');
    let (Some(c), Some(t), Some(v), Some(_)) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Verdict::Garbage;
    };
    let (Ok(c), Ok(t), Some(version)) = (
        std::str::from_utf8(c),
        std::str::from_utf8(t),
        std::str::from_utf8(v)
            .ok()
            .and_then(|v| v.parse::<u64>().ok()),
    ) else {
        return Verdict::Garbage;
    };
    if c.len() > 200 || t.len() > 200 {
        return Verdict::Garbage;
    }
    let want = value(c, t, version);
    if bytes != want.as_slice() {
        return Verdict::Torn;
    }
    if c != chain || t != task {
        return Verdict::Foreign(format!("{c}/{t}/{version}"));
    }
    Verdict::Version(version)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_count_the_puts_of_each_field_in_order() {
        let pool = Pool::default();
        let puts = pool.puts("r", "n", 500);
        let mut seen = std::collections::HashMap::new();
        for p in &puts {
            let v = seen.entry((p.chain.clone(), p.task.clone())).or_insert(0);
            *v += 1;
            assert_eq!(p.version, *v);
        }
        assert!(
            seen.len() as u64 == pool.chains * pool.tasks,
            "every field is used"
        );
        assert!(seen.values().any(|n| *n > 5), "fields are overwritten");
        // A prefix of the sequence is the same sequence.
        assert_eq!(pool.puts("r", "n", 100)[..], puts[..100]);
    }

    #[test]
    fn values_decode_to_their_version_and_nothing_else() {
        let v = value("c", "t0", 7);
        assert_eq!(decode("c", "t0", &v), Verdict::Version(7));
        assert_eq!(
            decode("c", "t1", &v),
            Verdict::Foreign("c/t0/7".into()),
            "a whole value of another field"
        );
        let mut torn = v.clone();
        torn.truncate(v.len() - 1);
        assert_eq!(decode("c", "t0", &torn), Verdict::Torn);
        let mut flipped = v.clone();
        let last = flipped.len() - 9;
        flipped[last] ^= 1;
        assert_eq!(decode("c", "t0", &flipped), Verdict::Torn);
        assert_eq!(decode("c", "t0", b"hello"), Verdict::Garbage);
        assert_ne!(value("c", "t0", 8), v);
        for w in ["7", "torn", "foreign", "garbage"] {
            assert_eq!(Verdict::parse(w).word(), w);
        }
    }

    #[test]
    fn sizes_are_spread_and_bounded() {
        let sizes: Vec<usize> = (1..2000).map(|v| value("c", "t", v).len()).collect();
        assert!(sizes.iter().all(|s| (64..=MAX_VALUE).contains(s)));
        assert!(sizes.iter().any(|s| *s < 1024));
        assert!(sizes.iter().any(|s| *s > 16 * 1024));
    }

    #[test]
    fn policies_cleanup_and_reads_are_mixed() {
        let pool = Pool {
            chains: 40,
            ..Pool::default()
        };
        let puts = pool.puts("r", "n", 4000);
        for policy in ["skylark", "random", "local", "stateless"] {
            assert!(puts.iter().any(|p| p.policy == policy), "{policy}");
        }
        assert!(puts.iter().any(|p| p.cleanup));
        // A chain is stateless for all its puts or for none.
        for p in &puts {
            assert_eq!(p.policy == "stateless", stateless_chain(&p.chain));
        }
        let reads = (0..4000)
            .filter(|id| pool.read_after("r", "n", *id).is_some())
            .count();
        assert!((1500..2500).contains(&reads), "{reads}");
    }
}
