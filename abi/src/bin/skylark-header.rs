//! Prints the C header `guest-sdk/include/skylark.h`, rendered from the skylark-abi crate:
//! `cargo run -p skylark-abi --bin skylark-header > guest-sdk/include/skylark.h`.

use std::io::Write;
use std::process::ExitCode;

fn main() -> ExitCode {
    match skylark_abi::c_header::render() {
        Ok(h) => match std::io::stdout().write_all(h.as_bytes()) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("skylark-header: writing the header: {e}");
                ExitCode::FAILURE
            }
        },
        Err(e) => {
            eprintln!("skylark-header: {e}");
            ExitCode::FAILURE
        }
    }
}
