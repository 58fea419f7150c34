//! The one contract every source's streams follow, and the one runner that drives them.
//!
//! A source (its crate) turns its settings and credentials into [`Stream`]s: each reads
//! one API list into tables, with a typed cursor. The runner owns everything around a
//! stream's own logic, the same for every source: reading the cursor, the run record
//! (start, finish, the summary log line), the time budget, and stopping the streams that
//! share a credential once one of them is refused. Errors carry an [`ErrorKind`] so that
//! the Lambda frame and the command react to an authentication failure (re-read a rotated
//! secret, say so) without reading error text.

use crate::engine::{CursorError, RunOutcome, RunStatus, StreamKey, StreamRun, SyncOptions};
use crate::http::{HttpError, HttpStats};
use crate::warehouse::{Warehouse, WarehouseError};
use async_trait::async_trait;
use serde::de::DeserializeOwned;
use serde::Serialize;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

/// What ended a stream run, for code that reacts to it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// The API refused the credential (401, or a token that cannot be sent): every stream
    /// sharing it would fail too, so the runner skips them.
    Authentication,
    /// The API refused this call to the credential (403): it may still read other
    /// resources (another Heroku app, another project), so the other streams run.
    Forbidden,
    /// The API's rate limit asked for a longer wait than allowed.
    RateLimit,
    /// The API answered with something that is not what its contract says (a page that
    /// does not move on, an unknown project, a refused range, a malformed body).
    ApiShape,
    /// The API could not be reached, or failed, after the retries.
    Api,
    /// The warehouse failed.
    Warehouse,
    /// The stored cursor does not read as the stream's.
    State,
}

impl ErrorKind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Authentication => "authentication",
            Self::Forbidden => "forbidden",
            Self::RateLimit => "rate_limit",
            Self::ApiShape => "api_shape",
            Self::Api => "api",
            Self::Warehouse => "warehouse",
            Self::State => "state",
        }
    }
}

/// Why a stream run failed: its kind and what to tell the user (never a credential).
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct StreamError {
    pub kind: ErrorKind,
    message: String,
}

impl StreamError {
    pub fn new(kind: ErrorKind, message: impl std::fmt::Display) -> Self {
        Self {
            kind,
            message: message.to_string(),
        }
    }

    /// The API answered something its contract does not allow.
    pub fn shape(message: impl std::fmt::Display) -> Self {
        Self::new(ErrorKind::ApiShape, message)
    }
}

impl From<HttpError> for StreamError {
    fn from(error: HttpError) -> Self {
        let kind = match &error {
            HttpError::Unauthorized { .. } => ErrorKind::Authentication,
            HttpError::Forbidden { .. } => ErrorKind::Forbidden,
            HttpError::RateLimited { .. } => ErrorKind::RateLimit,
            HttpError::Malformed { .. } => ErrorKind::ApiShape,
            HttpError::NotFound { .. }
            | HttpError::Status { .. }
            | HttpError::TimedOut { .. }
            | HttpError::TooLarge { .. }
            | HttpError::Unreachable { .. }
            | HttpError::BadUrl(_) => ErrorKind::Api,
        };
        Self::new(kind, error)
    }
}

impl From<WarehouseError> for StreamError {
    fn from(error: WarehouseError) -> Self {
        Self::new(ErrorKind::Warehouse, error)
    }
}

impl From<CursorError> for StreamError {
    fn from(error: CursorError) -> Self {
        Self::new(ErrorKind::State, error)
    }
}

/// One stream of a source: a list of an API read into tables, resumable from its cursor.
#[async_trait]
pub trait Stream: Send + Sync {
    /// Where the stream is: stored in `_heimdallr_state`, committed with the rows.
    type Cursor: Serialize + DeserializeOwned + Default + Send + Sync;

    /// The stream's name and scope, e.g. `rollbar/occurrences/web`.
    fn key(&self) -> StreamKey;

