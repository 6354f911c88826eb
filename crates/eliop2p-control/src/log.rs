//! Applying the replicas' log: with a shared store every change a replica makes is
//! also an entry of one log in Redis, and every replica (the writer too) applies
//! every entry in log order, so all replicas end in the same state. Each change
//! sets a final value (or adds to a set), so applying an entry that a loaded
//! snapshot already holds changes nothing; demand alone adds up, and a batch
//! replayed after a reload counts twice (demand is soft and halves every pass).

use eliop2p_cluster::api::TargetState;
use tokio::time::Instant;

use crate::preheat::job_state;
use crate::state::{Op, State, bump_id};

impl State {
    /// Applies one change read from the log.
    pub(crate) fn apply(&mut self, op: Op, now: Instant) {
        match op {
            Op::PutNode(reg) => {
                // Checked where it arrived.
                let _ = self.register(reg, now);
            }
            Op::DeleteNode(id) => {
                let _ = self.deregister(&id);
            }
            Op::AddChunks(node, list) => self.add_chunks(&node, &list),
            Op::RemoveChunks(node, list) => self.remove_chunks(&node, &list),
            Op::ClearChunks(node) => self.clear_chunks(&node),
            Op::PutCommand(node, cmd) => {
                bump_id(&mut self.next_command, cmd.id);
                let q = self.commands.entry(node).or_default();
                match q.iter_mut().find(|c| c.id == cmd.id) {
                    Some(c) => *c = cmd,
                    None => q.push_back(cmd),
                }
            }
            Op::DeleteCommand(id) => {
                for q in self.commands.values_mut() {
                    q.retain(|c| c.id != id);
                }
                self.commands.retain(|_, q| !q.is_empty());
            }
            Op::PutJob(mut job) => {
                bump_id(&mut self.next_job, job.id);
                if let Some(old) = self.jobs.get(&job.id) {
                    // A finished target stays finished: a progress report taken
                    // by one replica can reach the log after the acknowledgement
                    // another replica took.
                    let done = |s: TargetState| matches!(s, TargetState::Done | TargetState::Failed);
                    for t in &mut job.targets {
                        if let Some(o) = old.targets.iter().find(|o| o.command == t.command)
                            && done(o.state)
                            && !done(t.state)
                        {
                            *t = o.clone();
                        }
                    }
                    job.state = job_state(&job.targets);
                }
                self.jobs.insert(job.id, job);
            }
            Op::DeleteJob(id) => {
                self.jobs.remove(&id);
            }
            Op::Heartbeat(node, hb) => self.record_heartbeat(&node, hb, now),
            Op::Demand(list) => self.add_demand(list),
        }
    }
}

#[cfg(test)]
mod tests {
    use eliop2p_cluster::api::{self, Heartbeat};
    use eliop2p_core::ChunkId;
    use tokio::time::Instant;

    use crate::state::tests::{reg, test_state};
    use crate::state::{Op, State};

    fn state(shared: bool, tag: u64) -> State {
        let mut s = test_state(2, 2, 0);
        s.shared = shared;
        s.set_id_tag(tag);
        s
    }

