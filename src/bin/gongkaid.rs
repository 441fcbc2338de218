//! gongkaid: the screen daemon. Parses arguments, sets up logging, runs the
//! library, maps errors to exit codes.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;

/// sysexits' EX_CONFIG: the configuration is wrong.
const EX_CONFIG: u8 = 78;

#[derive(Parser)]
#[command(version, about = "Community disclosure screen daemon")]
struct Args {
    /// The screen's configuration file (TOML).
    #[arg(long, required_unless_present = "demo")]
    config: Option<PathBuf>,
    /// Check the configuration and exit: 0 when valid, 78 with every problem.
    #[arg(long, requires = "config")]
    check: bool,
    /// Run without a window, logging each rotation step (servers and tests).
    #[arg(long)]
    headless: bool,
    /// Run a self-contained demo: embedded broker, demo keys, signed samples.
    #[arg(long, conflicts_with_all = ["config", "check"])]
    demo: bool,
}

fn main() -> ExitCode {
    let args = Args::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "info,rumqttd=off,rumqttc=warn".into()),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();

    let config = match &args.config {
        Some(path) => match gongkai::config::Config::load(path) {
            Ok(config) => Some(config),
            Err(problems) => {
                eprintln!(
                    "{}: {} problem(s):\n{problems}",
                    path.display(),
                    problems.0.len()
                );
                return ExitCode::from(EX_CONFIG);
            }
        },
        None => None,
    };
    if args.check {
        println!("{}: ok", args.config.unwrap_or_default().display());
        return ExitCode::SUCCESS;
    }
    if !args.headless {
        tracing::info!("this build has no screen UI yet: running headless");
    }

    let runtime = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("gongkaid: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async {
        match config {
            Some(config) => gongkai::daemon::run(config, shutdown_signal()).await,
            None => gongkai::demo::run(shutdown_signal()).await,
        }
    });
    // The embedded broker's thread never returns: do not wait for it.
    runtime.shutdown_timeout(std::time::Duration::from_millis(500));
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("gongkaid: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// Resolves on SIGTERM or SIGINT.
async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).expect("SIGTERM handler");
    let mut int = signal(SignalKind::interrupt()).expect("SIGINT handler");
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
}
