//! Newest-first walks down to a high-water mark, written once.
//!
//! [`drive`] runs every newest-first walk of every source (Rollbar's keyset walk,
//! CircleCI's page tokens, Heroku's `Next-Range`): an unfinished walk first, then a fresh
//! one from the newest page; the time budget between pages; a commit when a walk ends, a
//! batch fills or the time is spent, so that a stop never loses a fetched page. A source
//! says what one page is ([`Pages`]). (Rollbar's periodic sweep of every item, page by
//! page number with no mark, and the re-reads of pending ids are plain loops over
//! `commit_page`.)
//!
//! [`WalkState`] is the position of a walk by an opaque handle on its next page
//! (CircleCI's `next_page_token`, Heroku's `Next-Range`). The mark moves only when a walk
//! finishes, to the newest value the walk saw; a walk cut short keeps its handle.

use crate::engine::{RunStatus, StreamRun};
use crate::stream::StreamError;
use async_trait::async_trait;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use std::collections::BTreeSet;

/// What a page of a walk came to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PageOutcome {
    /// The walk goes on.
    More,
    /// The walk reached its end (the mark, or the start of the list's history).
    Done,
    /// Ask again: the source changed what it asks for (from the newest page after the API
    /// refused the walk's saved position, or a smaller page after a timeout).
    Again,
    /// No more requests now (a rate budget): stop here; the next run resumes.
    Stop,
}

impl PageOutcome {
    /// After a page was stored: [`PageOutcome::Done`] at the walk's end, else
    /// [`PageOutcome::More`].
    pub fn after_page(done: bool) -> Self {
        if done {
            Self::Done
        } else {
            Self::More
        }
    }
}

/// One source's walk, page by page, for [`drive`].
#[async_trait]
pub trait Pages<C>: Send {
    /// Whether the cursor holds a walk an earlier run left unfinished.
    fn resuming(&self, cursor: &C) -> bool;

    /// A fresh walk is about to start from the newest page.
    fn begin(&mut self, _run: &mut StreamRun<C>) {}

    /// Fetches and stores the walk's next page, moving `run.cursor` past it.
    async fn next_page(&mut self, run: &mut StreamRun<C>) -> Result<PageOutcome, StreamError>;

    /// Just before a commit (e.g. to stage another stream's state with it).
    fn before_commit(&mut self, _run: &mut StreamRun<C>) {}
}

/// Runs a walk to its end, or until the time budget or the source says stop.
pub async fn drive<C, P>(run: &mut StreamRun<C>, pages: &mut P) -> Result<RunStatus, StreamError>
where
    C: Serialize + DeserializeOwned + Default + Send + Sync,
    P: Pages<C>,
{
    let resuming = pages.resuming(&run.cursor);
    let walks = if resuming { 2 } else { 1 };
    for walk in 0..walks {
        if walk > 0 || !resuming {
            pages.begin(run);
        }
        loop {
            if !run.time_left() {
                pages.before_commit(run);
                return Ok(run.stop_partial().await?);
            }
            let outcome = pages.next_page(run).await?;
            match outcome {
                PageOutcome::Again => continue,
                PageOutcome::Stop => {
                    pages.before_commit(run);
                    return Ok(run.stop_partial().await?);
                }
                PageOutcome::More | PageOutcome::Done => {
                    let done = outcome == PageOutcome::Done;
                    if run.commit_due(done) {
                        pages.before_commit(run);
                        run.commit().await?;
                    }
                    if done {
                        break;
                    }
                }
            }
        }
    }
    Ok(RunStatus::Succeeded)
}

/// Where a stream's walk is. Embedded (flattened) in a source's cursor.
///
/// Marks need not be unique (a timestamp with second precision): records that share the
/// mark's value with the last stored ones are told apart by id, so none is skipped and
/// none written twice.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(bound(serialize = "M: Serialize", deserialize = "M: Deserialize<'de>"))]
pub struct WalkState<M> {
    /// Everything up to this mark is stored (by a walk that finished).
    #[serde(default)]
    pub high_water: Option<M>,
    /// A walk that stopped early.
    #[serde(default)]
    pub walk: Option<Walk<M>>,
    /// Ids of the stored records whose value is the mark itself.
    #[serde(default, skip_serializing_if = "BTreeSet::is_empty")]
    pub at_mark: BTreeSet<String>,
}

