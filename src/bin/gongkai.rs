//! gongkai: the office's command line. Keys, signing, verifying as a screen
//! would, withdrawing, publishing, a screen's cache and the fleet's status,
//! and the office's intake: its server, screens' tokens, residents' feedback
//! and the replies to it.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand};
use time::OffsetDateTime;

use gongkai::mqtt::Connect;
use gongkai::office::broker::FleetEntry;
use gongkai::office::staff::{self, Contacts};
use gongkai::office::{ServerConfig, intake, reply};
use gongkai::protocol::feedback::REPLY_WORKING_DAYS;
use gongkai::protocol::printable;
use gongkai::protocol::topic::DEFAULT_PREFIX;
use gongkai::status::{Liveness, STALE_AFTER, StatusMessage};
use gongkai::store::office::FeedbackRow;
use gongkai::workdays::Calendar;

/// The machine's offset from UTC, for times shown to staff.
static LOCAL_OFFSET: std::sync::OnceLock<time::UtcOffset> = std::sync::OnceLock::new();

fn local_offset() -> time::UtcOffset {
    LOCAL_OFFSET.get().copied().unwrap_or(time::UtcOffset::UTC)
}

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
    /// Send a signed command to one screen and wait for its outcome in the screen's status.
    #[allow(clippy::enum_variant_names)] // `gongkai command`, as the verb reads
    #[command(name = "command")]
    SendCommand {
        #[command(flatten)]
        broker: BrokerArgs,
        /// An office or operator key the screen trusts.
        #[arg(long)]
        key: PathBuf,
        #[arg(long)]
        community: String,
        #[arg(long)]
        screen: String,
        /// screenshot, resync or identify.
        action: String,
        /// Seconds to wait for the screen's answer.
        #[arg(long, default_value_t = 60)]
        wait: u64,
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
        /// The screen's community: its requests must name it. Without it, a new
        /// screen is bound to the first community it sends, and a known one keeps its own.
        #[arg(long)]
        community: Option<String>,
    },
    /// List or export residents' feedback with each reply deadline; items with no reply past it are flagged 逾期未复.
    Feedback {
        #[arg(long)]
        config: PathBuf,
        /// Only items received since: RFC 3339, or a date YYYY-MM-DD (local midnight).
        #[arg(long)]
        since: Option<String>,
        /// CSV on stdout (header row, RFC 4180 quoting) instead of a table.
        #[arg(long)]
        csv: bool,
        /// Show contact numbers in full; recorded in the office's audit trail.
        #[arg(long)]
        reveal_contact: bool,
    },
    /// People of the web console.
    User {
        #[command(subcommand)]
        command: UserCommand,
    },
    /// Print the [trust] block screens need: enrolled staff as office, supervisors, the operator key.
    Trust {
        #[arg(long)]
        config: PathBuf,
    },
    /// Write the latest screenshot a screen uploaded to FILE.png.
    Screenshot {
        #[arg(long)]
        config: PathBuf,
        #[arg(long)]
        screen: String,
        #[arg(short, long)]
        output: PathBuf,
    },
    /// Proof of play: where and when a notice was shown (--notice), or whether every screen's play chain is whole (--verify; exits 1 if not).
    Plays {
        #[arg(long)]
        config: PathBuf,
        /// The notice: on which screens it was shown, when, for how long, inside its window or not.
        #[arg(long, required_unless_present = "verify", conflicts_with = "verify")]
        notice: Option<String>,
        /// Only plays that started since: RFC 3339, or a date YYYY-MM-DD (local midnight).
        #[arg(long, requires = "notice")]
        since: Option<String>,
        /// Signed notice files the office keeps, for their windows.
        #[arg(long = "envelope", requires = "notice")]
        envelopes: Vec<PathBuf>,
        /// Check every chain end to end, and against the head each screen last published.
        #[arg(long)]
        verify: bool,
        /// Broker URL: windows of the notices retained there (--notice), the screens' statuses (--verify).
        #[arg(long)]
        broker: Option<String>,
        /// Topic prefix.
        #[arg(long, default_value = DEFAULT_PREFIX)]
        prefix: String,
        /// MQTT user name.
        #[arg(long, requires = "broker")]
        username: Option<String>,
        /// File holding the MQTT password.
        #[arg(long, requires = "username")]
        password_file: Option<PathBuf>,
    },
    /// Write a `reply` notice payload answering feedback receipts, ready to sign and publish.
    Reply {
        #[arg(long)]
        config: PathBuf,
        /// Receipt codes of the feedback answered (one community).
        #[arg(required = true)]
        receipts: Vec<String>,
        /// The answer, shown as one paragraph.
        #[arg(long)]
        text: String,
        /// 公开主体, e.g. the residents' committee.
        #[arg(long)]
        publisher: String,
        /// 监督电话 or another channel for questions.
        #[arg(long)]
        contact: String,
        /// The community, when a receipt is found in more than one.
        #[arg(long)]
        community: Option<String>,
        /// The payload file; an existing file is never overwritten.
        #[arg(short, long)]
        output: PathBuf,
    },
}

