//! Experiments on the emulated constellation ([`skylark_netemu::constellation`]): the
//! constellation experiment's report ([`report`], its paired comparison [`paired`], its SLO profile and violations [`slo`], the hand-off timing [`handoff`], the quiet links between workflows [`quiet`]; the
//! run itself is the `experiment` binary) and the fault-injection harness ([`faults`], checked by [`fault_checks`]
//! against the recorded [`history`], its compare-and-swap workload by [`cas_checks`]; run by the `fault-run` binary and tests/faults.rs).

pub mod cas_checks;
pub mod fault_checks;
pub mod faults;
pub mod handoff;
pub mod history;
pub mod paired;
pub mod quiet;
pub mod report;
pub mod slo;
