//! In-process group membership and rebalancing.
//!
//! Every running push consumer is a member of its group here. A rebalance
//! computes each member's queues with its allocation strategy (clustering)
//! or gives every member every queue (broadcasting), then applies the
//! change in two phases: first every member gives up the queues it loses
//! (waiting for its in-flight work on them and committing their offsets),
//! then every member takes the queues it gains. So a clustering queue never
//! has two owners at once.
//!
//! After every rebalance and whenever a member leaves, the membership of
//! every group is published to `config/consumers` (see [`membership`]),
//! under the same lock that serializes rebalances, so the file always
//! ends up describing the last assignment.
//!
//! [`membership`]: super::membership

use super::membership::Publisher;
use super::push::Member;
use super::MessageModel;
use crate::clock::Clock;
use crate::storage::Storage;
use crate::store::MessageQueue;
use parking_lot::Mutex;
use std::collections::{BTreeSet, HashMap};
use std::path::Path;
use std::sync::Arc;

/// The members of every group, in one store.
#[derive(Debug, Default)]
pub(crate) struct Registry {
    groups: Mutex<HashMap<String, Vec<Arc<Member>>>>,
    /// One rebalance at a time (they block on hand-overs). Also
    /// serializes the writes of the membership file.
    rebalancing: Mutex<()>,
    /// Writes `config/consumers` while the store is open.
    membership: Publisher,
}

impl Registry {
    pub(crate) fn join(&self, member: Arc<Member>) {
        self.groups.lock().entry(member.group.clone()).or_default().push(member);
    }

    pub(crate) fn leave(&self, member: &Member) {
        let _one = self.rebalancing.lock();
        {
            let mut groups = self.groups.lock();
            if let Some(members) = groups.get_mut(&member.group) {
                members.retain(|m| m.id != member.id);
                if members.is_empty() {
                    groups.remove(&member.group);
                }
            }
        }
        self.publish();
    }

    /// The store in `root` opened: removes a membership file left by an
    /// earlier run and publishes there from now on.
    pub(crate) fn open_membership_file(&self, storage: Arc<dyn Storage>, root: &Path, clock: Arc<dyn Clock>) {
        let _one = self.rebalancing.lock();
        self.membership.attach(storage, root, clock);
    }

    /// The store is closing: removes the membership file; members that
    /// shut down later do not write it again.
    pub(crate) fn close_membership_file(&self) {
        let _one = self.rebalancing.lock();
        self.membership.detach();
    }

    /// Writes every group's membership to `config/consumers`. The caller
    /// holds `rebalancing`. The groups lock is released before the members'
    /// state locks are taken (briefly, one at a time), as in `rebalance`.
    fn publish(&self) {
        let members: Vec<Arc<Member>> = self.groups.lock().values().flatten().cloned().collect();
        self.membership.publish(&members);
    }

    /// Rebalances every group with a member subscribed to `topic` (its
    /// queue counts or permissions changed, or it was deleted).
    pub(crate) fn rebalance_topic(&self, topic: &str) {
        let groups: Vec<String> = self
            .groups
            .lock()
            .iter()
            .filter(|(_, ms)| ms.iter().any(|m| m.topics().iter().any(|t| t == topic)))
            .map(|(g, _)| g.clone())
            .collect();
        for g in groups {
            self.rebalance(&g);
        }
    }

    /// The store is closing: every member gives up its queues (draining
    /// and committing them) and stops pulling. Their `PushConsumer`
    /// handles still shut down the worker threads.
    pub(crate) fn stop_all(&self) {
        let groups: Vec<(String, Vec<Arc<Member>>)> =
            self.groups.lock().iter().map(|(g, ms)| (g.clone(), ms.clone())).collect();
        for (g, members) in groups {
            for m in &members {
                m.begin_leaving();
            }
            self.rebalance(&g);
        }
    }

    /// Ids of the members of `group`, sorted.
    pub(crate) fn member_ids(&self, group: &str) -> Vec<String> {
        let mut ids: Vec<String> =
            self.groups.lock().get(group).map(|ms| ms.iter().map(|m| m.id.clone()).collect()).unwrap_or_default();
        ids.sort();
        ids
    }

    /// Recomputes and applies the assignment of `group`'s queues. Members
    /// that are shutting down stay registered until their own rebalance
    /// finished, and get nothing here: so however rebalances interleave,
    /// every queue a leaving member holds is revoked (and its offset
    /// committed) before anyone else is given it.
    pub(crate) fn rebalance(&self, group: &str) {
        let _one = self.rebalancing.lock();
        let members: Vec<Arc<Member>> = self.groups.lock().get(group).cloned().unwrap_or_default();
        let ids: Vec<String> = {
            let mut v: Vec<String> = members.iter().filter(|m| !m.is_leaving()).map(|m| m.id.clone()).collect();
            v.sort();
            v
        };
        // Target assignment per member.
        let mut targets: Vec<(Arc<Member>, BTreeSet<MessageQueue>)> = Vec::new();
        for m in &members {
            let mut want = BTreeSet::new();
            if !m.is_leaving() {
                for topic in m.topics() {
                    let all = m.queues_of_topic(&topic);
                    let mine = match m.model {
                        MessageModel::Broadcasting => all,
                        MessageModel::Clustering => m.strategy.allocate(group, &m.id, &all, &ids),
                    };
                    want.extend(mine);
                }
            }
            targets.push((m.clone(), want));
        }
        // Phase 1: every member gives up what it loses.
        for (m, want) in &targets {
            let mut lose: Vec<MessageQueue> = m.assigned().into_iter().filter(|q| !want.contains(q)).collect();
            lose.sort();
            if !lose.is_empty() {
                m.revoke(&lose);
            }
        }
        // Phase 2: every member takes what it gains.
        for (m, want) in &targets {
            let have: BTreeSet<MessageQueue> = m.assigned().into_iter().collect();
            let gain: Vec<MessageQueue> = want.iter().filter(|q| !have.contains(q)).cloned().collect();
            if !gain.is_empty() {
                m.assign(&gain);
            }
        }
        // Publish the result (every group, so the file is whole).
        self.publish();
    }
}
