//! `handler`: the custom-handler executable. Reads settings, starts telemetry, runs the command.

use clap::Parser as _;
use jwt_refresh_token::{cli, settings::Env, telemetry};

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let args = cli::Cli::parse();
    if matches!(args.command, None | Some(cli::Command::Serve)) {
        telemetry::init();
    }
    match cli::run(args, Env::from_process()).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(failure) => {
            // One line per problem; a hint line is printed as it is.
            for line in failure.message.lines() {
                if line.starts_with("hint: ") { eprintln!("{line}") } else { eprintln!("error: {line}") }
            }
            std::process::ExitCode::from(u8::try_from(failure.code).unwrap_or(1))
        }
    }
}
