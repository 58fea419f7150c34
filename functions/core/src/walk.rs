//! A newest-first walk down to a high-water mark, resumable from the API's handle on its
//! next page (CircleCI's `next_page_token`, Heroku's `Next-Range`). The mark moves only
//! when a walk finishes, to the newest value the walk saw; a walk cut short keeps its
//! handle, and the next run finishes it before starting a fresh one from the top.

use serde::{Deserialize, Serialize};

/// Where a stream's walk is. Embedded (flattened) in a source's cursor.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(bound(serialize = "M: Serialize", deserialize = "M: Deserialize<'de>"))]
pub struct WalkState<M> {
    /// Everything up to this mark is stored (by a walk that finished).
    #[serde(default)]
    pub high_water: Option<M>,
    /// A walk that stopped early.
    #[serde(default)]
    pub walk: Option<Walk<M>>,
}

impl<M> Default for WalkState<M> {
    fn default() -> Self {
        Self {
            high_water: None,
            walk: None,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Walk<M> {
    /// The API's handle on the next page, sent back as it came.
    pub next: String,
    /// The newest value the walk saw: the mark once the walk finishes.
    pub top: Option<M>,
}

impl<M: Ord + Copy> WalkState<M> {
    /// The handle to resume from, or `None` to start from the newest page.
    pub fn next_page(&self) -> Option<&str> {
        self.walk.as_ref().map(|w| w.next.as_str())
    }

    /// Whether a walk left unfinished by an earlier run is to be finished first.
    pub fn is_resuming(&self) -> bool {
        self.walk.is_some()
    }

    /// How many walks a run makes: the unfinished one first, if any, then a fresh one
    /// from the newest page down to the (then moved) mark.
    pub fn walks_this_run(&self) -> usize {
        if self.is_resuming() {
            2
        } else {
            1
        }
    }

    /// Forgets an unfinished walk (e.g. its handle was refused); the next page is the first.
    pub fn restart(&mut self) {
        self.walk = None;
    }

    /// Records a page: `newest` is the newest value on it, `next` the API's handle on the
    /// following page, `done` whether the walk ends here (it also ends without a `next`).
    /// Returns whether the walk is done; a done walk moves the mark.
    pub fn advance(&mut self, next: Option<String>, newest: Option<M>, done: bool) -> bool {
        let top = match &self.walk {
            Some(walk) => walk.top.max(newest),
            None => newest,
        };
        match next.filter(|n| !n.is_empty()) {
            Some(next) if !done => {
                self.walk = Some(Walk { next, top });
                false
            }
            _ => {
                self.walk = None;
                self.high_water = self.high_water.max(top);
                true
            }
        }
    }

    /// Whether `value` is at or below the mark (stored by an earlier walk).
    pub fn is_stored(&self, value: Option<M>) -> bool {
        matches!((value, self.high_water), (Some(v), Some(mark)) if v <= mark)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_mark_moves_only_when_a_walk_finishes_and_to_its_newest_value() {
        let mut state = WalkState::<i64>::default();
        assert!(!state.advance(Some("p2".into()), Some(30), false));
        assert_eq!(state.next_page(), Some("p2"));
        assert_eq!(state.high_water, None);
        assert_eq!(state.walks_this_run(), 2);
        // Newer items arrived meanwhile: the walk's top stays what its first page said.
        assert!(!state.advance(Some("p3".into()), Some(20), false));
        assert!(state.advance(None, Some(10), false));
        assert_eq!(state.high_water, Some(30));
        assert!(!state.is_resuming());
        assert_eq!(state.walks_this_run(), 1);
        assert!(state.is_stored(Some(30)) && !state.is_stored(Some(31)) && !state.is_stored(None));
        // A fresh walk that reaches the mark on its first page.
        assert!(state.advance(Some("p2".into()), Some(40), true));
        assert_eq!(state.high_water, Some(40));
    }

    #[test]
    fn it_round_trips_flat_in_a_cursor() {
        let mut state = WalkState::<i64>::default();
        state.advance(Some("next".into()), Some(5), false);
        let json = serde_json::to_value(&state).unwrap();
        assert_eq!(
            json,
            serde_json::json!({"high_water": null, "walk": {"next": "next", "top": 5}})
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
