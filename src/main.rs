//! `heimdallr`: run Heimdallr's syncs locally, into an embedded DuckDB file by default,
//! or PostgreSQL or Redshift. See `heimdallr --help`.

mod cli;
mod commands;
mod sources;
mod top;

use clap::Parser;
use std::process::ExitCode;

fn main() -> ExitCode {
    let args = cli::Cli::parse();
    cli::init_logging(args.log_format);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("heimdallr: error: cannot start the async runtime: {e}");
            return ExitCode::from(2);
        }
    };
    match runtime.block_on(commands::run(args)) {
        Ok(code) => code,
        Err(e) => {
            // One line, with the chain of causes; never a token (they live only in headers).
            eprintln!("heimdallr: error: {e:#}");
            commands::exit_code_for(&e)
        }
    }
}
