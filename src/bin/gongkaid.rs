//! gongkaid: the screen daemon. Parses arguments, sets up logging, runs the
//! library, maps errors to exit codes.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use gongkai::config::Mode;
use gongkai::ui::window::{self, Output};

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
    /// Opens a window where a display exists; without one the current frame
    /// is written to a PNG file whose path is printed.
    #[arg(long, conflicts_with_all = ["config", "check"])]
    demo: bool,
    /// With --demo: a touch kiosk instead of a lobby LED screen.
    #[arg(long, requires = "demo")]
    kiosk: bool,
    /// With --demo and no display: where to write the current frame.
    #[arg(long, requires = "demo")]
    frame: Option<PathBuf>,
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
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("gongkaid: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = match config {
        Some(config) if args.headless => {
            gongkai::app::run(&runtime, config, gongkai::shutdown_signal(), None)
        }
        Some(config) => run_screen(&runtime, config, Output::Window),
        None => run_demo(&runtime, &args),
    };
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

fn run_screen(
    runtime: &tokio::runtime::Runtime,
    config: gongkai::config::Config,
    output: Output<'_>,
) -> anyhow::Result<()> {
    window::run_screen(runtime, config, output, gongkai::shutdown_signal())
}

fn run_demo(runtime: &tokio::runtime::Runtime, args: &Args) -> anyhow::Result<()> {
    let mode = if args.kiosk { Mode::Kiosk } else { Mode::Led };
    let demo = runtime.block_on(gongkai::demo::prepare(mode))?;
    let config = demo.config.clone();
    if args.headless {
        println!("     running headless, logging each rotation step; Ctrl-C stops it.\n");
        return gongkai::app::run(runtime, config, gongkai::shutdown_signal(), None);
    }
    if window::display_available() {
        println!("     opening a window; close it or press Ctrl-C to stop.\n");
        return run_screen(runtime, config, Output::Window);
    }
    let frame = args.frame.clone().unwrap_or_else(|| {
        std::env::temp_dir().join(format!("gongkai-demo-frame-{}.png", std::process::id()))
    });
    println!(
        "     no display: the current frame is written to {}",
        frame.display()
    );
    println!("     Ctrl-C stops it.\n");
    run_screen(runtime, config, Output::Png(&frame))
}
