//! Network emulation on one machine. [`linkemu`]: one emulated link, a TCP proxy with
//! latency, jitter, bandwidth and faults (also the `linkemu` binary), over the shared
//! link model of [`wire`].
//! [`constellation`]: the research testbed's constellation, one `redis-server` per node
//! and the network between them emulated link by link, links shared (also the `constellation-hold`
//! binary), used by the system tests, the benchmarks, the experiment and the fault run.

pub mod constellation;
pub mod linkemu;
pub mod wire;
