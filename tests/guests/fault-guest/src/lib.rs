//! What the fault-injection guest puts, defined once for the guest (`src/main.rs`) and for
//! the host that checks the stores afterwards (`skylark_experiment::faults`). A put is named by
//! its run, its node and a number; its chain, task, size, policy, destination and bytes
//! all follow from those, so the host can recompute every byte a put wrote.
//!
//! * [`Put`]: one field per put (`puts` mode). Consecutive numbers share a chain
//!   ([`Shape::tasks_per_chain`] tasks each), sizes are spread from 16 bytes to
//!   [`Shape::max_size`], policies are mostly `skylark`, some `random`, `local` and
//!   `stateless`.
//! * [`BigPut`]: several large fields in one `put_many` (`big` mode), for the check that
//!   a SIGKILLed writer never leaves part of a bundle.
//! * [`versioned`]: fields overwritten many times, each value carrying its version (`ver`
//!   mode), for the checks that the last acknowledged version wins everywhere.
//! * [`cas`]: shared counters incremented by compare-and-swap loops with idempotency
//!   keys (`cas` mode), for the check that no update is lost or applied twice.

pub mod cas;
pub mod versioned;

/// How the numbered puts of the `puts` mode are laid out.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Shape {
    /// Consecutive puts of a node that go to one chain, as tasks `t0`, `t1`, ...
    pub tasks_per_chain: u64,
    /// Largest value in bytes.
    pub max_size: usize,
}

impl Default for Shape {
    fn default() -> Self {
        Shape {
            tasks_per_chain: 3,
            max_size: 128 * 1024,
        }
    }
}

/// One put of the `puts` mode.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Put {
    pub id: u64,
    pub chain: String,
    pub task: String,
    pub size: usize,
    /// `skylark`, `random`, `local` or `stateless`.
    pub policy: &'static str,
    /// Picks the destination: index `dest % n` of the guest's list of `n` nodes.
    pub dest: u64,
}

impl Put {
    /// Put number `id` of node `node` in run `run`.
    pub fn new(run: &str, node: &str, id: u64, shape: Shape) -> Put {
        let per_chain = shape.tasks_per_chain.max(1);
        let h = mix(hash(&[run, node]) ^ mix(id));
        let policy = match (h >> 40) % 100 {
            0..=79 => "skylark",
            80..=89 => "random",
            90..=94 => "local",
            _ => "stateless",
        };
        Put {
            id,
            chain: format!("f-{run}-{node}-{}", id / per_chain),
            task: format!("t{}", id % per_chain),
            size: size_for(h, shape.max_size),
            policy,
            dest: mix(h ^ 0x5eed),
        }
    }

    /// The bytes this put stores.
    pub fn value(&self) -> Vec<u8> {
        value(&self.chain, &self.task, self.size)
    }
}

/// One put of the `big` mode: `fields` fields `f0`, `f1`, ... of chain
/// `k-<run>-<node>-<id>`, each between half and one and a half times `size` bytes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BigPut {
    pub id: u64,
    pub chain: String,
    /// (task, size) of each field.
    pub fields: Vec<(String, usize)>,
}

impl BigPut {
    pub fn new(run: &str, node: &str, id: u64, fields: usize, size: usize) -> BigPut {
        let chain = format!("k-{run}-{node}-{id}");
        let fields = (0..fields)
            .map(|i| {
                let h = mix(hash(&[&chain]) ^ mix(i as u64));
                let spread = (h % (size as u64 + 1)) as usize;
                (format!("f{i}"), size / 2 + spread)
            })
            .collect();
        BigPut { id, chain, fields }
    }

    /// The bytes of every field, in order.
    pub fn values(&self) -> Vec<Vec<u8>> {
        self.fields
            .iter()
            .map(|(task, size)| value(&self.chain, task, *size))
            .collect()
    }
}

/// The bytes field `task` of `chain` holds when it is `size` bytes long: a pseudo-random
/// pattern seeded by the chain and task, so that no two fields are alike.
pub fn value(chain: &str, task: &str, size: usize) -> Vec<u8> {
    probe::pattern(size, hash(&[chain, task]))
}

/// A size drawn from `h`: 70 % up to 1 KiB, 25 % up to 32 KiB, 5 % up to 256 KiB, never
/// above `max`.
/// (Computed in `u64`: `usize` is 32 bits in the guest and 64 on the host.)
fn size_for(h: u64, max: usize) -> usize {
    let x = h >> 8;
    let size = match h % 100 {
        0..=69 => 16 + x % 1009,
        70..=94 => 1024 + x % (31 * 1024),
        _ => 32 * 1024 + x % (224 * 1024 + 1),
    };
    size.min(max.max(1) as u64) as usize
}

/// SplitMix64's finalizer: spreads the bits of `x`.
pub fn mix(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// FNV-1a over `parts`, each followed by a 0 byte (so `["ab", "c"]` differs from
/// `["a", "bc"]`).
pub fn hash(parts: &[&str]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for part in parts {
        for b in part.bytes().chain(std::iter::once(0)) {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x0000_0100_0000_01b3);
        }
    }
    h
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn puts_are_determined_by_their_number() {
        let shape = Shape::default();
        assert_eq!(Put::new("r", "n", 7, shape), Put::new("r", "n", 7, shape));
        let (a, b) = (Put::new("r", "n", 3, shape), Put::new("r", "n", 4, shape));
        assert_eq!((a.chain.as_str(), a.task.as_str()), ("f-r-n-1", "t0"));
        assert_eq!((b.chain.as_str(), b.task.as_str()), ("f-r-n-1", "t1"));
        assert_ne!(a.value(), b.value());
        assert_ne!(Put::new("r", "m", 3, shape).value(), a.value());
    }

    #[test]
    fn sizes_and_policies_are_spread_and_bounded() {
        let shape = Shape {
            tasks_per_chain: 1,
            max_size: 100_000,
        };
        let puts: Vec<Put> = (0..2000).map(|i| Put::new("r", "n", i, shape)).collect();
        assert!(puts.iter().all(|p| (16..=100_000).contains(&p.size)));
        assert!(puts.iter().any(|p| p.size < 1024));
        assert!(puts.iter().any(|p| p.size > 32 * 1024));
        for policy in ["skylark", "random", "local", "stateless"] {
            assert!(puts.iter().any(|p| p.policy == policy), "{policy}");
        }
    }

    #[test]
    fn big_puts_have_distinct_fields_around_the_size() {
        let big = BigPut::new("r", "n", 1, 3, 1000);
        assert_eq!(big.fields.len(), 3);
        assert!(big.fields.iter().all(|(_, s)| (500..=1500).contains(s)));
        let values = big.values();
        assert_ne!(values[0], values[1]);
        assert_eq!(values[2].len(), big.fields[2].1);
    }

    #[test]
    fn hashing_separates_parts() {
        assert_ne!(hash(&["ab", "c"]), hash(&["a", "bc"]));
    }
}
