//! What each subcommand does. Configuration errors are reported with context and exit 2;
//! a pass in which a stream failed exits 1; a warehouse another process holds exits 75
//! (EX_TEMPFAIL: try again later).

use crate::cli::{Cli, Command, LogFormat, SyncArgs, WarehouseArgs};
use crate::sources::Prepared;
use anyhow::Result;
use heimdallr_core::engine::{Progress, RunOutcome, RunStatus, SyncOptions};
use heimdallr_core::pii::PiiPolicy;
use heimdallr_core::source::Common;
use heimdallr_core::warehouse::{self, Warehouse, WarehouseError, WarehouseTarget};
use std::io::IsTerminal;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

pub async fn run(cli: Cli) -> Result<ExitCode> {
    match cli.command {
        Command::Migrate(args) => {
            let warehouse = open_warehouse(&args.warehouse).await?;
            let migrated = warehouse.migrate(None).await?;
            let applied = &migrated.applied;
            if applied.is_empty() {
                println!("{}: schema is up to date", warehouse.describe());
            } else {
                println!("{}: applied migrations {applied:?}", warehouse.describe());
            }
            // Asked for explicitly, a view that could not be created fails the command
            // (a sync goes on without it).
            if let Some(error) = &migrated.views_failed {
                eprintln!("error: the analyst views could not be created (the tables are migrated): {error}");
                return Ok(ExitCode::FAILURE);
            }
            if let Err(error) = heimdallr_core::environments::store_analyst_settings(
                warehouse.as_ref(),
                args.environments.as_ref(),
                args.activity_table.as_deref(),
            )
            .await
            {
                eprintln!("error: the environments or the activity views could not be stored (the tables are migrated): {error}");
                return Ok(ExitCode::FAILURE);
            }
            if let Some(activity) = &args.activity_table {
                println!("{}: views over {activity} defined", warehouse.describe());
                let started = Instant::now();
                match heimdallr_core::environments::refresh_estimates_now(warehouse.as_ref(), None)
                    .await
                {
                    Ok(()) => println!(
                        "{}: retention estimates refreshed in {:.1}s",
                        warehouse.describe(),
                        started.elapsed().as_secs_f64()
                    ),
                    Err(error) => {
                        eprintln!("error: the retention estimates could not be refreshed: {error}");
                        return Ok(ExitCode::FAILURE);
                    }
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Status(args) => {
            let target = WarehouseTarget::parse(&args.warehouse)?;
            match warehouse::open_for_reading(&target, &args.schema).await? {
                Some(warehouse) => print_status(warehouse.as_ref()).await?,
                None => println!(
                    "{}: no file yet; `heimdallr sync <source> --once` creates it",
                    target.describe()
                ),
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Top(args) => {
            let target = WarehouseTarget::parse(&args.warehouse.warehouse)?;
            let Some(warehouse) =
                warehouse::open_for_reading(&target, &args.warehouse.schema).await?
            else {
                println!(
                    "{}: no file yet; `heimdallr sync <source> --once` creates it",
                    target.describe()
                );
                return Ok(ExitCode::SUCCESS);
            };
            match warehouse.fix_next(args.limit).await? {
                None => println!(
                    "{}: no fix_next view yet; `heimdallr sync <source> --once` or `heimdallr migrate` creates it",
                    warehouse.describe()
                ),
                Some(rows) if rows.is_empty() => println!(
                    "{}: no open error or critical item: nothing to fix",
                    warehouse.describe()
                ),
                Some(rows) => {
                    for line in crate::top::render(&rows) {
                        println!("{line}");
                    }
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Sync(args) => sync(*args, cli.log_format).await,
    }
}

/// The exit code for an error that stopped the command: 75 (EX_TEMPFAIL) when another
/// process holds the warehouse, 2 (a setting is wrong) otherwise.
pub fn exit_code_for(error: &anyhow::Error) -> ExitCode {
    let busy = error.chain().any(|cause| {
        cause
            .downcast_ref::<WarehouseError>()
            .is_some_and(WarehouseError::is_busy)
    });
    ExitCode::from(if busy { EXIT_BUSY } else { EXIT_SETTING })
}

/// Exit codes the README documents.
const EXIT_SETTING: u8 = 2;
const EXIT_BUSY: u8 = 75;

async fn open_warehouse(args: &WarehouseArgs) -> Result<Arc<dyn Warehouse>> {
    let target = WarehouseTarget::parse(&args.warehouse)?;
    Ok(warehouse::open(&target, &args.schema).await?)
}

/// The sources one `sync` runs, ready: the one named, or for `all` every source whose
/// credential is set.
fn sources(args: &SyncArgs) -> Result<Vec<Box<dyn Prepared>>> {
    let common = Common {
        http: args.engine.http(),
    };
    let salt = std::env::var("HEIMDALLR_PII_SALT").ok();
    let pii = PiiPolicy::from_config(&args.engine.pii, salt.as_deref())?;
    let registered = crate::sources::registered(&args.sources);
    let configured = |var: &str| std::env::var(var).is_ok_and(|v| !v.trim().is_empty());
    let mut ready = Vec::new();
    for source in &registered {
        let wanted = if args.source == "all" {
            configured(source.credential_env())
        } else {
            args.source == source.name()
        };
        if wanted {
            ready.push(source.prepare(&common, &pii)?);
        }
    }
    if ready.is_empty() {
        let variables: Vec<&str> = registered.iter().map(|s| s.credential_env()).collect();
        anyhow::bail!("nothing to sync: set {}", variables.join(", "));
    }
    Ok(ready)
}

async fn sync(args: SyncArgs, log_format: LogFormat) -> Result<ExitCode> {
    // Validate every setting before touching the warehouse.
    let sources = sources(&args)?;
    let warehouse = open_warehouse(&args.warehouse).await?;
    let applied = warehouse.migrate(None).await?.applied;
    if !applied.is_empty() {
        tracing::info!(warehouse = %warehouse.describe(), migrations = ?applied, "schema migrated");
    }
    heimdallr_core::environments::apply_analyst_settings(
        warehouse.as_ref(),
        args.engine.environments.as_ref(),
        args.engine.activity_table.as_deref(),
    )
    .await;
    let progress = ProgressDisplay::new(log_format);
    loop {
        let started = Instant::now();
        let mut options = SyncOptions::new(args.max_duration.map(|d| started + d));
        options.batch_rows = args.engine.batch_rows as usize;
        options.batch_bytes = args.engine.batch_bytes;
        options.progress = progress.callback();
        tracing::info!(run_id = %options.run_id, warehouse = %warehouse.describe(), "sync pass started");
        let mut outcomes = Vec::new();
        for source in &sources {
            outcomes.extend(source.sync(&warehouse, &options).await);
        }
        progress.clear();
        report(&outcomes);
        // What fix_next ranks by, from what this pass landed (when due: every few hours).
        heimdallr_core::environments::refresh_estimates(
            warehouse.as_ref(),
            args.engine.activity_table.as_deref(),
            None,
        )
        .await;
        let failed = outcomes.iter().any(|o| o.status == RunStatus::Failed);
        if args.once {
            return Ok(if failed {
                ExitCode::from(1)
            } else {
                ExitCode::SUCCESS
            });
        }
        let wait = args.interval.saturating_sub(started.elapsed());
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = tokio::signal::ctrl_c() => {
                tracing::info!("interrupted; stopping between passes");
                return Ok(ExitCode::SUCCESS);
            }
        }
    }
}

fn report(outcomes: &[RunOutcome]) {
    for outcome in outcomes {
        let line = format!(
            "{}: {} - {} rows, {} pages, {} retries, {} rejects in {:.1}s",
            outcome.key,
            outcome.status.as_str(),
            outcome.rows_written,
            outcome.pages_fetched,
            outcome.api_retries,
            outcome.rejects,
            outcome.duration.as_secs_f64()
        );
        println!("{line}");
        if let Some(error) = &outcome.error {
            eprintln!("heimdallr: error: {} failed: {error}", outcome.key);
        }
    }
}

/// Columns of `heimdallr status`: every line fits 100 columns.
const STATUS_WIDTH: usize = 100;
const STREAM_WIDTH: usize = 40;

/// The environment map's lines: which Heroku app runs which Rollbar environment, and
/// whether the setting says so or the shas suggest it.
fn print_environments(map: &[heimdallr_core::warehouse::MappedEnvironment]) {
    if map.is_empty() {
        return;
    }
    println!();
    println!("ENVIRONMENTS (Heroku app -> Rollbar project/environment)");
    for line in map {
        let origin = match (line.origin.as_str(), &line.shared_versions) {
            ("inferred", Some(shared)) => format!("inferred from {shared} shared code versions"),
            (stage, Some(shared)) if stage.starts_with("pipeline stage ") => {
                let stage = stage.trim_start_matches("pipeline ");
                format!("Heroku {stage} ({shared} shared code versions)")
            }
            (origin, _) => origin.to_string(),
        };
        println!(
            "{:<28} -> {}/{}  {origin}",
            line.heroku_app, line.rollbar_project_id, line.rollbar_environment
        );
    }
}

async fn print_status(warehouse: &dyn Warehouse) -> Result<()> {
    println!("{}", warehouse.describe());
    let map = warehouse.environment_map().await.unwrap_or_else(|e| {
        tracing::warn!(error = %e, "the environment map could not be read");
        Vec::new()
    });
    let Some(rows) = warehouse.status().await? else {
        println!("Heimdallr's tables are not there yet: `heimdallr sync <source> --once` or `heimdallr migrate` creates them");
        return Ok(());
    };
    if rows.is_empty() {
        println!("no stream has run yet: try `heimdallr sync all --once`");
        return Ok(());
    }
    println!(
        "{:<STREAM_WIDTH$} {:<9} {:<19} {:>9} {:>8}",
        "STREAM", "LAST RUN", "STARTED (UTC)", "ROWS", "LAG"
    );
    let now = chrono::Utc::now();
    let indent = "    ";
    for row in rows {
        let lag = row
            .source_time
            .map(|t| human_duration((now - t).to_std().unwrap_or_default()))
            .unwrap_or_else(|| "-".into());
        let mut stream = format!("{}/{}/{}", row.source, row.stream, row.scope);
        if stream.chars().count() > STREAM_WIDTH {
            // A long scope (CircleCI's GitHub App slugs): the name gets a line of its own.
            println!("{stream}");
            stream.clear();
        }
        println!(
            "{:<STREAM_WIDTH$} {:<9} {:<19} {:>9} {:>8}",
            stream,
            row.last_run_status.as_deref().unwrap_or("-"),
            row.last_run_started_at
                .map(|t| t.format("%Y-%m-%d %H:%M:%S").to_string())
                .unwrap_or_else(|| "-".into()),
            row.last_run_rows.map_or("-".into(), |r| r.to_string()),
            lag,
        );
        if let Some(cursor) = row.cursor.as_deref() {
            let summary = match serde_json::from_str::<serde_json::Value>(cursor) {
                Ok(cursor) => heimdallr_core::text::summarize_cursor(
                    &cursor,
                    STATUS_WIDTH - indent.len() - "at: ".len(),
                ),
                Err(_) => "(unreadable)".into(),
            };
            println!("{indent}at: {summary}");
        }
        if let Some(error) = row.last_run_error {
            let error = heimdallr_core::text::truncate_utf8(&error, 600);
            let width = STATUS_WIDTH - indent.len() - "last error: ".len();
            for (i, line) in heimdallr_core::text::wrap(error, width).iter().enumerate() {
                let label = if i == 0 {
                    "last error: "
                } else {
                    "            "
                };
                println!("{indent}{label}{line}");
            }
        }
    }
    print_environments(&map);
    Ok(())
}

fn human_duration(d: Duration) -> String {
    let secs = d.as_secs();
    match secs {
        0..=59 => format!("{secs}s"),
        60..=3599 => format!("{}m{:02}s", secs / 60, secs % 60),
        3600..=86_399 => format!("{}h{:02}m", secs / 3600, (secs % 3600) / 60),
        _ => format!("{}d{:02}h", secs / 86_400, (secs % 86_400) / 3600),
    }
}

/// A spinner on stderr while a pass runs, only when stderr is a terminal and logs are text.
struct ProgressDisplay {
    bar: Option<indicatif::ProgressBar>,
}

impl ProgressDisplay {
    fn new(log_format: LogFormat) -> Self {
        let interactive = log_format == LogFormat::Text && std::io::stderr().is_terminal();
        let bar = interactive.then(|| {
            let bar = indicatif::ProgressBar::new_spinner();
            bar.enable_steady_tick(Duration::from_millis(120));
            bar
        });
        Self { bar }
    }

    fn callback(&self) -> Option<Progress> {
        let bar = self.bar.clone()?;
        Some(Progress(Arc::new(move |key, rows| {
            bar.set_message(format!("{key}: {rows} rows written"));
        })))
    }

    fn clear(&self) {
        if let Some(bar) = &self.bar {
            bar.set_message("");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::human_duration;
    use std::time::Duration;

    #[test]
    fn lag_reads_at_a_glance() {
        assert_eq!(human_duration(Duration::from_secs(5)), "5s");
        assert_eq!(human_duration(Duration::from_secs(192)), "3m12s");
        assert_eq!(human_duration(Duration::from_secs(7300)), "2h01m");
        assert_eq!(human_duration(Duration::from_secs(90_000)), "1d01h");
    }
}