#[derive(Subcommand)]
enum UserCommand {
    /// Add a person and print their one-time enrolment link (valid 72 hours).
    Add {
        #[arg(long)]
        config: PathBuf,
        #[arg(long)]
        name: String,
        /// staff (社区工作者), supervisor (居务监督委员会) or viewer (read-only).
        #[arg(long)]
        role: String,
    },
    /// Send an enrolled person back to enrolment (their browser, and the key
    /// it held, are lost) and print their new one-time link. The old key is
    /// retired: it signs nothing new, but what it signed still verifies.
    /// Give screens the new `office trust` block once they have enrolled.
    Reenrol {
        #[arg(long)]
        config: PathBuf,
        #[arg(long)]
        name: String,
        /// The old key may be in someone else's hands: trust it nowhere.
        /// Screens given the new `office trust` block then reject what it
        /// signed, so publish those notices again with the new keys.
        #[arg(long)]
        revoke: bool,
    },
}

fn main() -> ExitCode {
    // Read while the process has one thread: `time` refuses to read the
    // local offset later, when another thread could change the environment.
    let _ =
        LOCAL_OFFSET.set(time::UtcOffset::current_local_offset().unwrap_or(time::UtcOffset::UTC));
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
            warn_dotted_ids(&files);
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
                if p.pages > 0 {
                    println!(
                        "published {}/{}/manifest/pages/1..{}",
                        broker.prefix, p.community, p.pages
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
        Command::SendCommand {
            broker,
            key,
            community,
            screen,
            action,
            wait,
        } => {
            let action = gongkai::protocol::command::Action::parse(&action).with_context(|| {
                format!("unknown action {action:?}: screenshot, resync or identify")
            })?;
            let key = gongkai::office::sign::read_key(&key)?;
            let connect = broker.connect()?;
            let topics = gongkai::protocol::TopicSpace::new(&broker.prefix, &community);
            let last = runtime()?.block_on(gongkai::office::command::send_command(
                &connect,
                &topics,
                &screen,
                action,
                &key,
                std::time::Duration::from_secs(wait),
            ))?;
            println!("{} {} on {screen}: {}", last.action, last.id, last.result);
            if last.result != "done" {
                return Err(anyhow::anyhow!("the screen answered {}", last.result));
            }
        }
        Command::Office { command } => match command {
            OfficeCommand::Screenshot {
                config,
                screen,
                output,
            } => {
                let config = ServerConfig::load(&config)?;
                let store = gongkai::store::office::OfficeStore::open(&config.database)?;
                let Some((id, at, png)) = store.latest_screenshot(&screen)? else {
                    return Err(anyhow::anyhow!("no screenshot of screen {screen} yet"));
                };
                write_new(&output, &png)?;
                println!(
                    "{}: screenshot of {screen} (command {id}, received {at})",
                    output.display()
                );
            }
            OfficeCommand::Plays {
                config,
                notice,
                since,
                envelopes,
                verify,
                broker,
                prefix,
                username,
                password_file,
            } => {
                let config = ServerConfig::load(&config)?;
                let store = gongkai::store::office::OfficeStore::open(&config.database)?;
                let connect = broker
                    .as_deref()
                    .map(|url| {
                        BrokerArgs {
                            broker: url.to_owned(),
                            prefix: prefix.clone(),
                            username: username.clone(),
                            password_file: password_file.clone(),
                        }
                        .connect()
                    })
                    .transpose()?;
                if verify {
                    let statuses = match &connect {
                        Some(connect) => {
                            let mut communities: Vec<String> = store
                                .play_chains()?
                                .into_iter()
                                .map(|c| c.community)
                                .collect();
                            communities.sort();
                            communities.dedup();
                            Some(
                                runtime()?.block_on(gongkai::office::plays::retained_statuses(
                                    connect,
                                    &prefix,
                                    &communities,
                                ))?,
                            )
                        }
                        None => None,
                    };
                    let verification = gongkai::office::plays::verify(&store, statuses.as_deref())?;
                    print!("{}", verification.report);
                    if !verification.passed {
                        eprintln!("gongkai: play chains failed verification");
                        return Ok(ExitCode::from(1));
                    }
                    return Ok(ExitCode::SUCCESS);
                }
                let id = notice.expect("clap requires --notice without --verify");
                let since = since
                    .as_deref()
                    .map(|s| staff::parse_since(s, local_offset()))
                    .transpose()?;
                let mut windows = envelopes
                    .iter()
                    .map(|f| gongkai::office::plays::window_of_file(f))
                    .collect::<anyhow::Result<Vec<_>>>()?;
                if let Some(connect) = &connect {
                    let mut scopes: Vec<String> = store
                        .notice_plays(&id, since)?
                        .into_iter()
                        .map(|p| p.record.scope)
                        .collect();
                    scopes.sort();
                    scopes.dedup();
                    windows.extend(runtime()?.block_on(
                        gongkai::office::plays::retained_windows(connect, &prefix, &scopes, &id),
                    )?);
                }
                let source = match (connect.is_some(), envelopes.is_empty()) {
                    (true, _) => "not retained on the broker nor in an --envelope file",
                    (false, false) => "in no --envelope file; --broker reads the retained notice",
                    (false, true) => "pass --broker or --envelope FILE for windows",
                };
                print!(
                    "{}",
                    gongkai::office::plays::notice_report(
                        &store,
                        &id,
                        since,
                        &windows,
                        source,
                        local_offset()
                    )?
                );
            }
            OfficeCommand::User {
                command: UserCommand::Add { config, name, role },
            } => {
                let role = gongkai::store::office::UserRole::parse(&role).with_context(|| {
                    format!("unknown role {role:?}: staff, supervisor or viewer")
                })?;
                let config = ServerConfig::load(&config)?;
                let link = gongkai::office::console::add_user(&config, &name, role)?;
                println!(
                    "{} is added as {}. Give them this one-time enrolment link (valid {} hours):",
                    printable(&name),
                    role.as_str(),
                    gongkai::office::console::auth::ENROLMENT_SECONDS / 3600
                );
                println!("{link}");
            }
            OfficeCommand::User {
                command:
                    UserCommand::Reenrol {
                        config,
                        name,
                        revoke,
                    },
            } => {
                let config = ServerConfig::load(&config)?;
                let (link, old) = gongkai::office::console::reenrol_user(&config, &name, revoke)?;
                match (old, revoke) {
                    (Some(key), true) => println!(
                        "The key {key} of {} is revoked: screens given the next `gongkai office trust` block reject what it signed.",
                        printable(&name)
                    ),
                    (Some(key), false) => println!(
                        "The key {key} of {} is retired: it signs nothing new, and what it signed still verifies.",
                        printable(&name)
                    ),
                    (None, _) => {}
                }
                println!(
                    "Give {} this one-time enrolment link (valid {} hours); once they have enrolled, give screens the new `gongkai office trust` block:",
                    printable(&name),
                    gongkai::office::console::auth::ENROLMENT_SECONDS / 3600
                );
                println!("{link}");
            }
            OfficeCommand::Trust { config } => {
                let config = ServerConfig::load(&config)?;
                print!("{}", gongkai::office::console::trust(&config)?);
            }
            OfficeCommand::Serve { config } => {
                let config = ServerConfig::load(&config)?;
                runtime()?.block_on(intake::serve(config, gongkai::shutdown_signal()))?;
            }
            OfficeCommand::Token {
                config,
                screen,
                community,
            } => {
                let config = ServerConfig::load(&config)?;
                let token = staff::issue_token(&config, &screen, community.as_deref())?;
                println!(
                    "token for screen {screen} (put it in the screen's token_file, mode 0600):"
                );
                println!("{token}");
            }
            OfficeCommand::Feedback {
                config,
                since,
                csv,
                reveal_contact,
            } => {
                let config = ServerConfig::load(&config)?;
                let since = since
                    .as_deref()
                    .map(|s| staff::parse_since(s, local_offset()))
                    .transpose()?;
                let who = std::env::var("USER")
                    .ok()
                    .filter(|u| !u.is_empty())
                    .unwrap_or_else(|| "unknown".into());
                let contacts = if reveal_contact {
                    Contacts::RevealedTo(&who)
                } else {
                    Contacts::Masked
                };
                let rows = staff::feedback_for_staff(&config, since, contacts)?;
                let now = OffsetDateTime::now_utc();
                if let Some(warning) = staff::calendar_warning(&rows, now, &config.calendar) {
                    eprintln!("gongkai: warning: {warning}");
                }
                if csv {
                    print!(
                        "{}",
                        staff::feedback_csv(&rows, now, local_offset(), &config.calendar)
                    );
                } else {
                    print_feedback(&rows, now, &config.calendar);
                }
            }
            OfficeCommand::Reply {
                config,
                receipts,
                text,
                publisher,
                contact,
                community,
                output,
            } => {
                let config = ServerConfig::load(&config)?;
                let now = OffsetDateTime::now_utc().to_offset(local_offset());
                let request = reply::ReplyRequest {
                    receipts: &receipts,
                    text: &text,
                    publisher: &publisher,
                    contact: &contact,
                    community: community.as_deref(),
                };
                let written = reply::write_reply(&config, &request, &output, now)?;
                let envelope = output.with_extension("env.json");
                println!(
                    "{}: reply notice {} for community {}, answering {}",
                    output.display(),
                    written.notice_id,
                    written.community,
                    written.receipts.join(", ")
                );
                println!("next: sign it, have the supervisory committee sign it, and publish it:");
                println!(
                    "  gongkai sign --key office.key {} -o {}",
                    output.display(),
                    envelope.display()
                );
                println!(
                    "  gongkai sign --key supervisor.key {0} -o {0}",
                    envelope.display()
                );
                println!(
                    "  gongkai publish --broker mqtts://… --key office.key {}",
                    envelope.display()
                );
            }
        },
    }
    Ok(ExitCode::SUCCESS)
}

/// Feedback as a table for staff: the text cut to fit a line, contacts as
/// `feedback_for_staff` left them, the reply deadline (a China date), and
/// overdue items flagged.
fn print_feedback(rows: &[FeedbackRow], now: OffsetDateTime, calendar: &Calendar) {
    if rows.is_empty() {
        println!("no feedback");
        return;
    }
    let when = time::macros::format_description!("[year]-[month]-[day] [hour]:[minute]");
    let header = [
        "receipt", "received", "due", "screen", "kind", "rating", "notice", "text", "contact",
        "flag",
    ];
    let mut table: Vec<[String; 10]> = vec![header.map(str::to_owned)];
    let mut overdue = 0;
    for r in rows {
        let flag = if staff::is_overdue(r, now, calendar) {
            overdue += 1;
            "逾期未复 overdue".to_owned()
        } else if r.replies.is_empty() {
            String::new()
        } else {
            format!("已复 {}", r.replies.join(" "))
        };
        table.push([
            r.receipt.clone(),
            r.received_at
                .to_offset(local_offset())
                .format(&when)
                .unwrap_or_default(),
            staff::reply_due(r, calendar).to_string(),
            r.screen.clone(),
            r.kind.clone(),
            r.rating
                .map(|n| n.to_string())
                .unwrap_or_else(|| "-".into()),
            match (&r.notice_id, r.notice_version) {
                (Some(id), Some(v)) => format!("{id} v{v}"),
                _ => "-".into(),
            },
            truncate(&r.text, 24),
            if r.contact.is_empty() {
                "-".into()
            } else {
                r.contact.clone()
            },
            flag,
        ]);
    }
    let mut widths = [0; 10];
    for line in &table {
        for (w, cell) in widths.iter_mut().zip(line) {
            *w = (*w).max(display_width(cell));
        }
    }
    for line in &table {
        let cells: Vec<String> = line
            .iter()
            .zip(widths)
            .enumerate()
            .map(|(i, (cell, w))| {
                if i + 1 == line.len() {
                    cell.clone()
                } else {
                    format!("{cell}{}", " ".repeat(w - display_width(cell)))
                }
            })
            .collect();
        println!("{}", cells.join("  ").trim_end());
    }
    println!(
        "{} items, {overdue} overdue (逾期未复: no reply written within {REPLY_WORKING_DAYS} working days of receipt)",
        rows.len()
    );
}

/// `text` on one line in at most `width` columns, "…" marking a cut.
fn truncate(text: &str, width: usize) -> String {
    let flat: String = text
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    let flat = flat.trim();
    if flat.is_empty() {
        return "-".into();
    }
    if display_width(flat) <= width {
        return flat.to_owned();
    }
    let mut out = String::new();
    let mut used = 0;
    for c in flat.chars() {
        let w = char_width(c);
        if used + w > width - 1 {
            break;
        }
        out.push(c);
        used += w;
    }
    out.push('…');
    out
}

/// Columns a terminal gives the text: CJK and full-width characters take
/// two, which `format!` padding does not know.
fn display_width(text: &str) -> usize {
    text.chars().map(char_width).sum()
}

fn char_width(c: char) -> usize {
    match u32::from(c) {
        0x1100..=0x115F
        | 0x2E80..=0x303E
        | 0x3041..=0x33FF
        | 0x3400..=0x4DBF
        | 0x4E00..=0x9FFF
        | 0xA000..=0xA4CF
        | 0xAC00..=0xD7A3
        | 0xF900..=0xFAFF
        | 0xFE30..=0xFE4F
        | 0xFF00..=0xFF60
        | 0xFFE0..=0xFFE6
        | 0x1F300..=0x1F64F
        | 0x20000..=0x3FFFD => 2,
        _ => 1,
    }
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
    gongkai::tls::install_crypto_provider();
    Ok(tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?)
}

/// Writes through a temporary file and a rename, so a reader never sees half.
fn write_new(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    gongkai::files::write_atomically(path, bytes)
        .with_context(|| format!("writing {}", path.display()))
}

fn print_cache(path: &Path, json: bool) -> anyhow::Result<()> {
    if !path.exists() {
        anyhow::bail!("{}: no such store", path.display());
    }
    let store = gongkai::store::Store::open_read_only(path)?;
    let audience = gongkai::schedule::Audience::new(
        &store.meta("screen_id")?.unwrap_or_default(),
        &store.meta("community")?.unwrap_or_default(),
    );
    let rows = store.cache_rows(&audience, OffsetDateTime::now_utc())?;
    if json {
        println!("{}", serde_json::to_string_pretty(&rows)?);
        return Ok(());
    }
    println!(
        "{:<20} {:<28} {:>3} {:<9} {:<10} {:<6} {:<27} title",
        "scope", "id", "ver", "status", "category", "active", "window"
    );
    for r in &rows {
        println!(
            "{:<20} {:<28} {:>3} {:<9} {:<10} {:<6} {:<27} {}",
            r.scope,
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
            printable(&r.title)
        );
    }
    let rejections = store.rejections(5)?;
    for (scope, manifest) in store.manifest_states()? {
        let pages = match &manifest.pages {
            Some(p) => format!(" ({} of {} pages held)", p.held.len(), p.count),
            None => String::new(),
        };
        println!(
            "manifest of {scope} version {} lists {} notices{pages}",
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
                printable(&r.topic),
                printable(&r.reason)
            );
        }
    }
    // Residents' feedback still on the screen, and what the office refused.
    let outbox = gongkai::store::outbox::Outbox::open_read_only(path)?;
    let counts = outbox.counts()?;
    println!(
        "\nfeedback outbox: {} pending, {} accepted, {} refused by the office",
        counts.pending, counts.accepted, counts.rejected
    );
    for parked in outbox.parked(20)? {
        println!(
            "  refused {} ({}): {}",
            parked.receipt,
            parked.id,
            printable(&parked.reason)
        );
    }
    Ok(())
}

