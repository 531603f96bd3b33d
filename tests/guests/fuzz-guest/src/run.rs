//! The fuzz loop: picks an import and arguments, works out from ABI.md what the host may
//! answer, calls the real import, and checks the answer, the last-error message and
//! guest memory.
//!
//! For every call the model lists the rules the arguments break (each with its status;
//! "maybe" when the bytes behind a pointer are unknown to the guest) and the outcomes a
//! valid call may have. A call passes when its status is one of the broken rules', or,
//! if none is broken for sure, one of the outcomes (the store statuses 20-29 included
//! for calls that reach the store). Besides:
//! - after every call, `skylark_last_error` (with a valid buffer) returns `Ok` and a
//!   message that is empty after `Ok`, starts with the import's name and says more
//!   after any other status, and is unchanged by `skylark_version` and by a successful
//!   `skylark_last_error`;
//! - the host wrote nothing in the arena outside the spans the status allows it to
//!   write (the result buffer up to the result's length, the 8-byte result record, the
//!   message and its length, `skylark_put_v2`'s versions after `Ok` or
//!   `ConditionFailed`), and never wrote the data region; versions after `Ok` are not 0;
//! - result records hold what the ABI says (`len`, `handle` as predicted by a mirror of
//!   the host's pending results; 0 after `Ok`), and a delivered bundle decodes, names
//!   the requested chain and, when propagation is off, holds exactly the fields this
//!   guest stored in it (a mirror of the store; a failed put changes nothing).

use crate::gen;
use crate::host::{self, Import};
use crate::regions::{inside, memory_end, Content, Regions, ARENA, BIG, MSG};
use crate::rng::Rng;
use skylark_abi::layout::{FieldRef, GetResult};
use skylark_abi::wire::{self, Bundle, GetOptions, Policy, PutOptions, Tier};
use skylark_abi::{Status, ABI_VERSION};
use std::collections::{BTreeMap, VecDeque};

/// The host's options size limit: above it, `InvalidOptions` is possible but not required.
const MAX_OPTIONS_BYTES: u32 = 64 * 1024;

pub struct Config {
    pub seed: u64,
    pub calls: u64,
    pub max_value_bytes: u32,
    pub max_fields: u32,
    pub max_pending: usize,
    /// Propagation is off in this process: this guest is the only writer of its chains
    /// and every read is node-local, so bundle contents can be checked exactly.
    pub mirror: bool,
    /// Prefix of this guest's chain ids.
    pub prefix: String,
}

/// Fields of a bundle as the guest expects them; `None` = written, bytes unknown.
type Fields = BTreeMap<String, Option<Vec<u8>>>;

#[derive(Default)]
struct ChainState {
    fields: Fields,
    /// A write may or may not have happened (a store error): contents unknown until the
    /// next successful read.
    uncertain: bool,
}

struct PendingResult {
    handle: u32,
    len: u32,
    chain: Option<String>,
    expect: Option<Fields>,
}

/// A mirror of the host's pending results of this instance.
struct Pending {
    max: usize,
    next: u32,
    items: VecDeque<PendingResult>,
}

impl Pending {
    fn find(&self, handle: u32) -> Option<&PendingResult> {
        self.items.iter().find(|p| p.handle == handle)
    }

    fn remove(&mut self, handle: u32) -> Option<PendingResult> {
        let i = self.items.iter().position(|p| p.handle == handle)?;
        self.items.remove(i)
    }

    fn insert(&mut self, p: PendingResult) {
        while self.items.len() >= self.max {
            self.items.pop_front();
        }
        self.next = self.next.checked_add(1).unwrap_or(1);
        self.items.push_back(p);
    }
}

/// What the model allows for one call.
struct Expect {
    broken: Vec<Status>,
    maybe: Vec<Status>,
    outcomes: Vec<Status>,
    store: bool,
}

impl Expect {
    fn new(outcomes: &[Status], store: bool) -> Expect {
        Expect {
            broken: Vec::new(),
            maybe: Vec::new(),
            outcomes: outcomes.to_vec(),
            store,
        }
    }

    fn allows(&self, code: i32) -> bool {
        let Some(s) = Status::from_code(code) else {
            return false;
        };
        if self.broken.contains(&s) || self.maybe.contains(&s) {
            return true;
        }
        self.broken.is_empty()
            && (self.outcomes.contains(&s) || self.store && (20..30).contains(&code))
    }
}

enum Post {
    Version,
    Put {
        chain: Option<String>,
        fields: Vec<(String, Option<Vec<u8>>)>,
        stateless: bool,
        /// `skylark_put_v2`: where its versions go (ptr, len).
        versions: Option<(u32, u32)>,
    },
    Get {
        chain: Option<String>,
        buf: u32,
        cap: u32,
        res: u32,
    },
    Take {
        handle: u32,
        buf: u32,
        res: u32,
    },
    Drop {
        handle: u32,
    },
    LastError {
        buf: u32,
        cap: u32,
        len_ptr: u32,
    },
}

struct Call {
    import: Import,
    args: [u32; 8],
    expect: Expect,
    post: Post,
}

/// Counts per import and status, and the violations found.
pub struct Tally {
    pub calls: [u64; 8],
    pub status: [BTreeMap<i32, u64>; 8],
    pub checks: u64,
    pub violations: u64,
    pub examples: Vec<String>,
}

