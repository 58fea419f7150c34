//! Command-line surface: names here are the ones the README documents.

use clap::{Args, Parser, Subcommand, ValueEnum};
use std::time::Duration;

#[derive(Debug, Parser)]
#[command(
    name = "heimdallr",
    version,
    about = "Copies Rollbar, CircleCI and Heroku data into a warehouse (a local DuckDB file, PostgreSQL or Redshift), exactly once.",
    after_help = "Exit codes: 0 every stream fine; 1 a stream failed (the others still ran); 2 a setting is wrong; 75 the warehouse is in use by another process (try again)."
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
    /// Log lines as text for people or JSON for machines (stderr).
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text, env = "HEIMDALLR_LOG_FORMAT")]
    pub log_format: LogFormat,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Args, Clone)]
pub struct WarehouseArgs {
    /// Where to write: a DuckDB file path (default warehouse.duckdb), duckdb://PATH,
    /// postgres://user[:password]@host:port/database or redshift-data://... (see the README).
    #[arg(long, env = "HEIMDALLR_WAREHOUSE", default_value = heimdallr_core::warehouse::DEFAULT_DUCKDB_PATH)]
    pub warehouse: String,
    /// Schema that holds Heimdallr's tables.
    #[arg(long, env = "HEIMDALLR_SCHEMA", default_value = heimdallr_core::source::DEFAULT_SCHEMA)]
    pub schema: String,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Copy what is new and what changed from a source into the warehouse.
    Sync(Box<SyncArgs>),
    /// Show each stream's last run, rows, lag behind the source and position (reads only).
    Status(WarehouseArgs),
    /// Create or upgrade the warehouse tables and views (sync does this too), and the
    /// views over your activity table when it is set.
    Migrate(MigrateArgs),
    /// Print which bugs to fix first: the fix_next view, ranked (reads only).
    Top(TopArgs),
}

#[derive(Debug, Args)]
pub struct MigrateArgs {
    #[command(flatten)]
    pub warehouse: WarehouseArgs,
    /// The environments setting, stored as a sync stores it (docs/analysts.md).
    #[arg(long, env = "HEIMDALLR_ENVIRONMENTS", value_parser = heimdallr_core::environments::parse)]
    pub environments: Option<heimdallr_core::environments::Environments>,
    /// Your activity table (`schema.table`): the views over it are (re)defined.
    #[arg(long, env = "HEIMDALLR_ACTIVITY_TABLE", value_parser = heimdallr_core::environments::parse_activity_table)]
    pub activity_table: Option<String>,
}

#[derive(Debug, Args)]
pub struct TopArgs {
    /// How many items to list.
    #[arg(long, default_value_t = 20, value_parser = clap::value_parser!(u32).range(1..=1000))]
    pub limit: u32,
    #[command(flatten)]
    pub warehouse: WarehouseArgs,
}

#[derive(Debug, Args)]
pub struct SyncArgs {
    /// Which source to sync, or all (every source whose credential is set).
    #[arg(value_parser = clap::builder::PossibleValuesParser::new(crate::sources::NAMES))]
    pub source: String,
    /// Run one pass and exit, instead of syncing every --interval until interrupted.
    #[arg(long)]
    pub once: bool,
    /// Time between passes when not --once.
    #[arg(long, default_value = "60s", value_parser = parse_duration)]
    pub interval: Duration,
    /// Stop starting new pages after this long (e.g. 90s, 10m); the next run resumes.
    #[arg(long, env = "HEIMDALLR_MAX_DURATION", value_parser = parse_duration)]
    pub max_duration: Option<Duration>,
    #[command(flatten)]
    pub engine: heimdallr_core::source::EngineSettings,
    #[command(flatten)]
    pub warehouse: WarehouseArgs,
    #[command(flatten)]
    pub sources: crate::sources::SourceSettings,
}

fn parse_duration(text: &str) -> Result<Duration, String> {
    heimdallr_core::time::parse_duration(text)
}

pub fn init_logging(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,tokio_postgres=warn"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .init(),
        LogFormat::Text => builder
            .with_target(false)
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .compact()
            .init(),
    }
}
