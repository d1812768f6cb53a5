//! The items a send goes through, which may still be arriving: `ferry send`
//! starts sending while the walk of a big tree goes on, so that the server
//! is busy storing the first files rather than waiting for the whole plan.
//!
//! One side adds items through a [`FeedWriter`] (ended when it is dropped,
//! even by a panic); the sender reads them by index, waiting for those not
//! yet known. A finished list is a feed too ([`Feed::of`]).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use super::plan::Item;
use super::watch::Watch;

/// How often a reader waiting on the feed looks at its stop flag.
const STOP_POLL: Duration = Duration::from_millis(50);

/// Items in the order they go out; see the module doc.
#[derive(Debug, Default)]
pub struct Feed(Watch<State>);

#[derive(Debug, Default)]
struct State {
    items: Vec<Item>,
    complete: bool,
}

/// What a reader finds at an index.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Next {
    Item(Item),
    /// The feed is complete and has nothing there.
    End,
    /// Nothing there yet; the feed is still growing.
    NotYet,
}

impl Feed {
    /// An empty feed and the writer that fills it.
    pub fn open() -> (Arc<Feed>, FeedWriter) {
        let feed = Arc::new(Feed::default());
        let writer = FeedWriter(Arc::clone(&feed));
        (feed, writer)
    }

    /// A feed of `items`, complete.
    pub fn of(items: Vec<Item>) -> Feed {
        Feed(Watch::new(State {
            items,
            complete: true,
        }))
    }

    /// Whether every item is known.
    pub fn is_complete(&self) -> bool {
        self.0.read(|state| state.complete)
    }

    /// Item `index`, waiting for it as long as the feed grows.
    pub fn get(&self, index: usize) -> Option<Item> {
        self.get_unless(index, &AtomicBool::new(false))
    }

    /// [`Feed::get`], giving up (`None`) once `stop` is set.
    pub fn get_unless(&self, index: usize, stop: &AtomicBool) -> Option<Item> {
        match self.get_within(index, None, stop) {
            Next::Item(item) => Some(item),
            Next::End | Next::NotYet => None,
        }
    }

    /// Item `index`, waiting for it at most `patience` (`None`: as long as
    /// it takes), and not once `stop` is set.
    pub fn get_within(&self, index: usize, patience: Option<Duration>, stop: &AtomicBool) -> Next {
        let deadline = patience.map(|p| Instant::now() + p);
        let poll = patience.map_or(STOP_POLL, |p| p.min(STOP_POLL));
        self.0.wait(poll, |state| {
            if let Some(item) = state.items.get(index) {
                Some(Next::Item(item.clone()))
            } else if state.complete {
                Some(Next::End)
            } else if stop.load(Ordering::Relaxed)
                || deadline.is_some_and(|deadline| Instant::now() >= deadline)
            {
                Some(Next::NotYet)
            } else {
                None
            }
        })
    }

    /// [`Feed::whole`], or what is known once `stop` is set.
    pub fn whole_unless(&self, stop: &AtomicBool) -> Vec<Item> {
        self.0.wait(STOP_POLL, |state| {
            (state.complete || stop.load(Ordering::Relaxed)).then(|| state.items.clone())
        })
    }

    /// Item `index`, if it is known now.
    pub fn peek<T>(&self, index: usize, look: impl FnOnce(&Item) -> T) -> Option<T> {
        self.0.read(|state| state.items.get(index).map(look))
    }

    /// Waits until the feed is complete and returns all of it.
    pub fn whole(&self) -> Vec<Item> {
        self.whole_unless(&AtomicBool::new(false))
    }
}

/// Adds to a [`Feed`]; the feed is complete once this is dropped.
#[derive(Debug)]
pub struct FeedWriter(Arc<Feed>);

impl FeedWriter {
    pub fn push(&self, item: Item) {
        self.0.0.update(|state| state.items.push(item));
    }
}

impl Drop for FeedWriter {
    fn drop(&mut self) {
        self.0.0.update(|state| state.complete = true);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::transfer::ItemKind;
    use std::path::PathBuf;
    use std::thread;

    fn file(name: &str) -> Item {
        Item {
            local: PathBuf::from(name),
            remote: name.into(),
            kind: ItemKind::File { size: 1 },
        }
    }

    #[test]
    fn a_reader_waits_for_items_and_sees_the_end() {
        let (feed, writer) = Feed::open();
        let reader = {
            let feed = Arc::clone(&feed);
            thread::spawn(move || {
                let mut got = Vec::new();
                while let Some(item) = feed.get(got.len()) {
                    got.push(item.remote);
                }
                got
            })
        };
        for name in ["a", "b", "c"] {
            thread::sleep(Duration::from_millis(5));
            writer.push(file(name));
        }
        drop(writer);
        assert_eq!(reader.join().expect("reader"), ["a", "b", "c"]);
        assert_eq!(feed.whole().len(), 3);
    }

    #[test]
    fn patience_runs_out_while_the_feed_grows_but_not_once_it_is_complete() {
        let (feed, writer) = Feed::open();
        writer.push(file("a"));
        let go_on = AtomicBool::new(false);
        assert_eq!(
            feed.get_within(0, Some(Duration::ZERO), &go_on),
            Next::Item(file("a"))
        );
        let started = Instant::now();
        assert_eq!(
            feed.get_within(1, Some(Duration::from_millis(30)), &go_on),
            Next::NotYet
        );
        assert!(started.elapsed() >= Duration::from_millis(30));
        drop(writer);
        assert_eq!(feed.get_within(1, Some(Duration::ZERO), &go_on), Next::End);
        assert_eq!(feed.peek(0, |i| i.remote.clone()), Some("a".to_string()));
        assert_eq!(Feed::of(vec![file("x")]).get(1), None);
    }

    #[test]
    fn a_reader_told_to_stop_stops_waiting() {
        let (feed, writer) = Feed::open();
        writer.push(file("a"));
        let stop = Arc::new(AtomicBool::new(false));
        let reader = {
            let (feed, stop) = (Arc::clone(&feed), Arc::clone(&stop));
            thread::spawn(move || (feed.get_unless(1, &stop), feed.whole_unless(&stop)))
        };
        thread::sleep(Duration::from_millis(20));
        stop.store(true, Ordering::Relaxed);
        let (next, whole) = reader.join().expect("reader");
        assert_eq!(next, None);
        assert_eq!(whole, vec![file("a")], "what was known");
        drop(writer);
    }

    #[test]
    fn a_writer_that_panics_still_completes_the_feed() {
        let (feed, writer) = Feed::open();
        let walker = thread::spawn(move || {
            writer.push(file("a"));
            panic!("the walk failed");
        });
        assert!(walker.join().is_err());
        assert_eq!(feed.whole(), vec![file("a")]);
    }
}