fn id_ok(b: &[u8]) -> bool {
    (1..=128).contains(&b.len())
        && b.iter()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'.' | b'_' | b'-'))
}

fn overlaps(a: (u32, u32), b: (u32, u32)) -> bool {
    let (a0, a1) = (u64::from(a.0), u64::from(a.0) + u64::from(a.1));
    let (b0, b1) = (u64::from(b.0), u64::from(b.0) + u64::from(b.1));
    a.1 > 0 && b.1 > 0 && a0 < b1 && b0 < a1
}

pub struct Fuzzer {
    cfg: Config,
    rng: Rng,
    mem: Regions,
    cursor: usize,
    snapshot: Vec<u8>,
    data_sum: u64,
    pending: Pending,
    store: BTreeMap<String, ChainState>,
    /// A put succeeded with an id the guest could not read (memory it does not control):
    /// chains it has not read since may hold anything.
    unseen_uncertain: bool,
    /// The last-error message as last read (a prefix if longer than the check buffer)
    /// and its full length.
    message: Vec<u8>,
    message_len: u32,
    chains: Vec<String>,
    tasks: Vec<String>,
    call_no: u64,
    pub tally: Tally,
}

fn checksum(b: &[u8]) -> u64 {
    b.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, x| {
        (h ^ u64::from(*x)).wrapping_mul(0x100_0000_01b3)
    })
}

impl Fuzzer {
    pub fn new(cfg: Config) -> Fuzzer {
        let mut rng = Rng::new(cfg.seed);
        let mem = Regions::new(&mut rng);
        let data_sum = mem.data.with(0, mem.data.len, checksum);
        let chains = (0..8).map(|i| format!("{}-{i}", cfg.prefix)).collect();
        let tasks = (0..16).map(|i| format!("t{i}")).collect();
        let max_pending = cfg.max_pending;
        Fuzzer {
            cfg,
            rng,
            mem,
            cursor: 0,
            snapshot: vec![0; ARENA],
            data_sum,
            pending: Pending {
                max: max_pending.max(1),
                next: 1,
                items: VecDeque::new(),
            },
            store: BTreeMap::new(),
            unseen_uncertain: false,
            message: Vec::new(),
            message_len: 0,
            chains,
            tasks,
            call_no: 0,
            tally: Tally {
                calls: [0; 8],
                status: Default::default(),
                checks: 0,
                violations: 0,
                examples: Vec::new(),
            },
        }
    }

    fn violation(&mut self, what: String) {
        self.tally.violations += 1;
        if self.tally.examples.len() < 20 {
            self.tally.examples.push(format!(
                "seed {} call {}: {what}",
                self.cfg.seed, self.call_no
            ));
        }
    }

    /// Runs the configured number of calls.
    pub fn run(&mut self) {
        for n in 0..self.cfg.calls {
            self.call_no = n;
            let call = loop {
                let end = memory_end();
                let c = self.generate(end);
                // The model and the arguments assume this memory size: retry if building
                // them grew memory.
                if memory_end() == end {
                    break c;
                }
            };
            self.mem.arena.snapshot(&mut self.snapshot);
            let code = host::call(call.import, &call.args);
            self.tally.calls[call.import.index()] += 1;
            *self.tally.status[call.import.index()]
                .entry(code)
                .or_insert(0) += 1;
            self.verify(&call, code);
        }
        if self.mem.data.with(0, self.mem.data.len, checksum) != self.data_sum {
            self.violation("the data region changed: the host wrote into it".into());
        }
    }

    // ----- argument generation -------------------------------------------------------

    /// Writes `bytes` into the arena, usually after the previous input, sometimes at a
    /// random place (so inputs overlap); returns (ptr, len).
    fn place(&mut self, bytes: &[u8]) -> (u32, u32) {
        let n = bytes.len().min(ARENA);
        let off = self.reserve_at(n);
        self.mem.arena.write(off, &bytes[..n]);
        (self.mem.arena.base() + off as u32, n as u32)
    }

    fn reserve_at(&mut self, n: usize) -> usize {
        if self.rng.chance(8) {
            return self.rng.index(ARENA - n + 1);
        }
        let gap = self.rng.index(8);
        if self.cursor + gap + n > ARENA {
            self.cursor = 0;
        }
        let off = (self.cursor + gap).min(ARENA - n);
        self.cursor = off + n;
        off
    }

    /// An input argument holding `bytes`; when `mutate`, sometimes pointer or length
    /// are replaced by edge values or the span is moved or stretched.
    fn input(&mut self, bytes: &[u8], end: u64, mutate: bool) -> (u32, u32) {
        let (mut p, mut l) = self.place(bytes);
        if mutate && self.rng.chance(35) {
            match self.rng.below(7) {
                0 => p = gen::edge_ptr(&mut self.rng, end),
                1 => l = gen::edge_len(&mut self.rng, end),
                2 => {
                    p = gen::edge_ptr(&mut self.rng, end);
                    l = gen::edge_len(&mut self.rng, end);
                }
                3 => l = l.wrapping_add(1 + self.rng.u32() % 16),
                4 => l = l.saturating_sub(1 + self.rng.u32() % 4),
                5 => {
                    let n = self.rng.index(256);
                    p = self.mem.data.base() + self.rng.index(self.mem.data.len - n) as u32;
                    l = n as u32;
                }
                _ => l = 0,
            }
        }
        (p, l)
    }

