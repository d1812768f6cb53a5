//! What goes out once a plan is confirmed: the files the server's verdicts
//! leave to send, and the results the verdicts settled (refused files,
//! identical ones). The sender sees only what goes out; events and the
//! report are numbered back into the whole plan for the screens and the
//! summary.

use ferry_proto::{Clash, Verdict};

use super::plan::Item;
use super::sender::{Event, ItemResult, Report};

/// What goes out after the plan was confirmed, and what was settled by the
/// plan alone (refused files, identical ones).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Dispatch {
    /// The whole plan, in order.
    pub items: Vec<Item>,
    /// Indices into `items` of what is sent, in order.
    pub send: Vec<usize>,
    /// One per item: its result when the plan already decided it.
    pub decided: Vec<Option<ItemResult>>,
}

impl Dispatch {
    /// Everything but what the server refused or already has, going by
    /// `verdict_of` each item (`None`: not known, so sent).
    pub fn leaving_out<'v>(
        items: Vec<Item>,
        verdict_of: impl Fn(usize) -> Option<&'v Verdict>,
    ) -> Dispatch {
        let mut send = Vec::new();
        let mut decided = vec![None; items.len()];
        for (index, item) in items.iter().enumerate() {
            match verdict_of(index) {
                Some(Verdict::Refused { message, .. }) => {
                    decided[index] = Some(ItemResult::Failed {
                        reason: message.clone(),
                    });
                }
                Some(Verdict::Identical) => {
                    decided[index] = Some(ItemResult::Stored {
                        stored_as: item.remote.clone(),
                        clash: Clash::Identical,
                        bytes: 0,
                    });
                }
                _ => send.push(index),
            }
        }
        Dispatch {
            items,
            send,
            decided,
        }
    }

    /// The items to hand to the sender.
    pub fn outgoing(&self) -> Vec<Item> {
        self.send
            .iter()
            .filter_map(|&i| self.items.get(i).cloned())
            .collect()
    }

    /// Where item `index` of [`Dispatch::outgoing`] is in the whole plan.
    fn whole(&self, index: usize) -> usize {
        self.send.get(index).copied().unwrap_or(usize::MAX)
    }

    /// A sender event about the outgoing items, renumbered for the plan.
    pub fn event(&self, event: Event) -> Event {
        match event {
            Event::Connected { server } => Event::Connected { server },
            Event::Started { index } => Event::Started {
                index: self.whole(index),
            },
            Event::Resumed { index, offset } => Event::Resumed {
                index: self.whole(index),
                offset,
            },
            Event::NotResumed { index, offset } => Event::NotResumed {
                index: self.whole(index),
                offset,
            },
            Event::Checking { index, offset } => Event::Checking {
                index: self.whole(index),
                offset,
            },
            Event::Progress {
                index,
                item_sent,
                total_sent,
            } => Event::Progress {
                index: self.whole(index),
                item_sent,
                total_sent,
            },
            Event::Finished { index, result } => Event::Finished {
                index: self.whole(index),
                result,
            },
        }
    }

    /// The sender's report on the outgoing items, as a report on the whole
    /// plan: one result per item, in plan order.
    pub fn report(&self, sent: Report) -> Report {
        let mut results = self.decided.clone();
        results.resize(self.items.len(), None);
        for (index, result) in sent.results.into_iter().enumerate() {
            if let Some(slot) = results.get_mut(self.whole(index)) {
                *slot = Some(result);
            }
        }
        Report {
            results: results
                .into_iter()
                .map(|r| {
                    r.unwrap_or_else(|| ItemResult::NotSent {
                        reason: "not sent".into(),
                    })
                })
                .collect(),
            ..sent
        }
    }
}
