//! A newcomer's first run, exactly as the README writes it: its first command with only a
//! token (and the fake API's URL) in an empty folder, then `heimdallr status`, then the
//! README's "Querying the local file" queries against the file the defaults made. The
//! commands and queries are read from the README itself, so the test follows the docs.

mod common;

use common::*;
use heimdallr_fakes::rollbar::FakeRollbar;
use std::path::Path;
use std::process::Stdio;
use tokio::process::Command;

const TOKEN: &str = "tok-first-run-0123456789abcdef";

fn readme() -> String {
    std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).expect("README")
}

/// The arguments of the README's first command (`... cargo run -- ARGS`).
fn first_command_args() -> Vec<String> {
    let readme = readme();
    let line = readme
        .lines()
        .find(|l| l.contains("cargo run --") && !l.trim_start().starts_with('#'))
        .expect("the README's first command runs `cargo run -- ...`");
    line.split("cargo run --")
        .nth(1)
        .expect("arguments after `cargo run --`")
        .split_whitespace()
        .map(String::from)
        .collect()
}

/// The fenced blocks of `lang` in the README section headed `heading`.
fn blocks_in_section(heading: &str, lang: &str) -> Vec<String> {
    let readme = readme();
    let start = readme
        .find(&format!("\n## {heading}\n"))
        .unwrap_or_else(|| panic!("README has a section {heading:?}"));
    let section = &readme[start + 1..];
    let section = &section[..section[3..].find("\n## ").map_or(section.len(), |e| e + 3)];
    let fence = format!("```{lang}\n");
    section
        .split(&fence)
        .skip(1)
        .map(|block| block.split("```").next().unwrap_or_default().to_string())
        .collect()
}

/// The command the README runs, in `dir`, with a newcomer's environment: the token and the
/// API URL only (no warehouse, no schema setting).
fn newcomer(dir: &Path, api_url: &str, args: &[String]) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_heimdallr"));
    command
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("ROLLBAR_ACCESS_TOKEN", TOKEN)
        .env("ROLLBAR_API_URL", api_url)
        .current_dir(dir)
        .args(args)
        .stdin(Stdio::null())
        .kill_on_drop(true);
    command
}

fn recent_project(fake: &FakeRollbar) {
    fake.add_project(TOKEN, 7, 3, 40);
    // A few occurrences inside the README queries' 7-day window.
    let now = chrono::Utc::now().timestamp();
    let item = fake.new_item(TOKEN, "production");
    for (i, person) in ["u-1", "u-2", "u-1"].iter().enumerate() {
        fake.occur(
            TOKEN,
            item,
            now - 3600 * (i as i64 + 1),
            "production",
            Some(person),
            None,
        );
    }
}