    fn chain_bytes(&mut self, mutate: bool) -> Vec<u8> {
        if mutate && self.rng.chance(25) {
            gen::bad_id(&mut self.rng)
        } else {
            self.chains[self.rng.index(self.chains.len())]
                .as_bytes()
                .to_vec()
        }
    }

    fn task_bytes(&mut self, mutate: bool) -> Vec<u8> {
        if mutate && self.rng.chance(25) {
            gen::bad_id(&mut self.rng)
        } else {
            self.tasks[self.rng.index(self.tasks.len())]
                .as_bytes()
                .to_vec()
        }
    }

    fn value_arg(&mut self, end: u64, mutate: bool, small: bool) -> (u32, u32) {
        let (mut p, mut l) = match self.rng.below(10) {
            0..=5 => {
                let n = self.rng.index(if small { 64 } else { 300 });
                let v = self.rng.bytes(n);
                self.place(&v)
            }
            6..=7 => {
                let n = self.rng.index(if small { 1024 } else { 8192 });
                let off = self.rng.index(self.mem.data.len - n);
                (self.mem.data.base() + off as u32, n as u32)
            }
            8 if !small => {
                let n = self.rng.index(48 * 1024);
                let off = self.rng.index(self.mem.data.len - n);
                (self.mem.data.base() + off as u32, n as u32)
            }
            _ => (self.rng.u32(), 0),
        };
        if mutate && self.rng.chance(30) {
            match self.rng.below(3) {
                0 => p = gen::edge_ptr(&mut self.rng, end),
                1 => l = gen::edge_len(&mut self.rng, end),
                _ => l = self.cfg.max_value_bytes.wrapping_add(self.rng.u32() % 3),
            }
        }
        (p, l)
    }

    fn options_arg(&mut self, blob: Vec<u8>, end: u64, mutate: bool) -> (u32, u32) {
        let blob = if mutate && self.rng.chance(40) {
            gen::bad_options(&mut self.rng, blob)
        } else {
            blob
        };
        if blob.is_empty() && !mutate {
            return (self.rng.u32(), 0);
        }
        self.input(&blob, end, mutate)
    }

    /// An output buffer (ptr, cap) the host may be given: in the arena, in `big`, or
    /// ending outside memory.
    fn out_buf(&mut self, end: u64) -> (u32, u32) {
        let (p, c) = match self.rng.below(10) {
            0..=3 => {
                let cap = [0usize, 1, 8, 64, 512, 2048, 4096][self.rng.index(7)];
                let off = self.reserve_at(cap);
                (self.mem.arena.base() + off as u32, cap as u32)
            }
            4..=5 => {
                let off = self.rng.index(64);
                (self.mem.big.base() + off as u32, (BIG - off) as u32)
            }
            6 => (
                gen::edge_ptr(&mut self.rng, end),
                gen::edge_len(&mut self.rng, end),
            ),
            7 => {
                let off = self.rng.index(ARENA);
                (
                    self.mem.arena.base() + off as u32,
                    u32::MAX - self.rng.u32() % 64,
                )
            }
            8 => (self.rng.u32(), 0),
            _ => {
                let k = 1 + self.rng.u32() % 64;
                ((end as u32).saturating_sub(k), k + 1 + self.rng.u32() % 64)
            }
        };
        if self.mem.safe_output(end, p, c) {
            (p, c)
        } else {
            (end.min(u64::from(u32::MAX)) as u32, c.max(1))
        }
    }

    /// A result record pointer (8 bytes) the host may be given.
    fn out_record(&mut self, end: u64, buf: (u32, u32)) -> u32 {
        let p = match self.rng.below(10) {
            0..=6 => {
                let off = self.reserve_at(GetResult::SIZE);
                self.mem.arena.base() + off as u32
            }
            7 if buf.1 >= 8 => buf.0.wrapping_add(self.rng.u32() % (buf.1 - 7).min(4096)),
            8 => gen::edge_ptr(&mut self.rng, end),
            _ => (end.min(u64::from(u32::MAX)) as u32).saturating_sub(self.rng.u32() % 8),
        };
        if self.mem.safe_output(end, p, 8) {
            p
        } else {
            end.min(u64::from(u32::MAX)) as u32
        }
    }

    fn handle(&mut self) -> u32 {
        if !self.pending.items.is_empty() && self.rng.chance(60) {
            return self.pending.items[self.rng.index(self.pending.items.len())].handle;
        }
        let next = self.pending.next;
        match self.rng.below(6) {
            0 => 0,
            1 => next,
            2 => next.wrapping_sub(1 + self.rng.u32() % 8),
            3 => u32::MAX,
            4 => self.rng.u32(),
            _ => 1,
        }
    }

