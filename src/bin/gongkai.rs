//! gongkai: the office's command line. Keys, signing, verifying as a screen
//! would, withdrawing, publishing, a screen's cache and the fleet's status.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand};
use time::OffsetDateTime;

use gongkai::mqtt::Connect;
use gongkai::protocol::topic::DEFAULT_PREFIX;

#[derive(Parser)]
#[command(version, about = "Community disclosure: the office's tools")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

/// Options for reaching a broker.
#[derive(clap::Args)]
struct BrokerArgs {
    /// Broker URL: mqtt://host:port or mqtts://host:port.
    #[arg(long)]
    broker: String,
    /// Topic prefix.
    #[arg(long, default_value = DEFAULT_PREFIX)]
    prefix: String,
    /// MQTT user name.
    #[arg(long)]
    username: Option<String>,
    /// File holding the MQTT password.
    #[arg(long, requires = "username")]
    password_file: Option<PathBuf>,
}

impl BrokerArgs {
    fn connect(&self) -> anyhow::Result<Connect> {
        let password = self
            .password_file
            .as_deref()
            .map(gongkai::mqtt::read_secret)
            .transpose()?;
        Connect::cli(&self.broker, self.username.clone(), password)
    }
}

#[derive(Subcommand)]
enum Command {
    /// Make a new Ed25519 key: FILE gets the seed (mode 0600); prints the public key and key id.
    Keygen {
        #[arg(long)]
        out: PathBuf,
    },
    /// Sign a notice payload (making an envelope) or add a signature to an envelope.
    Sign {
        #[arg(long)]
        key: PathBuf,
        input: PathBuf,
        #[arg(short, long)]
        output: PathBuf,
        /// Sign even though the text holds unmasked ID, mobile or bank card numbers.
        #[arg(long)]
        allow_personal_data: bool,
    },
    /// A screen's verdict on an envelope arriving on a topic: prints accept or reject: REASON.
    Verify {
        #[arg(long)]
        config: PathBuf,
        #[arg(long)]
        topic: String,
        file: PathBuf,
    },
    /// Publish envelopes (retained, QoS 1) and then the next manifest, signed by KEY.
    Publish {
        #[command(flatten)]
        broker: BrokerArgs,
        /// The office key that signs the manifest.
        #[arg(long)]
        key: PathBuf,
        #[arg(required = true)]
        files: Vec<PathBuf>,
    },
    /// Make the withdrawal payload of a notice: next version, status withdrawn. Sign it like any notice.
    Withdraw {
        input: PathBuf,
        #[arg(short, long)]
        output: PathBuf,
    },
    /// What a screen holds (read-only; safe while the daemon runs).
    Cache {
        #[arg(long)]
        store: PathBuf,
        #[arg(long)]
        json: bool,
    },
    /// Render a page from a screen's cache to PNG, without a display.
    Render {
        /// The screen's configuration (its store and screen id).
        #[arg(long)]
        config: PathBuf,
        /// The notice to render (its newest version held).
        #[arg(long, conflicts_with = "now", required_unless_present = "now")]
        notice: Option<String>,
        /// Page of the notice, from 1.
        #[arg(long, default_value_t = 1, requires = "notice")]
        page: usize,
        /// What the screen would show first now.
        #[arg(long)]
        now: bool,
        /// WIDTHxHEIGHT in pixels, for example 1920x1080 or 1080x1920.
        #[arg(long, default_value = "1920x1080", value_parser = parse_size)]
        size: (u32, u32),
        #[arg(long)]
        out: PathBuf,
    },
    /// The office's side of screens' HTTP API: the intake server and its tokens.
    Office {
        #[command(subcommand)]
        command: OfficeCommand,
    },
    /// The fleet: every screen's status of a community.
    Status {
        #[command(flatten)]
        broker: BrokerArgs,
        #[arg(long)]
        community: String,
        #[arg(long)]
        json: bool,
    },
}