impl<M> Default for WalkState<M> {
    fn default() -> Self {
        Self {
            high_water: None,
            walk: None,
            at_mark: BTreeSet::new(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Walk<M> {
    /// The API's handle on the next page, sent back as it came.
    pub next: String,
    /// The newest value the walk saw: the mark once the walk finishes.
    pub top: Option<M>,
    /// Ids of the records the walk saw with the value `top`.
    #[serde(default, skip_serializing_if = "BTreeSet::is_empty")]
    pub at_top: BTreeSet<String>,
}

impl<M: Ord + Clone> WalkState<M> {
    /// The handle to resume from, or `None` to start from the newest page.
    pub fn next_page(&self) -> Option<&str> {
        self.walk.as_ref().map(|w| w.next.as_str())
    }

    /// Whether a walk left unfinished by an earlier run is to be finished first.
    pub fn is_resuming(&self) -> bool {
        self.walk.is_some()
    }

    /// Forgets an unfinished walk (e.g. its handle was refused); the next page is the first.
    pub fn restart(&mut self) {
        self.walk = None;
    }

    /// Records a page: `records` are the (id, value) of the records on it, `next` the API's
    /// handle on the following page, `done` whether the walk ends here (it also ends
    /// without a `next`). Returns whether the walk is done; a done walk moves the mark.
    pub fn advance(
        &mut self,
        next: Option<String>,
        records: &[(String, Option<M>)],
        done: bool,
    ) -> bool {
        let (mut top, mut at_top) = match self.walk.take() {
            Some(walk) => (walk.top, walk.at_top),
            None => (None, BTreeSet::new()),
        };
        for (id, value) in records {
            let Some(value) = value else { continue };
            match top.as_ref().map(|t| value.cmp(t)) {
                None | Some(std::cmp::Ordering::Greater) => {
                    top = Some(value.clone());
                    at_top = BTreeSet::from([id.clone()]);
                }
                Some(std::cmp::Ordering::Equal) => {
                    at_top.insert(id.clone());
                }
                Some(std::cmp::Ordering::Less) => {}
            }
        }
        match next.filter(|n| !n.is_empty()) {
            Some(next) if !done => {
                self.walk = Some(Walk { next, top, at_top });
                false
            }
            _ => {
                match (top, self.high_water.clone()) {
                    (Some(top), Some(mark)) if top == mark => self.at_mark.extend(at_top),
                    (Some(top), mark) if mark.as_ref().is_none_or(|m| top > *m) => {
                        self.high_water = Some(top);
                        self.at_mark = at_top;
                    }
                    _ => {}
                }
                true
            }
        }
    }

    /// Whether the record `id` with `value` is not stored yet: newer than the mark, or at
    /// the mark and not one of the records stored there (or without a value at all).
    pub fn is_new(&self, id: &str, value: Option<&M>) -> bool {
        match (value, &self.high_water) {
            (Some(value), Some(mark)) => {
                value > mark || (value == mark && !self.at_mark.contains(id))
            }
            _ => true,
        }
    }

    /// Whether `value` is strictly older than the mark: a page that reaches it ends the
    /// walk (records sharing the mark's value may continue on the next page).
    pub fn is_below_mark(&self, value: Option<&M>) -> bool {
        matches!((value, &self.high_water), (Some(v), Some(mark)) if v < mark)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn page(records: &[(&str, i64)]) -> Vec<(String, Option<i64>)> {
        records
            .iter()
            .map(|(id, v)| (id.to_string(), Some(*v)))
            .collect()
    }

    #[test]
    fn the_mark_moves_only_when_a_walk_finishes_and_to_its_newest_value() {
        let mut state = WalkState::<i64>::default();
        assert!(!state.advance(Some("p2".into()), &page(&[("c", 30), ("b", 25)]), false));
        assert_eq!(state.next_page(), Some("p2"));
        assert_eq!(state.high_water, None);
        assert!(state.is_resuming());
        // Newer items arrived meanwhile: the walk's top stays what its first page said.
        assert!(!state.advance(Some("p3".into()), &page(&[("a", 20)]), false));
        assert!(state.advance(None, &page(&[("z", 10)]), false));
        assert_eq!(state.high_water, Some(30));
        assert!(!state.is_resuming());
        assert!(!state.is_new("c", Some(&30)) && state.is_new("d", Some(&31)));
        assert!(state.is_new("x", None));
        // A fresh walk that reaches the mark on its first page.
        assert!(state.advance(Some("p2".into()), &page(&[("e", 40), ("c", 30)]), true));
        assert_eq!(state.high_water, Some(40));
    }

    #[test]
    fn records_sharing_the_marks_value_are_told_apart_by_id() {
        // Second precision: two builds at second 100, and a third arrives in the same
        // second after the first walk stored the two.
        let mut state = WalkState::<i64>::default();
        assert!(state.advance(None, &page(&[("b", 100), ("a", 100), ("z", 90)]), false));
        assert_eq!(state.high_water, Some(100));
        assert!(!state.is_new("a", Some(&100)) && !state.is_new("b", Some(&100)));
        assert!(state.is_new("c", Some(&100)), "same second, not stored yet");
        assert!(
            !state.is_below_mark(Some(&100)),
            "a page at the mark goes on"
        );
        assert!(state.is_below_mark(Some(&99)));
        // The next walk finds c at the mark: the mark stays, c joins the ids stored there.
        assert!(state.advance(None, &page(&[("c", 100), ("b", 100), ("z", 90)]), true));
        assert_eq!(state.high_water, Some(100));
        assert!(!state.is_new("c", Some(&100)));
        assert_eq!(state.at_mark.len(), 3);
        // A newer value replaces the ids at the mark.
        assert!(state.advance(None, &page(&[("d", 101)]), true));
        assert_eq!(state.at_mark, BTreeSet::from(["d".to_string()]));
    }

    #[test]
    fn it_round_trips_flat_in_a_cursor() {
        let mut state = WalkState::<i64>::default();
        state.advance(Some("next".into()), &page(&[("a", 5)]), false);
        let json = serde_json::to_value(&state).unwrap();
        assert_eq!(
            json,
            serde_json::json!({"high_water": null, "walk": {"next": "next", "top": 5, "at_top": ["a"]}})
        );
        assert_eq!(
            serde_json::from_value::<WalkState<i64>>(json).unwrap(),
            state
        );
        assert_eq!(
            serde_json::from_value::<WalkState<i64>>(serde_json::json!({})).unwrap(),
            WalkState::default()
        );
    }
}
