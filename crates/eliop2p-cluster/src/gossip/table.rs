//! The member table's keys, and the table as it goes out (`StateSync` pages) and
//! comes in whole (`merge_table`).

use std::borrow::Borrow;
use std::hash::{Hash, Hasher};
use std::net::SocketAddr;
use std::sync::Arc;

use super::{Digest, Gossip, MAX_MEMBERS_PER_MESSAGE, Message, NodeInfo, Out, Source, TABLE_PAGE_BYTES};

/// A member's id, as a key of the member table: the member's shared `NodeInfo`,
/// hashed and compared by its id (so the table is looked up by `&str` and keeps
/// no copy of the id).
#[derive(Clone, Debug)]
pub(super) struct Id(pub(super) Arc<NodeInfo>);

impl Id {
    pub(super) fn as_str(&self) -> &str {
        &self.0.id
    }
}

impl Hash for Id {
    fn hash<H: Hasher>(&self, h: &mut H) {
        self.as_str().hash(h);
    }
}

impl PartialEq for Id {
    fn eq(&self, other: &Self) -> bool {
        self.as_str() == other.as_str()
    }
}

impl Eq for Id {}

impl Borrow<str> for Id {
    fn borrow(&self) -> &str {
        self.as_str()
    }
}

impl Borrow<String> for Id {
    fn borrow(&self) -> &String {
        &self.0.id
    }
}

impl Gossip {
    /// This node's member table as `StateSync` messages to `to`, in pages that
    /// stay well inside a frame ([`TABLE_PAGE_BYTES`]), each led by this node's own
    /// claim (which names the sender); only the first asks for a reply.
    pub(super) fn table_to(&self, to: SocketAddr, reply: bool) -> Vec<Out> {
        let mine = self.digest();
        // An upper bound of a digest's JSON: every character of the free-form
        // strings escaped (6 bytes), the rest at its longest (`"owner":false`
        // included).
        let bound = |d: &Digest| 6 * (d.node.id.len() + d.node.zone.len()) + 256;
        let fixed = bound(&mine) + 6 * self.me.id.len() + 64;
        let mut pages: Vec<Vec<Digest>> = Vec::new();
        let mut page = vec![mine.clone()];
        let mut bytes = fixed;
        let shared = self.members.values().filter(|e| {
            !e.observed && (e.state.is_live() || self.now.saturating_sub(e.changed_at) < self.cfg.forget_after_ms)
        });
        for e in shared {
            let d = e.digest();
            let b = bound(&d);
            if page.len() > 1 && (bytes + b > TABLE_PAGE_BYTES || page.len() >= MAX_MEMBERS_PER_MESSAGE) {
                pages.push(std::mem::replace(&mut page, vec![mine.clone()]));
                bytes = fixed;
            }
            bytes += b;
            page.push(d);
        }
        pages.push(page);
        pages
            .into_iter()
            .enumerate()
            .map(|(i, members)| Out {
                to,
                msg: Message::StateSync {
                    from: self.me.id.clone(),
                    members,
                    reply: reply && i == 0,
                },
            })
            .collect()
    }

    /// Merges a member table from a trusted source, as the answer to a join is
    /// merged (the simulator starts a converged cluster with it).
    pub fn merge_table(&mut self, now: u64, members: &[Digest]) {
        self.now = now.max(self.now);
        self.new_this_message = 0;
        for d in members {
            self.apply(d, Source::Table { solicited: true });
        }
    }
}