    /// Streams that use the same credential: once one is refused (401), the runner does
    /// not run the others of the group in that pass.
    fn credential(&self) -> String {
        String::new()
    }

    /// The API client's counters (retries, for the run record).
    fn http(&self) -> Option<Arc<HttpStats>> {
        None
    }

    /// One run from `run.cursor`: fetch, map, add rows and commit as it goes.
    async fn run(&self, run: &mut StreamRun<Self::Cursor>) -> Result<RunStatus, StreamError>;
}

/// A stream whose cursor type is its own business: what the runner holds.
#[async_trait]
pub trait AnyStream: Send + Sync {
    fn key(&self) -> StreamKey;
    fn credential(&self) -> String;
    /// One run, recorded: start, the stream's logic, finish.
    async fn run_recorded(
        &self,
        warehouse: &Arc<dyn Warehouse>,
        options: &SyncOptions,
    ) -> RunOutcome;
}

#[async_trait]
impl<S: Stream> AnyStream for S {
    fn key(&self) -> StreamKey {
        Stream::key(self)
    }

    fn credential(&self) -> String {
        Stream::credential(self)
    }

    async fn run_recorded(
        &self,
        warehouse: &Arc<dyn Warehouse>,
        options: &SyncOptions,
    ) -> RunOutcome {
        let key = Stream::key(self);
        let mut run = match StreamRun::<S::Cursor>::start(
            Arc::clone(warehouse),
            key.clone(),
            options,
            self.http(),
        )
        .await
        {
            Ok(run) => run,
            Err(e) => {
                tracing::error!(stream = %key, error = %e, "stream run could not start");
                return RunOutcome::not_started(key, e);
            }
        };
        let result = self.run(&mut run).await;
        if let Err(e) = &result {
            tracing::error!(stream = %key, kind = e.kind.as_str(), error = %e, "stream run failed");
        }
        run.finish(result).await
    }
}

/// Runs `streams` one after the other, each in its own transactions, and logs each one's
/// summary line. After a stream's credential is refused, the streams sharing it are not
/// run (they would fail the same way: it is said once).
pub async fn run_streams(
    warehouse: &Arc<dyn Warehouse>,
    streams: &[Box<dyn AnyStream>],
    options: &SyncOptions,
) -> Vec<RunOutcome> {
    let mut refused: BTreeSet<String> = BTreeSet::new();
    let mut outcomes = Vec::with_capacity(streams.len());
    for stream in longest_waiting_first(warehouse, streams, options).await {
        let credential = stream.credential();
        if refused.contains(&credential) {
            tracing::warn!(stream = %stream.key(), "not run: its credential was refused earlier in this pass");
            continue;
        }
        let outcome = stream.run_recorded(warehouse, options).await;
        outcome.log(&options.run_id);
        if outcome.error_kind == Some(ErrorKind::Authentication) {
            refused.insert(credential);
        }
        outcomes.push(outcome);
    }
    outcomes
}

/// The streams in the order a pass runs them: scopes (an app, a project) whose last turn
/// (a run that made a request) is oldest first, never-served ones before all, a scope's
/// own streams together and in their given order. A pass can stop early (a shared rate
/// budget, the time budget): the same order every run would leave the last scopes without
/// a turn for ever, while this one is a round robin. Without a record (a first run, a
/// warehouse that cannot say) the given order stands.
async fn longest_waiting_first<'a>(
    warehouse: &Arc<dyn Warehouse>,
    streams: &'a [Box<dyn AnyStream>],
    options: &SyncOptions,
) -> Vec<&'a dyn AnyStream> {
    let keys: Vec<StreamKey> = streams.iter().map(|s| s.key()).collect();
    let scopes: BTreeSet<(&str, &str)> =
        keys.iter().map(|k| (k.source, k.scope.as_str())).collect();
    if scopes.len() < 2 {
        // One scope: nothing to take turns with, no read.
        return streams.iter().map(|s| s.as_ref()).collect();
    }
    let mut turns = BTreeMap::new();
    let sources: BTreeSet<&'static str> = keys.iter().map(|k| k.source).collect();
    let deadline = options.deadline;
    for source in sources {
        match warehouse.last_turns(source, deadline).await {
            Ok(found) => {
                for turn in found {
                    turns.insert((source, turn.stream, turn.scope), turn.at);
                }
            }
            Err(e) => {
                tracing::debug!(source, error = %e, "last turns not read; streams run in their given order")
            }
        }
    }
    let order = fair_order(&keys, |key| {
        turns
            .get(&(key.source, key.stream.to_string(), key.scope.clone()))
            .copied()
            .flatten()
    });
    order.into_iter().map(|i| streams[i].as_ref()).collect()
}