/// Warns (and goes on) about notice ids with a `.`: valid in the protocol,
/// but NATS 2.9 closes an MQTT connection on a topic that holds one, which
/// would keep every screen on a NATS cluster from fetching the notice. A
/// file that does not parse is left for `publish` to report.
fn warn_dotted_ids(files: &[PathBuf]) {
    for file in files {
        let notice = std::fs::read(file)
            .ok()
            .and_then(|bytes| gongkai::protocol::Envelope::parse(&bytes).ok())
            .and_then(|envelope| envelope.payload_bytes().ok())
            .and_then(|payload| gongkai::protocol::Notice::from_payload(&payload).ok());
        if let Some(notice) = notice.filter(|n| n.id.contains('.')) {
            eprintln!(
                "gongkai: warning: {}: notice id {:?} contains \".\": a NATS 2.9 broker \
                 closes the connection of any screen that subscribes to its topic; \
                 prefer ids without dots",
                file.display(),
                printable(&notice.id)
            );
        }
    }
}

/// One screen of `gongkai status --json`: its retained status as read, and
/// what the office concludes from it (`liveness`, beside `state`).
#[derive(serde::Serialize)]
struct Listed<'a> {
    #[serde(flatten)]
    entry: &'a FleetEntry,
    #[serde(skip_serializing_if = "Option::is_none")]
    liveness: Option<Liveness>,
}

