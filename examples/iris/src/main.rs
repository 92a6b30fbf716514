//! The `iris` command-line tool; see `iris help`.

use std::future::Future;
use std::process::ExitCode;

use iris::error::{Error, Result};
use iris::server::ServeOptions;
use iris::{background, cli, server, smoke, train};

fn main() -> ExitCode {
    let args = match collect_args() {
        Ok(args) => args,
        Err(err) => return report(&err),
    };
    match run(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => report(&err),
    }
}

fn report(err: &Error) -> ExitCode {
    eprintln!("error: {err}");
    ExitCode::from(err.exit_code())
}

/// The arguments after the program name, which must be valid UTF-8.
fn collect_args() -> Result<Vec<String>> {
    std::env::args_os()
        .skip(1)
        .enumerate()
        .map(|(i, arg)| {
            arg.into_string().map_err(|bad| {
                Error::usage(format!("argument {} is not valid utf-8: {bad:?}", i + 1))
            })
        })
        .collect()
}

fn run(args: &[String]) -> Result<()> {
    let Some((command, rest)) = args.split_first() else {
        eprint!("{}", cli::USAGE);
        return Err(Error::usage("no command given"));
    };
    if rest.iter().any(|arg| arg == "--help" || arg == "-h") {
        print!("{}", cli::USAGE);
        return Ok(());
    }
    match command.as_str() {
        "help" | "--help" | "-h" => {
            print!("{}", cli::USAGE);
            Ok(())
        }
        "train" => train::run_train(rest),
        "evaluate" => train::run_evaluate(rest),
        "serve" => {
            let options = ServeOptions::from_args(rest)?;
            if options.background {
                block_on(background::start(&options))
            } else {
                block_on(server::serve(&options))
            }
        }
        "stop" => background::run_stop(rest),
        "smoke" => block_on(smoke::run(rest)),
        other => Err(Error::usage(format!(
            "unknown command '{other}' (see 'iris help')"
        ))),
    }
}

/// Runs a future on a fresh multi-threaded tokio runtime.
fn block_on<F: Future<Output = Result<()>>>(future: F) -> Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|err| Error::new(format!("cannot start the async runtime: {err}")))?;
    let result = runtime.block_on(future);
    // Do not wait for lingering tasks (for example idle pooled connections).
    runtime.shutdown_background();
    result
}