/// Indexes of `keys` with scopes ordered by their last turn (the latest of their streams';
/// none: never served, first), ties in the given order; a scope's streams stay together.
fn fair_order(
    keys: &[StreamKey],
    last_turn: impl Fn(&StreamKey) -> Option<chrono::DateTime<chrono::Utc>>,
) -> Vec<usize> {
    type Turn = Option<chrono::DateTime<chrono::Utc>>;
    let mut scopes: Vec<(Turn, (&str, &str))> = Vec::new();
    for key in keys {
        let scope = (key.source, key.scope.as_str());
        let turn = last_turn(key);
        match scopes.iter_mut().find(|(_, s)| *s == scope) {
            // A scope had its turn when any of its streams did.
            Some((latest, _)) => *latest = (*latest).max(turn),
            None => scopes.push((turn, scope)),
        }
    }
    // `None` (never served) sorts before any time; the sort is stable.
    scopes.sort_by_key(|(latest, _)| *latest);
    let mut order = Vec::with_capacity(keys.len());
    for (_, scope) in &scopes {
        order.extend(
            keys.iter()
                .enumerate()
                .filter(|(_, k)| (k.source, k.scope.as_str()) == *scope)
                .map(|(i, _)| i),
        );
    }
    order
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_refused_token_stops_its_group_and_a_refused_resource_does_not() {
        let unauthorized = StreamError::from(HttpError::Unauthorized {
            url: "https://api.heroku.com/apps".into(),
        });
        assert_eq!(unauthorized.kind, ErrorKind::Authentication);
        let forbidden = StreamError::from(HttpError::Forbidden {
            url: "https://api.heroku.com/apps/team-app/releases".into(),
        });
        assert_eq!(forbidden.kind, ErrorKind::Forbidden);
        assert_eq!(forbidden.kind.as_str(), "forbidden");
    }

    #[test]
    fn scopes_that_waited_longest_go_first_with_their_streams_together() {
        let at = |minutes: i64| Some(chrono::Utc::now() - chrono::Duration::minutes(minutes));
        let keys = vec![
            StreamKey::new("heroku", "releases", "a"),
            StreamKey::new("heroku", "builds", "a"),
            StreamKey::new("heroku", "releases", "b"),
            StreamKey::new("heroku", "builds", "b"),
            StreamKey::new("heroku", "releases", "c"),
            StreamKey::new("heroku", "builds", "c"),
            StreamKey::new("heroku", "releases", "d"),
            StreamKey::new("heroku", "builds", "d"),
        ];
        // a: served a minute ago; b: its releases ten minutes ago (its builds never, as
        // the budget ran out between them); c: five minutes ago; d: never.
        let turns = |key: &StreamKey| match (key.scope.as_str(), key.stream) {
            ("a", _) => at(1),
            ("b", "releases") => at(10),
            ("b", _) => None,
            ("c", _) => at(5),
            _ => None,
        };
        assert_eq!(fair_order(&keys, turns), vec![6, 7, 2, 3, 4, 5, 0, 1]);
        // Nothing on record: the given order.
        assert_eq!(fair_order(&keys, |_| None), (0..8).collect::<Vec<_>>());
    }
}