fn print_fleet(screens: &[FleetEntry], json: bool) -> anyhow::Result<()> {
    let now = OffsetDateTime::now_utc();
    if json {
        let listed: Vec<Listed> = screens
            .iter()
            .map(|entry| Listed {
                entry,
                liveness: match entry {
                    FleetEntry::Read(status) => Some(status.liveness(now)),
                    FleetEntry::Unreadable { .. } => None,
                },
            })
            .collect();
        println!("{}", serde_json::to_string_pretty(&listed)?);
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
    // Anything that can publish on a status topic wrote these: escape
    // control characters before they reach the terminal.
    let note = |what: &str, text: &str| println!("{:<20} {what}: {}", "", printable(text));
    for entry in screens {
        match entry {
            FleetEntry::Read(status @ StatusMessage::Online(s)) => {
                let stale = status.liveness(now) == Liveness::Stale;
                println!(
                    "{:<20} {:<8} {:<6} {:>6} {:>6} {:>8} {:>7}  {}",
                    printable(&s.screen),
                    if stale { "stale" } else { "online" },
                    printable(&s.mode),
                    s.active,
                    s.cached,
                    s.rejected,
                    s.manifest.missing,
                    gongkai::protocol::notice::rfc3339(s.updated_at),
                );
                if stale {
                    note(
                        "stale",
                        &format!(
                            "no status for over {} minutes: the screen is probably offline",
                            STALE_AFTER.as_secs() / 60
                        ),
                    );
                }
                if let Some(rejection) = &s.last_rejection {
                    note("last rejection", &rejection.reason);
                }
                if let Some(error) = &s.store_error {
                    note("store failing", error);
                }
                if s.office_unauthorized {
                    note("feedback", "the office refuses this screen's token");
                }
                if s.outbox_rejected > 0 {
                    note(
                        "feedback",
                        &format!("{} items refused by the office", s.outbox_rejected),
                    );
                }
            }
            FleetEntry::Read(StatusMessage::Offline(o)) => println!(
                "{:<20} {:<8} {:<6} {:>6} {:>6} {:>8} {:>7}  -",
                printable(&o.screen),
                "offline",
                "-",
                "-",
                "-",
                "-",
                "-"
            ),
            FleetEntry::Unreadable { screen, error } => {
                println!("{:<20} {:<8}", printable(screen), "?");
                note("unreadable status", error);
            }
        }
    }
    Ok(())
}