    /// Two replicas that apply one log (each its own changes too, as the follower
    /// does) hold the same nodes, holders, commands and demand, and number their
    /// commands in different ranges.
    #[tokio::test(start_paused = true)]
    async fn replicas_applying_one_log_agree() {
        let (mut a, mut b) = (state(true, 1), state(true, 2));
        let mut log: Vec<Op> = Vec::new();
        let now = Instant::now();
        log.extend(a.register(reg("n1"), now).unwrap());
        log.extend(b.register(reg("n2"), now).unwrap());
        log.extend(b.register(reg("n3"), now).unwrap());
        let c = ChunkId::from_bytes([7; 32]);
        let report = api::ChunkReport {
            full: true,
            added: vec![api::ReportedChunk { id: c.to_hex(), len: 5 }],
            removed: vec![],
        };
        // n1 registered at a, reports at b before b read the log: refused there.
        assert!(b.report("n1", report.clone()).is_err());
        for op in log.drain(..) {
            a.apply(op.clone(), now);
            b.apply(op, now);
        }
        log.extend(b.report("n1", report).unwrap().1);
        let q = api::LocationQuery { chunks: vec![c.to_hex()], node_id: Some("n2".into()), limit: None };
        for _ in 0..3 {
            a.locations(&q, now).unwrap();
        }
        log.extend(a.take_demand());
        log.extend(a.heartbeat("n1", Heartbeat { bytes_served: 9, ..Default::default() }, now).unwrap().1);
        for op in log.drain(..) {
            a.apply(op.clone(), now);
            b.apply(op.clone(), now);
            // A replayed entry changes nothing (demand aside).
            if !matches!(op, Op::Demand(_)) {
                b.apply(op, now);
            }
        }
        assert_eq!(b.locations(&q, now).unwrap()[&c.to_hex()].len(), 1);
        assert_eq!(b.nodes["n1"].heartbeat.bytes_served, 9);
        // Demand 3 makes c hot at both; b plans.
        let ops = b.plan_replication(now);
        let [Op::PutCommand(node, cmd)] = &ops[..] else {
            panic!("one replicate command: {ops:?}");
        };
        let (node, cmd) = (node.clone(), cmd.clone());
        assert_eq!(cmd.id, (2 << crate::state::ID_TAG_SHIFT) + 1, "b numbers in its range");
        for op in ops {
            a.apply(op, now);
        }
        assert_eq!(a.commands(&node).unwrap().len(), 1);
        let ack = api::CommandAck { ok: true, error: None, progress: None };
        for op in a.ack(&node, cmd.id, &ack).unwrap() {
            b.apply(op, now);
        }
        assert!(b.commands(&node).unwrap().is_empty());
        // a's own next command does not collide with b's.
        a.decay_demand();
        let mut a_ops = a.plan_replication(now);
        a_ops.retain(|op| matches!(op, Op::PutCommand(..)));
        if let [Op::PutCommand(_, c2)] = &a_ops[..] {
            assert_eq!(c2.id >> crate::state::ID_TAG_SHIFT, 1);
        }
    }

    /// A progress report that reaches the log after the acknowledgement (taken by
    /// two replicas) does not reopen the target: the job finishes.
    #[tokio::test(start_paused = true)]
    async fn a_late_progress_report_does_not_reopen_a_finished_target() {
        let (mut a, mut b) = (state(true, 1), state(true, 2));
        let now = Instant::now();
        let reg_ops = a.register(reg("n1"), now).unwrap();
        for op in reg_ops {
            b.apply(op, now);
        }
        let req = api::PreheatRequest {
            bucket: "b".into(),
            key: "k".into(),
            recursive: false,
            replicas: None,
            labels: Default::default(),
        };
        let (job, created) = a.create_preheat(req, now).unwrap();
        for op in created {
            b.apply(op, now);
        }
        let cmd = job.targets[0].command;
        let progress = a.preheat_progress("n1", cmd, api::PreheatProgress::default()).unwrap();
        let ack = api::CommandAck { ok: true, error: None, progress: None };
        let acked = b.ack("n1", cmd, &ack).unwrap();
        // The log: b's acknowledgement, then a's progress.
        for op in acked.into_iter().chain(progress) {
            a.apply(op.clone(), now);
            b.apply(op, now);
        }
        for s in [&a, &b] {
            assert_eq!(s.jobs[&job.id].state, api::JobState::Succeeded);
            assert!(s.commands("n1").unwrap().is_empty());
        }
    }

    /// Every change survives the log's JSON.
    #[test]
    fn changes_round_trip_as_json() {
        let ops = vec![
            Op::PutNode(reg("x")),
            Op::AddChunks("x".into(), vec![(ChunkId::from_bytes([1; 32]), 3)]),
            Op::RemoveChunks("x".into(), vec![ChunkId::from_bytes([2; 32])]),
            Op::Demand(vec![(ChunkId::from_bytes([3; 32]), 4)]),
            Op::Heartbeat("x".into(), Heartbeat::default()),
            Op::DeleteCommand(5),
        ];
        let json = serde_json::to_vec(&ops).unwrap();
        assert_eq!(serde_json::from_slice::<Vec<Op>>(&json).unwrap(), ops);
    }
}