#[derive(Subcommand)]
enum OfficeCommand {
    /// Run the intake server for residents' feedback, proof of play and screenshots.
    Serve {
        /// office.toml: `listen` and `database`.
        #[arg(long)]
        config: PathBuf,
    },
    /// Issue a new token for a screen (an older one stops working); the token is the last line.
    Token {
        #[arg(long)]
        config: PathBuf,
        #[arg(long)]
        screen: String,
    },
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    match run(Cli::parse().command) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("gongkai: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(command: Command) -> anyhow::Result<ExitCode> {
    match command {
        Command::Keygen { out } => {
            let public = gongkai::office::keygen(&out)?;
            println!("public: {}", public.to_base64());
            println!("keyid: {}", public.key_id());
        }
        Command::Sign {
            key,
            input,
            output,
            allow_personal_data,
        } => {
            let signed = gongkai::office::sign_file(&key, &input, allow_personal_data)?;
            write_new(&output, &signed.envelope.to_bytes())?;
            println!("{}: {} signature(s)", output.display(), signed.signatures);
        }
        Command::Verify {
            config,
            topic,
            file,
        } => {
            let config = gongkai::config::Config::load(&config)
                .map_err(|p| anyhow::anyhow!("{}:\n{p}", config.display()))?;
            let bytes =
                std::fs::read(&file).with_context(|| format!("reading {}", file.display()))?;
            return Ok(
                match gongkai::protocol::verify_message(
                    &config.topics(),
                    &topic,
                    &bytes,
                    &config.trust,
                ) {
                    Ok(_) => {
                        println!("accept");
                        ExitCode::SUCCESS
                    }
                    Err(reason) => {
                        println!("reject: {reason}");
                        ExitCode::from(1)
                    }
                },
            );
        }
        Command::Publish { broker, key, files } => {
            let key = gongkai::office::sign::read_key(&key)?;
            let connect = broker.connect()?;
            let published = runtime()?.block_on(gongkai::office::publish(
                &connect,
                &broker.prefix,
                &key,
                &files,
            ))?;
            for p in published {
                for (id, version) in &p.notices {
                    println!(
                        "published {}/{}/notices/{id} version {version}",
                        broker.prefix, p.community
                    );
                }
                println!(
                    "published {}/{}/manifest version {}",
                    broker.prefix, p.community, p.manifest_version
                );
            }
        }
        Command::Withdraw { input, output } => {
            let payload = gongkai::office::withdraw(&input, OffsetDateTime::now_utc())?;
            write_new(&output, &payload)?;
            println!(
                "{}: withdrawal payload; sign it with the office and supervisor keys, then publish",
                output.display()
            );
        }
        Command::Cache { store, json } => print_cache(&store, json)?,
        Command::Render {
            config,
            notice,
            page,
            now: _,
            size,
            out,
        } => {
            let config = gongkai::config::Config::load(&config)
                .map_err(|p| anyhow::anyhow!("{}:\n{p}", config.display()))?;
            let png = gongkai::preview::render_from_store(
                &config,
                notice.as_deref(),
                page,
                size,
                OffsetDateTime::now_utc(),
            )?;
            write_new(&out, &png)?;
            println!("{}: {}x{} PNG", out.display(), size.0, size.1);
        }
        Command::Status {
            broker,
            community,
            json,
        } => {
            let connect = broker.connect()?;
            let screens = runtime()?.block_on(gongkai::office::fleet_status(
                &connect,
                &broker.prefix,
                &community,
            ))?;
            print_fleet(&screens, json)?;
        }
        Command::Office { command } => match command {
            OfficeCommand::Serve { config } => {
                let config = gongkai::office::intake::OfficeConfig::load(&config)?;
                runtime()?.block_on(gongkai::office::intake::serve(config, shutdown_signal()))?;
            }
            OfficeCommand::Token { config, screen } => {
                let config = gongkai::office::intake::OfficeConfig::load(&config)?;
                let token = gongkai::office::intake::issue_token(&config, &screen)?;
                println!(
                    "token for screen {screen} (put it in the screen's token_file, mode 0600):"
                );
                println!("{token}");
            }
        },
    }
    Ok(ExitCode::SUCCESS)
}

fn parse_size(text: &str) -> Result<(u32, u32), String> {
    let (w, h) = text
        .split_once(['x', 'X', '×'])
        .ok_or("expected WIDTHxHEIGHT")?;
    let parse = |v: &str| {
        v.trim()
            .parse::<u32>()
            .ok()
            .filter(|n| (64..=8192).contains(n))
    };
    match (parse(w), parse(h)) {
        (Some(w), Some(h)) => Ok((w, h)),
        _ => Err(format!(
            "{text:?}: width and height must be 64 to 8192 pixels"
        )),
    }
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    gongkai::mqtt::install_crypto_provider();
    Ok(tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?)
}

/// Writes through a temporary file and a rename, so a reader never sees half.
fn write_new(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    let dir = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let mut tmp = tempfile::NamedTempFile::new_in(dir)?;
    std::io::Write::write_all(&mut tmp, bytes)?;
    tmp.persist(path)
        .with_context(|| format!("writing {}", path.display()))?;
    Ok(())
}

fn print_cache(path: &Path, json: bool) -> anyhow::Result<()> {
    if !path.exists() {
        anyhow::bail!("{}: no such store", path.display());
    }
    let store = gongkai::store::Store::open_read_only(path)?;
    let screen = store.meta("screen_id")?.unwrap_or_default();
    let rows = store.cache_rows(&screen, OffsetDateTime::now_utc())?;
    if json {
        println!("{}", serde_json::to_string_pretty(&rows)?);
        return Ok(());
    }
    println!(
        "{:<28} {:>3} {:<9} {:<10} {:<6} {:<27} title",
        "id", "ver", "status", "category", "active", "window"
    );
    for r in &rows {
        println!(
            "{:<28} {:>3} {:<9} {:<10} {:<6} {:<27} {}",
            r.id,
            r.version,
            r.status,
            r.category,
            if r.active { "yes" } else { "no" },
            format!(
                "{}..{}",
                &r.valid_from[..10.min(r.valid_from.len())],
                &r.valid_until[..10.min(r.valid_until.len())]
            ),
            r.title
        );
    }
    let rejections = store.rejections(5)?;
    if let Some(manifest) = store.manifest_state()? {
        println!(
            "manifest version {} lists {} notices",
            manifest.version,
            manifest.entries.len()
        );
    }
    if !rejections.is_empty() {
        println!("latest rejections:");
        for r in rejections {
            println!(
                "  {} {}: {}",
                gongkai::protocol::notice::rfc3339(r.at),
                r.topic,
                r.reason
            );
        }
    }
    Ok(())
}

fn print_fleet(screens: &[serde_json::Value], json: bool) -> anyhow::Result<()> {
    if json {
        println!("{}", serde_json::to_string_pretty(screens)?);
        return Ok(());
    }
    if screens.is_empty() {
        println!("no screen has reported a status");
        return Ok(());
    }
    println!(
        "{:<20} {:<8} {:<6} {:>6} {:>6} {:>8} {:>7}  updated",
        "screen", "state", "mode", "active", "cached", "rejected", "missing"
    );
    for s in screens {
        let num = |v: &serde_json::Value| {
            v.as_u64()
                .map(|n| n.to_string())
                .unwrap_or_else(|| "-".into())
        };
        println!(
            "{:<20} {:<8} {:<6} {:>6} {:>6} {:>8} {:>7}  {}",
            s["screen"].as_str().unwrap_or("?"),
            s["state"].as_str().unwrap_or("?"),
            s["mode"].as_str().unwrap_or("-"),
            num(&s["active"]),
            num(&s["cached"]),
            num(&s["rejected"]),
            num(&s["manifest"]["missing"]),
            s["updated_at"].as_str().unwrap_or("-"),
        );
        if let Some(reason) = s["last_rejection"]["reason"].as_str() {
            println!("{:<20} last rejection: {reason}", "");
        }
    }
    Ok(())
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