    fn generate(&mut self, end: u64) -> Call {
        self.cursor = self.rng.index(512);
        let mutate = self.rng.chance(55);
        match self.rng.below(95) {
            0..=24 => self.gen_put(end, mutate),
            25..=34 => self.gen_put_many(end, mutate, false),
            35..=39 => self.gen_put_many(end, mutate, true),
            40..=64 => self.gen_get(end, mutate),
            65..=74 => self.gen_take(end),
            75..=79 => {
                let handle = self.handle();
                let mut e = Expect::new(&[], false);
                if self.pending.find(handle).is_some() {
                    e.outcomes.push(Status::Ok);
                } else {
                    e.broken.push(Status::UnknownHandle);
                }
                Call {
                    import: Import::DropResult,
                    args: [handle, 0, 0, 0, 0, 0, 0, 0],
                    expect: e,
                    post: Post::Drop { handle },
                }
            }
            80..=91 => self.gen_last_error(end),
            _ => Call {
                import: Import::Version,
                args: [0; 8],
                expect: Expect::new(&[], false),
                post: Post::Version,
            },
        }
    }

    // ----- the model -----------------------------------------------------------------

    fn id_rule(&self, e: &mut Expect, end: u64, p: u32, l: u32) -> Option<String> {
        match self.mem.content(end, p, l) {
            Content::Outside => {
                e.broken.push(Status::InvalidPointer);
                None
            }
            Content::Known(b) if id_ok(&b) => String::from_utf8(b).ok(),
            Content::Known(_) => {
                e.broken.push(Status::InvalidId);
                None
            }
            Content::Unknown => {
                e.maybe.push(Status::InvalidId);
                None
            }
        }
    }

    /// `Some(bytes if known)` when the value is acceptable.
    fn value_rule(&self, e: &mut Expect, end: u64, p: u32, l: u32) -> Option<Option<Vec<u8>>> {
        let too_large = l > self.cfg.max_value_bytes;
        if too_large {
            e.broken.push(Status::ValueTooLarge);
        }
        match self.mem.content(end, p, l) {
            Content::Outside => {
                e.broken.push(Status::InvalidPointer);
                None
            }
            _ if too_large => None,
            Content::Known(b) => Some(Some(b)),
            Content::Unknown => Some(None),
        }
    }

    /// Applies the options rules; returns the decoded options if they are acceptable.
    fn options_rule<T: serde::de::DeserializeOwned + Default>(
        &self,
        e: &mut Expect,
        end: u64,
        p: u32,
        l: u32,
        valid: impl Fn(&T) -> bool,
    ) -> Option<T> {
        if l > MAX_OPTIONS_BYTES {
            e.maybe.push(Status::InvalidOptions);
        }
        match self.mem.content(end, p, l) {
            Content::Outside => {
                e.broken.push(Status::InvalidPointer);
                None
            }
            Content::Unknown => {
                e.maybe.push(Status::InvalidOptions);
                None
            }
            Content::Known(b) => match wire::decode_options::<T>(&b) {
                Ok(o) if valid(&o) => Some(o),
                _ => {
                    e.broken.push(Status::InvalidOptions);
                    None
                }
            },
        }
    }

    fn put_options_rule(&self, e: &mut Expect, end: u64, p: u32, l: u32) -> bool {
        let o = self.options_rule::<PutOptions>(e, end, p, l, |o| {
            o.destination.as_deref().is_none_or(|d| id_ok(d.as_bytes()))
                && (o.destination.is_none() || o.destinations.is_empty())
                && o.destinations.len() <= skylark_abi::wire::MAX_DESTINATIONS
                && o.destinations.iter().all(|d| id_ok(d.as_bytes()))
                && o.min_bandwidth_mbps
                    .is_none_or(|b| b.is_finite() && b >= 0.0)
                && !(o.if_version.is_some() && o.if_absent)
                && o.idempotency_key
                    .as_deref()
                    .is_none_or(|k| id_ok(k.as_bytes()))
        });
        o.is_some_and(|o| o.policy == Some(Policy::Stateless))
    }

    fn get_options_rule(&self, e: &mut Expect, end: u64, p: u32, l: u32) {
        self.options_rule::<GetOptions>(e, end, p, l, |o| {
            o.from.as_deref().is_none_or(|d| id_ok(d.as_bytes()))
                && o.require.len() <= skylark_abi::wire::MAX_REQUIRE
                && o.require.iter().all(|t| id_ok(t.as_bytes()))
        });
    }

    fn output_rule(e: &mut Expect, end: u64, buf: u32, cap: u32, res: u32) {
        if !inside(end, res, GetResult::SIZE as u32) {
            e.broken.push(Status::InvalidPointer);
        }
        if !inside(end, buf, cap) {
            e.broken.push(Status::InvalidPointer);
        }
    }

    fn gen_put(&mut self, end: u64, mutate: bool) -> Call {
        let chain = self.chain_bytes(mutate);
        let task = self.task_bytes(mutate);
        let (cp, cl) = self.input(&chain, end, mutate);
        let (tp, tl) = self.input(&task, end, mutate);
        let (vp, vl) = self.value_arg(end, mutate, false);
        let blob = if self.rng.chance(50) {
            Vec::new()
        } else {
            gen::put_options(&mut self.rng)
        };
        let (op, ol) = self.options_arg(blob, end, mutate);
        let mut e = Expect::new(&[Status::Ok], true);
        let chain = self.id_rule(&mut e, end, cp, cl);
        let task = self.id_rule(&mut e, end, tp, tl);
        let value = self.value_rule(&mut e, end, vp, vl);
        let stateless = self.put_options_rule(&mut e, end, op, ol);
        Call {
            import: Import::Put,
            args: [cp, cl, tp, tl, vp, vl, op, ol],
            expect: e,
            post: Post::Put {
                chain,
                fields: task.zip(value).into_iter().collect(),
                stateless,
                versions: None,
            },
        }
    }

