//! Experiments on the emulated constellation ([`skylark_netemu::constellation`]): the
//! constellation experiment's report ([`report`], its paired comparison [`paired`], its SLO profile and violations [`slo`], the hand-off timing [`handoff`]; the
//! run itself is the `experiment` binary) and the fault-injection harness ([`faults`], checked by [`fault_checks`]
//! against the recorded [`history`]; run by the `fault-run` binary and tests/faults.rs).

pub mod fault_checks;
pub mod faults;
pub mod handoff;
pub mod history;
pub mod paired;
pub mod report;
pub mod slo;
