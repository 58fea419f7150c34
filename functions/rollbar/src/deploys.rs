//! `rollbar/deploys/<project>`: Rollbar's own deploy records, kept current.
//!
//! "List all deploys" pages by number, most recent first. A walk reads from the newest
//! page down to the deploys that started a day before the newest one stored (a deploy
//! reported as `started` is updated when it finishes, so the recent ones are read again)
//! and below every deploy last seen `started` (up to a week below the newest), or to the
//! end of the list (an empty page). A walk cut short resumes at its page; a
//! deploy that arrives meanwhile shifts the pages down, so a page may repeat a deploy
//! (merged on its id), never skip one.

use crate::mapping::{deploy_row, deploy_start};
use crate::sync::{ProjectStream, SOURCE};
use async_trait::async_trait;
use chrono::Utc;
use heimdallr_core::engine::{RunStatus, StreamKey, StreamRun};
use heimdallr_core::http::HttpStats;
use heimdallr_core::schema::ROLLBAR_DEPLOYS;
use heimdallr_core::stream::{Stream, StreamError};
use heimdallr_core::walk::{drive, PageOutcome, Pages, WalkState};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::sync::Arc;

pub const DEPLOYS: &str = "deploys";
/// Deploys that started up to this long before the newest one stored are read again.
pub const DEPLOY_LOOKBACK_SECONDS: i64 = 24 * 3600;
/// Deploys asked for per page (the API's default is 20; a quiet project's page 1 holds
/// everything recent).
pub const DEPLOYS_PER_PAGE: u32 = 100;
/// A deploy still `started` this long below the newest one stored is given up on.
pub const OPEN_DEPLOY_HORIZON_SECONDS: i64 = 7 * 24 * 3600;

/// Where the deploys walk is: its mark is the newest `start_time` stored (Unix seconds),
/// its handle the next page number.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct DeploysCursor {
    #[serde(flatten)]
    pub walk: WalkState<i64>,
    /// Deploys last seen `started` (id: start time): walks go below them until they end.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub open: BTreeMap<i64, i64>,
}

/// `rollbar/deploys/<project>`.
pub struct DeploysStream(pub(crate) ProjectStream);

type DeploysRun = StreamRun<DeploysCursor>;

#[async_trait]
impl Stream for DeploysStream {
    type Cursor = DeploysCursor;

    fn key(&self) -> StreamKey {
        StreamKey::new(SOURCE, DEPLOYS, &self.0.project.label)
    }

    fn credential(&self) -> String {
        self.0.project.label.clone()
    }

    fn http(&self) -> Option<Arc<HttpStats>> {
        Some(self.0.client.stats())
    }

    async fn run(&self, run: &mut DeploysRun) -> Result<RunStatus, StreamError> {
        drive(run, &mut DeployPages { stream: &self.0 }).await
    }
}

struct DeployPages<'a> {
    stream: &'a ProjectStream,
}

/// Whether a page whose oldest deploy started at `oldest` ends the walk: it reached the
/// deploys older than the look-back below the mark.
fn reaches_lookback(mark: Option<i64>, oldest: Option<i64>) -> bool {
    matches!((mark, oldest), (Some(mark), Some(oldest)) if oldest < mark - DEPLOY_LOOKBACK_SECONDS)
}

/// Whether a page whose oldest deploy started at `oldest` is below every open deploy.
fn passes_open(open: &BTreeMap<i64, i64>, oldest: Option<i64>) -> bool {
    oldest.is_some_and(|oldest| open.values().all(|start| *start >= oldest))
}

#[async_trait]
impl Pages<DeploysCursor> for DeployPages<'_> {
    fn resuming(&self, cursor: &DeploysCursor) -> bool {
        cursor.walk.is_resuming()
    }

    fn begin(&mut self, run: &mut DeploysRun) {
        // A deploy that never said it ended is not looked for for ever.
        if let Some(mark) = run.cursor.walk.high_water {
            let key = run.key().to_string();
            run.cursor.open.retain(|id, start| {
                let keep = *start >= mark - OPEN_DEPLOY_HORIZON_SECONDS;
                if !keep {
                    tracing::warn!(stream = %key, deploy = id, "a deploy still started a week below the newest: no longer re-read");
                }
                keep
            });
        }
    }

    async fn next_page(&mut self, run: &mut DeploysRun) -> Result<PageOutcome, StreamError> {
        let page: u32 = match run.cursor.walk.next_page() {
            None => 1,
            Some(handle) => match handle.parse() {
                Ok(page) => page,
                Err(_) => {
                    // A handle this stream did not write: start the walk again.
                    run.cursor.walk.restart();
                    return Ok(PageOutcome::Again);
                }
            },
        };
        let (client, token) = (&self.stream.client, &self.stream.project.token);
        let deploys = client
            .deploys_page(token, page, DEPLOYS_PER_PAGE)
            .await
            .map_err(StreamError::from)?;
        run.page_fetched();
        let synced_at = Utc::now();
        let mut records = Vec::with_capacity(deploys.len());
        for deploy in &deploys {
            let id = deploy
                .get("id")
                .map(ToString::to_string)
                .unwrap_or_default();
            match deploy_row(deploy, &self.stream.config.pii, synced_at) {
                Ok(row) => run.add(&ROLLBAR_DEPLOYS, row),
                Err(reason) => {
                    let mut raw = deploy.clone();
                    if let Some(fields) = raw.as_object_mut() {
                        fields.remove("local_username"); // personal
                    }
                    run.reject(&ROLLBAR_DEPLOYS, &id, &reason, raw);
                }
            }
            let start = deploy_start(deploy);
            if let Some(start) = start.and_then(|s| chrono::DateTime::from_timestamp(s, 0)) {
                run.observe_source_time(start);
            }
            if let Some(number) = crate::mapping::lenient_i64(deploy.get("id")) {
                match (deploy.get("status").and_then(|s| s.as_str()), start) {
                    (Some("started"), Some(start)) => {
                        run.cursor.open.insert(number, start);
                    }
                    _ => {
                        run.cursor.open.remove(&number);
                    }
                }
            }
            records.push((id, start));
        }
        let oldest = records.iter().filter_map(|(_, start)| *start).min();
        let done = deploys.is_empty()
            || (reaches_lookback(run.cursor.walk.high_water, oldest)
                && passes_open(&run.cursor.open, oldest));
        let finished = run
            .cursor
            .walk
            .advance(Some((page + 1).to_string()), &records, done);
        Ok(PageOutcome::after_page(finished))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_walk_reads_a_day_below_the_newest_deploy_stored() {
        let mark = 1_800_000_000;
        assert!(
            !reaches_lookback(None, Some(1)),
            "a first walk reads everything"
        );
        assert!(!reaches_lookback(Some(mark), Some(mark - 3600)));
        assert!(!reaches_lookback(
            Some(mark),
            Some(mark - DEPLOY_LOOKBACK_SECONDS)
        ));
        assert!(reaches_lookback(
            Some(mark),
            Some(mark - DEPLOY_LOOKBACK_SECONDS - 1)
        ));
        assert!(
            !reaches_lookback(Some(mark), None),
            "a page without times goes on"
        );
    }

    #[test]
    fn a_walk_goes_below_every_deploy_still_started() {
        let open = BTreeMap::from([(7, 1_000), (9, 5_000)]);
        assert!(!passes_open(&open, Some(2_000)), "deploy 7 is further down");
        assert!(passes_open(&open, Some(999)));
        assert!(passes_open(&BTreeMap::new(), Some(1)));
    }
}