    /// A versions record pointer for `count` versions (`skylark_put_v2`), which the host
    /// may write: in the arena, at an edge, or ending outside memory.
    fn out_versions(&mut self, end: u64, count: u32) -> u32 {
        let len = count.saturating_mul(8);
        let outside = end.min(u64::from(u32::MAX)) as u32;
        let p = match self.rng.below(10) {
            0..=6 => {
                let off = self.reserve_at((len as usize).min(ARENA));
                self.mem.arena.base() + off as u32
            }
            7 => gen::edge_ptr(&mut self.rng, end),
            _ => outside.saturating_sub(self.rng.u32() % 16),
        };
        if self.mem.safe_output(end, p, len) {
            p
        } else {
            outside
        }
    }

    /// `skylark_put_many`, or with `v2` `skylark_put_v2` (the same, and a versions record).
    fn gen_put_many(&mut self, end: u64, mutate: bool, v2: bool) -> Call {
        let chain = self.chain_bytes(mutate);
        let (cp, cl) = self.input(&chain, end, mutate);
        let n = 1 + self.rng.index(self.cfg.max_fields.clamp(1, 12) as usize);
        let mut table = Vec::with_capacity(n * FieldRef::SIZE);
        let mut last_task = (0, 0);
        // Distinct tasks, unless a mutation repeats one.
        let first = self.rng.index(self.tasks.len());
        for i in 0..n {
            let (tp, tl) = if mutate && last_task.1 > 0 && self.rng.chance(10) {
                last_task
            } else {
                let t = if mutate && self.rng.chance(25) {
                    gen::bad_id(&mut self.rng)
                } else {
                    self.tasks[(first + i) % self.tasks.len()]
                        .as_bytes()
                        .to_vec()
                };
                self.input(&t, end, mutate)
            };
            last_task = (tp, tl);
            let (vp, vl) = self.value_arg(end, mutate, true);
            let r = FieldRef {
                task_ptr: tp,
                task_len: tl,
                value_ptr: vp,
                value_len: vl,
            };
            table.extend(r.to_bytes());
        }
        let (mut tbl, _) = self.place(&table);
        let mut count = n as u32;
        if mutate && self.rng.chance(30) {
            match self.rng.below(6) {
                0 => count = 0,
                1 => count = self.cfg.max_fields.wrapping_add(1),
                2 => count = count.wrapping_add(1),
                3 => count = gen::edge_len(&mut self.rng, end),
                4 => tbl = gen::edge_ptr(&mut self.rng, end),
                _ => tbl = tbl.wrapping_add(1 + self.rng.u32() % 15),
            }
        }
        let blob = if self.rng.chance(50) {
            Vec::new()
        } else {
            gen::put_options(&mut self.rng)
        };
        let (op, ol) = self.options_arg(blob, end, mutate);

        let mut e = Expect::new(&[Status::Ok], true);
        let chain = self.id_rule(&mut e, end, cp, cl);
        let mut fields: Vec<(String, Option<Vec<u8>>)> = Vec::new();
        let count_ok = count != 0 && count <= self.cfg.max_fields;
        if !count_ok {
            e.broken.push(Status::TooManyFields);
        }
        let table_len = u64::from(count) * FieldRef::SIZE as u64;
        match u32::try_from(table_len).map(|l| self.mem.content(end, tbl, l)) {
            Err(_) | Ok(Content::Outside) => e.broken.push(Status::InvalidPointer),
            Ok(Content::Unknown) => e.maybe.extend([
                Status::InvalidPointer,
                Status::InvalidId,
                Status::DuplicateField,
                Status::ValueTooLarge,
            ]),
            Ok(Content::Known(t)) if count_ok => {
                let mut unknown_task = false;
                for rec in t.chunks_exact(FieldRef::SIZE) {
                    let mut raw = [0u8; FieldRef::SIZE];
                    raw.copy_from_slice(rec);
                    let f = FieldRef::from_bytes(&raw);
                    let task = self.id_rule(&mut e, end, f.task_ptr, f.task_len);
                    if task.is_none()
                        && matches!(
                            self.mem.content(end, f.task_ptr, f.task_len),
                            Content::Unknown
                        )
                    {
                        unknown_task = true;
                    }
                    if let Some(t) = &task {
                        if fields.iter().any(|(seen, _)| seen == t) {
                            e.broken.push(Status::DuplicateField);
                        }
                    }
                    let value = self.value_rule(&mut e, end, f.value_ptr, f.value_len);
                    if let (Some(t), Some(v)) = (task, value) {
                        fields.push((t, v));
                    }
                }
                if unknown_task {
                    e.maybe.push(Status::DuplicateField);
                }
            }
            Ok(Content::Known(_)) => {}
        }
        let stateless = self.put_options_rule(&mut e, end, op, ol);
        if !v2 {
            return Call {
                import: Import::PutMany,
                args: [cp, cl, tbl, count, op, ol, 0, 0],
                expect: e,
                post: Post::Put {
                    chain,
                    fields,
                    stateless,
                    versions: None,
                },
            };
        }
        let vs = self.out_versions(end, count);
        let vs_len = u32::try_from(u64::from(count) * 8);
        if vs_len.map_or(true, |l| !inside(end, vs, l)) {
            e.broken.push(Status::InvalidPointer);
        }
        Call {
            import: Import::PutV2,
            args: [cp, cl, tbl, count, op, ol, vs, 0],
            expect: e,
            post: Post::Put {
                chain,
                fields,
                stateless,
                versions: vs_len.ok().map(|l| (vs, l)),
            },
        }
    }