#[tokio::test]
async fn the_readme_first_command_then_status_then_its_queries_work_in_an_empty_folder() {
    let fake = FakeRollbar::start(5).await.unwrap();
    recent_project(&fake);
    let dir = TempDir::new("first-run");

    // `status` before anything ran: says so, creates nothing.
    let status = run(newcomer(dir.path(), &fake.api_url(), &["status".into()])).await;
    assert_eq!(status.code, Some(0), "{}{}", status.stdout, status.stderr);
    assert!(status.stdout.contains("no file yet"), "{}", status.stdout);
    assert_eq!(
        std::fs::read_dir(dir.path()).unwrap().count(),
        0,
        "status created nothing"
    );

    let args = first_command_args();
    assert_eq!(
        args,
        ["sync", "rollbar", "--once"],
        "the README's first command"
    );
    let sync = run(newcomer(dir.path(), &fake.api_url(), &args)).await;
    assert_eq!(sync.code, Some(0), "{}\n{}", sync.stdout, sync.stderr);
    assert!(
        sync.stdout
            .contains("rollbar/occurrences/default: succeeded"),
        "{}",
        sync.stdout
    );
    // The defaults ask Rollbar for occurrences and items only: deploy records are opt-in
    // (ROLLBAR_DEPLOYS), so a token or account without them never fails the first sync.
    assert!(
        fake.request_log().iter().all(|r| !r.contains("/deploys")),
        "{:?}",
        fake.request_log()
    );
    let file = dir
        .path()
        .join(heimdallr_core::warehouse::DEFAULT_DUCKDB_PATH);
    assert!(file.exists(), "the default file is made in the folder");

    let status = run(newcomer(dir.path(), &fake.api_url(), &["status".into()])).await;
    assert_eq!(status.code, Some(0), "{}{}", status.stdout, status.stderr);
    for stream in ["rollbar/items/default", "rollbar/occurrences/default"] {
        assert!(status.stdout.contains(stream), "{}", status.stdout);
    }
    assert!(status.stdout.contains("succeeded"), "{}", status.stdout);
    assert!(
        status.stdout.contains("at: high_water="),
        "{}",
        status.stdout
    );
    for line in status.stdout.lines() {
        assert!(
            line.chars().count() <= 100,
            "status lines fit 100 columns: {line:?}"
        );
    }

    // `top`: which bug to fix first, readable in a terminal, without writing SQL.
    let top = run(newcomer(dir.path(), &fake.api_url(), &["top".into()])).await;
    assert_eq!(top.code, Some(0), "{}{}", top.stdout, top.stderr);
    assert!(top.stdout.starts_with("Fix next: "), "{}", top.stdout);
    assert!(
        top.stdout.contains("HEIMDALLR_ACTIVITY_TABLE"),
        "without the activity table it says how to rank by users lost:\n{}",
        top.stdout
    );
    assert!(
        top.stdout.lines().any(|l| l.starts_with("  1  ")),
        "{}",
        top.stdout
    );
    assert!(
        top.stdout.contains("https://rollbar.com/item/uuid/?uuid="),
        "{}",
        top.stdout
    );
    for line in top.stdout.lines() {
        assert!(
            line.chars().count() <= 100,
            "top fits 100 columns: {line:?}"
        );
    }

    // The README's queries, as written, in the file the defaults made, with the DuckDB
    // clients analysts use (the Python package runs the same engine as the CLI).
    let statements: Vec<String> = blocks_in_section("Querying the local file", "sql")
        .iter()
        .flat_map(|block| {
            block
                .split(';')
                .map(|s| {
                    s.lines()
                        .filter(|l| !l.trim_start().starts_with("--"))
                        .collect::<Vec<_>>()
                        .join("\n")
                })
                .filter(|s| !s.trim().is_empty())
                .collect::<Vec<_>>()
        })
        .collect();
    assert!(
        statements.len() >= 2,
        "the README shows queries: {statements:?}"
    );
    let python_examples = blocks_in_section("Querying the local file", "python");
    assert!(
        !python_examples.is_empty(),
        "the README shows a Python example"
    );
    let clients = duckdb_clients();
    for python in &clients {
        for sql in &statements {
            let script = format!(
                "import duckdb, sys\n\
                 con = duckdb.connect({file:?}, read_only=True)\n\
                 print(len(con.sql(sys.stdin.read()).fetchall()))",
                file = file.display().to_string()
            );
            let rows = run_python(python, dir.path(), &script, sql).await;
            let rows: usize = rows
                .trim()
                .parse()
                .unwrap_or_else(|_| panic!("{python}: {rows}"));
            assert!(rows > 0, "{python}: the README query returns rows:\n{sql}");
        }
        // The Python example as written, from the folder the command ran in.
        for example in &python_examples {
            let printed = run_python(python, dir.path(), example, "").await;
            assert!(printed.contains("count_star()"), "{python}: {printed}");
        }
    }
}

#[tokio::test]
async fn a_second_sync_on_a_file_another_process_holds_exits_75_and_says_so() {
    let fake = FakeRollbar::start(6).await.unwrap();
    recent_project(&fake);
    let dir = TempDir::new("locked");
    let args = first_command_args();
    let first = run(newcomer(dir.path(), &fake.api_url(), &args)).await;
    assert_eq!(first.code, Some(0), "{}", first.stderr);

    // This process holds the file as a writer, as a running sync would.
    let file = dir
        .path()
        .join(heimdallr_core::warehouse::DEFAULT_DUCKDB_PATH);
    let holder = duckdb::Connection::open(&file).unwrap();
    let second = run(newcomer(dir.path(), &fake.api_url(), &args)).await;
    assert_eq!(second.code, Some(75), "{}", second.stderr);
    assert!(
        second.stderr.contains("in use by another process"),
        "{}",
        second.stderr
    );
    drop(holder);
    let third = run(newcomer(dir.path(), &fake.api_url(), &args)).await;
    assert_eq!(third.code, Some(0), "{}", third.stderr);
}

#[tokio::test]
async fn a_file_named_like_the_schema_is_refused_with_the_reason() {
    let fake = FakeRollbar::start(7).await.unwrap();
    recent_project(&fake);
    let dir = TempDir::new("clash");
    let mut command = newcomer(
        dir.path(),
        &fake.api_url(),
        &["sync".into(), "rollbar".into(), "--once".into()],
    );
    command.env("HEIMDALLR_WAREHOUSE", "heimdallr.duckdb");
    let finished = run(command).await;
    assert_eq!(finished.code, Some(2), "{}", finished.stderr);
    assert!(
        finished.stderr.contains("ambiguous"),
        "says why: {}",
        finished.stderr
    );
}

#[tokio::test]
async fn an_api_url_without_its_version_path_says_what_was_expected() {
    let fake = FakeRollbar::start(8).await.unwrap();
    recent_project(&fake);
    let dir = TempDir::new("no-version-path");
    let base = fake.api_url().trim_end_matches("/api/1").to_string();
    let finished = run(newcomer(dir.path(), &base, &first_command_args())).await;
    assert_eq!(finished.code, Some(1), "{}", finished.stderr);
    assert!(
        finished.stderr.contains("ROLLBAR_API_URL") && finished.stderr.contains("/api/1"),
        "names the setting and the expected path: {}",
        finished.stderr
    );
}
