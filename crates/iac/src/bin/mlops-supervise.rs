//! `mlops-supervise INSTANCE_DIR`: the local provider's supervisor, for
//! programs that embed `mlops-iac` without the `mlops` binary (which runs
//! the same code as `mlops infra supervise`).

use std::process::ExitCode;

fn main() -> ExitCode {
    match std::env::args_os().nth(1) {
        Some(dir) => mlops_iac::local::supervisor::main(std::path::Path::new(&dir)),
        None => {
            eprintln!("usage: mlops-supervise INSTANCE_DIR");
            ExitCode::from(2)
        }
    }
}