    fn gen_get(&mut self, end: u64, mutate: bool) -> Call {
        let chain = self.chain_bytes(mutate);
        let (cp, cl) = self.input(&chain, end, mutate);
        let blob = if self.rng.chance(50) {
            Vec::new()
        } else {
            let tasks = self.tasks.clone();
            gen::get_options(&mut self.rng, &tasks)
        };
        let (op, ol) = self.options_arg(blob, end, mutate);
        let (buf, cap) = self.out_buf(end);
        let res = self.out_record(end, (buf, cap));
        let mut e = Expect::new(
            &[
                Status::Ok,
                Status::NotFound,
                Status::BufferTooSmall,
                Status::BundleTooLarge,
            ],
            true,
        );
        let chain = self.id_rule(&mut e, end, cp, cl);
        self.get_options_rule(&mut e, end, op, ol);
        Self::output_rule(&mut e, end, buf, cap, res);
        Call {
            import: Import::GetBundle,
            args: [cp, cl, op, ol, buf, cap, res, 0],
            expect: e,
            post: Post::Get {
                chain,
                buf,
                cap,
                res,
            },
        }
    }

    fn gen_take(&mut self, end: u64) -> Call {
        let handle = self.handle();
        let (buf, cap) = self.out_buf(end);
        let res = self.out_record(end, (buf, cap));
        let mut e = Expect::new(&[], false);
        Self::output_rule(&mut e, end, buf, cap, res);
        match self.pending.find(handle) {
            Some(p) if p.len > cap => e.outcomes.push(Status::BufferTooSmall),
            Some(_) => e.outcomes.push(Status::Ok),
            None => e.broken.push(Status::UnknownHandle),
        }
        Call {
            import: Import::TakeResult,
            args: [handle, buf, cap, res, 0, 0, 0, 0],
            expect: e,
            post: Post::Take { handle, buf, res },
        }
    }

    fn gen_last_error(&mut self, end: u64) -> Call {
        let (mut buf, mut cap) = self.out_buf(end);
        let mut len_ptr = self.out_record(end, (buf, cap));
        if self.rng.chance(10) {
            len_ptr = len_ptr.wrapping_add(4);
        }
        // The host writes min(cap, message length) bytes: that span must be safe.
        let n = cap.min(self.message_len);
        if !self.mem.safe_output(end, buf, n) {
            buf = self.mem.arena.base();
            cap = 0;
        }
        if !self.mem.safe_output(end, len_ptr, 4) {
            len_ptr = end.min(u64::from(u32::MAX)) as u32;
        }
        let n = cap.min(self.message_len);
        let mut e = Expect::new(&[Status::Ok], false);
        if !inside(end, len_ptr, 4) || !inside(end, buf, n) {
            e.broken.push(Status::InvalidPointer);
        }
        Call {
            import: Import::LastError,
            args: [buf, cap, len_ptr, 0, 0, 0, 0, 0],
            expect: e,
            post: Post::LastError { buf, cap, len_ptr },
        }
    }

    // ----- checking ------------------------------------------------------------------

    /// Reads the last-error message with a valid buffer: (status, prefix, full length).
    fn read_message(&mut self) -> (i32, Vec<u8>, u32) {
        let base = self.mem.msg.base();
        let len_ptr = base + MSG as u32;
        let code = host::call(
            Import::LastError,
            &[base, MSG as u32, len_ptr, 0, 0, 0, 0, 0],
        );
        self.tally.checks += 1;
        let mut len = [0u8; 4];
        len.copy_from_slice(&self.mem.msg.read(MSG, 4));
        let len = u32::from_le_bytes(len);
        (code, self.mem.msg.read(0, (len as usize).min(MSG)), len)
    }

    /// Bytes at `[ptr, ptr + len)` if inside the arena or `big`.
    fn output_bytes(&self, ptr: u32, len: u32) -> Option<Vec<u8>> {
        for r in [&self.mem.arena, &self.mem.big] {
            if let Some(off) = r.offset_of(ptr, len) {
                return Some(r.read(off, len as usize));
            }
        }
        None
    }

    fn record(&self, res: u32) -> Option<GetResult> {
        let b = self.output_bytes(res, GetResult::SIZE as u32)?;
        let mut raw = [0u8; GetResult::SIZE];
        raw.copy_from_slice(&b);
        Some(GetResult::from_bytes(&raw))
    }

    /// Checks that the arena changed only inside `allowed` spans.
    fn check_arena(&mut self, import: Import, code: i32, allowed: &[(u32, u32)]) {
        let base = self.mem.arena.base();
        let snap = &self.snapshot;
        let stray = self.mem.arena.with(0, ARENA, |now| {
            if now == snap.as_slice() {
                return None;
            }
            (0..ARENA).find(|&i| {
                now[i] != snap[i]
                    && !allowed
                        .iter()
                        .any(|&(p, l)| overlaps((p, l), (base + i as u32, 1)))
            })
        });
        if let Some(i) = stray {
            self.violation(format!(
                "{} returned {code} and wrote arena byte {i} outside the spans it may write {allowed:?}",
                import.name()
            ));
        }
    }

    /// Compares a delivered bundle with the mirror; adopts it if the mirror is unsure.
    fn check_bundle(
        &mut self,
        what: &str,
        bytes: &[u8],
        chain: Option<&str>,
        expect: Option<Fields>,
    ) {
        let b: Bundle = match wire::decode_bundle(bytes) {
            Ok(b) => b,
            Err(e) => {
                self.violation(format!("{what}: delivered bundle does not decode: {e}"));
                return;
            }
        };
        if let Some(c) = chain {
            if b.chain != c {
                self.violation(format!("{what}: asked for chain {c}, got {}", b.chain));
                return;
            }
        }
        // Ids cut short by a mutation ("fz") are shared with other guests, which may
        // run with propagation on: only this guest's own chains are checked further.
        if !self.cfg.mirror || !self.chains.contains(&b.chain) {
            return;
        }
        if b.source.tier != Tier::Local || !b.placement.is_empty() {
            self.violation(format!("{what}: propagation is off, got {:?}", b.source));
        }
        let got: Fields = b
            .fields
            .iter()
            .map(|(k, v)| (k.clone(), Some(v.to_vec())))
            .collect();
        if let Some(expect) = expect {
            let same_keys = expect.keys().eq(got.keys());
            let same_values = expect
                .iter()
                .all(|(k, v)| v.is_none() || got.get(k) == Some(v));
            if !same_keys || !same_values {
                self.violation(format!(
                    "{what}: chain {} holds fields {:?}, the guest stored {:?}",
                    b.chain,
                    got.keys().collect::<Vec<_>>(),
                    expect.keys().collect::<Vec<_>>()
                ));
            }
        }
        if let Some(c) = chain {
            // Only a read taken now (not a pending one) tells the store's current state.
            if what == "get" {
                let st = self.store.entry(c.to_string()).or_default();
                st.fields = got;
                st.uncertain = false;
            }
        }
    }

    /// What the mirror says chain `c` holds now, if it is sure.
    fn expected(&self, c: Option<&str>) -> Option<Fields> {
        if !self.cfg.mirror {
            return None;
        }
        // Only this guest's own chains: ids cut short by a mutation ("fz", "f") are
        // shared with other guests on the same store.
        let c = c.filter(|c| self.chains.iter().any(|own| own == c))?;
        match self.store.get(c) {
            None if self.unseen_uncertain => None,
            None => Some(Fields::new()),
            Some(st) if !st.uncertain => Some(st.fields.clone()),
            Some(_) => None,
        }
    }

    fn verify(&mut self, call: &Call, code: i32) {
        let import = call.import;
        let ok = code == Status::Ok.code();
        if import == Import::Version {
            if code != ABI_VERSION {
                self.violation(format!("skylark_version returned {code}"));
            }
        } else if !call.expect.allows(code) {
            self.violation(format!(
                "{} {:?} returned {code} ({:?}); broken rules {:?}, maybe {:?}, outcomes {:?}",
                import.name(),
                call.args,
                Status::from_code(code),
                call.expect.broken,
                call.expect.maybe,
                call.expect.outcomes
            ));
        }

        let mut allowed: Vec<(u32, u32)> = Vec::new();
        match &call.post {
            Post::Version | Post::Drop { .. } => {}
            Post::Put {
                chain,
                fields,
                stateless,
                versions,
            } => {
                // skylark_put_v2 writes its versions on Ok and ConditionFailed only, and
                // every version a put assigned is above 0.
                if let Some((vp, vl)) = *versions {
                    if ok || code == Status::ConditionFailed.code() {
                        allowed.push((vp, vl));
                    }
                    if ok {
                        let zero = self
                            .output_bytes(vp, vl)
                            .is_some_and(|b| b.chunks_exact(8).any(|v| v == [0; 8]));
                        if zero {
                            self.violation(format!(
                                "skylark_put_v2 returned Ok with a version 0 at {vp}"
                            ));
                        }
                    }
                }
                if ok && !call.expect.maybe.is_empty() {
                    // Written somewhere the guest cannot tell (an id read from memory it
                    // does not control): trust no mirror entry until it is read again.
                    self.unseen_uncertain = true;
                    for st in self.store.values_mut() {
                        st.uncertain = true;
                    }
                } else if let Some(c) = chain {
                    let st = self.store.entry(c.clone()).or_default();
                    if ok {
                        for (t, v) in fields {
                            st.fields.insert(t.clone(), v.clone());
                        }
                    } else if (20..30).contains(&code) && !(code == 20 && *stateless) {
                        st.uncertain = true;
                    }
                }
            }
            Post::Get {
                chain,
                buf,
                cap,
                res,
            } => {
                let (buf, cap, res) = (*buf, *cap, *res);
                let status = Status::from_code(code);
                if matches!(
                    status,
                    Some(Status::Ok | Status::BufferTooSmall | Status::NotFound)
                ) {
                    allowed.push((res, 8));
                    if let Some(r) = self.record(res) {
                        self.check_get_record(status, r, chain.clone(), buf, cap, res);
                        if ok {
                            allowed.push((buf, r.len));
                        }
                    }
                }
            }
            Post::Take { handle, buf, res } => {
                let (handle, buf, res) = (*handle, *buf, *res);
                if ok || code == Status::BufferTooSmall.code() {
                    allowed.push((res, 8));
                    let len = self.pending.find(handle).map(|p| p.len).unwrap_or(0);
                    if ok {
                        allowed.push((buf, len));
                    }
                    match self.record(res) {
                        Some(r) if r.len != len || r.handle != if ok { 0 } else { handle } => {
                            self.violation(format!(
                                "skylark_take_result({handle}) returned {code} with record {r:?}, expected len {len}"
                            ));
                        }
                        _ => {}
                    }
                    if ok {
                        if let Some(p) = self.pending.remove(handle) {
                            if !overlaps((buf, len), (res, 8)) {
                                if let Some(bytes) = self.output_bytes(buf, len) {
                                    self.check_bundle("take", &bytes, p.chain.as_deref(), p.expect);
                                }
                            }
                        }
                    }
                }
            }
            Post::LastError { buf, cap, len_ptr } => {
                if ok {
                    let n = (*cap).min(self.message_len);
                    allowed.push((*buf, n));
                    allowed.push((*len_ptr, 4));
                    if let Some(l) = self.output_bytes(*len_ptr, 4) {
                        if l != self.message_len.to_le_bytes() {
                            self.violation(format!(
                                "skylark_last_error wrote length {l:?}, message is {} bytes",
                                self.message_len
                            ));
                        }
                    }
                    if !overlaps((*buf, n), (*len_ptr, 4)) && n as usize <= self.message.len() {
                        if let Some(b) = self.output_bytes(*buf, n) {
                            if b != self.message[..n as usize] {
                                self.violation(
                                    "skylark_last_error wrote other bytes than the message".into(),
                                );
                            }
                        }
                    }
                }
            }
        }
        if let Post::Drop { handle } = call.post {
            if ok {
                self.pending.remove(handle);
            }
        }
        self.check_arena(import, code, &allowed);
        self.check_message(import, code);
    }

    fn check_get_record(
        &mut self,
        status: Option<Status>,
        r: GetResult,
        chain: Option<String>,
        buf: u32,
        cap: u32,
        res: u32,
    ) {
        match status {
            Some(Status::Ok) => {
                if r.len > cap || r.handle != 0 {
                    self.violation(format!("get returned Ok with record {r:?} for cap {cap}"));
                    return;
                }
                if !overlaps((buf, r.len), (res, 8)) {
                    if let Some(bytes) = self.output_bytes(buf, r.len) {
                        let expect = self.expected(chain.as_deref());
                        self.check_bundle("get", &bytes, chain.as_deref(), expect);
                    }
                }
            }
            Some(Status::BufferTooSmall) => {
                if r.len <= cap || r.handle != self.pending.next {
                    self.violation(format!(
                        "get returned BufferTooSmall with record {r:?} for cap {cap}, next handle {}",
                        self.pending.next
                    ));
                }
                let expect = self.expected(chain.as_deref());
                self.pending.insert(PendingResult {
                    handle: r.handle,
                    len: r.len,
                    chain,
                    expect,
                });
            }
            _ => {
                if r != GetResult::default() {
                    self.violation(format!("get returned NotFound with record {r:?}"));
                }
                if let Some(c) = chain {
                    if let Some(expect) = self.expected(Some(&c)) {
                        if !expect.is_empty() {
                            self.violation(format!(
                                "get returned NotFound for chain {c}, which holds {:?}",
                                expect.keys().collect::<Vec<_>>()
                            ));
                        }
                    }
                    if self.cfg.mirror {
                        let st = self.store.entry(c).or_default();
                        st.fields.clear();
                        st.uncertain = false;
                    }
                }
            }
        }
    }

    fn check_message(&mut self, import: Import, code: i32) {
        let (st, msg, len) = self.read_message();
        if st != Status::Ok.code() {
            self.violation(format!(
                "skylark_last_error with a valid buffer returned {st}"
            ));
            return;
        }
        let unchanged = import == Import::Version || import == Import::LastError && code == 0;
        if unchanged {
            if len != self.message_len || msg != self.message {
                self.violation(format!(
                    "{} ({code}) changed the message from {:?} to {:?}",
                    import.name(),
                    String::from_utf8_lossy(&self.message),
                    String::from_utf8_lossy(&msg)
                ));
            }
        } else if code == Status::Ok.code() {
            if len != 0 {
                self.violation(format!(
                    "{} returned Ok but left message {:?}",
                    import.name(),
                    String::from_utf8_lossy(&msg)
                ));
            }
        } else {
            let prefix = format!("{}: ", import.name());
            if !msg.starts_with(prefix.as_bytes()) || (len as usize) <= prefix.len() {
                self.violation(format!(
                    "{} returned {code} with message {:?}",
                    import.name(),
                    String::from_utf8_lossy(&msg)
                ));
            }
        }
        self.message = msg;
        self.message_len = len;
    }
}
