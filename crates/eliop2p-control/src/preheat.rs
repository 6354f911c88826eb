//! Preheat jobs: a request to warm an object or a prefix becomes one preheat
//! command per target node; nodes report progress and acknowledge, and the job's
//! state follows from its targets'. Jobs are durable (they survive a restart with
//! their commands).

use std::collections::HashSet;
use std::time::{SystemTime, UNIX_EPOCH};

use eliop2p_cluster::api::{
    self, Command, CommandKind, JobState, NodeStatus, PreheatJob, PreheatProgress, PreheatRequest,
    PreheatSpec, PreheatTarget, TargetState,
};
use tokio::time::Instant;

use crate::state::{Op, State, StateError};

/// Jobs kept (the oldest finished ones are dropped beyond this).
const MAX_JOBS: usize = 1000;

impl State {
    /// Creates a job and its commands.
    pub fn create_preheat(
        &mut self,
        req: PreheatRequest,
        now: Instant,
    ) -> Result<(PreheatJob, Vec<Op>), StateError> {
        if req.bucket.is_empty() {
            return Err(StateError::Invalid("bucket is required".into()));
        }
        if req.key.is_empty() && !req.recursive {
            return Err(StateError::Invalid(
                "key is required (or recursive: true for the whole bucket)".into(),
            ));
        }
        if req.replicas == Some(0) {
            return Err(StateError::Invalid("replicas must be at least 1".into()));
        }
        let mut candidates: Vec<(&String, String, u64)> = self
            .nodes
            .iter()
            .filter(|(_, n)| self.status(n, now) == NodeStatus::Online)
            .filter(|(_, n)| {
                req.labels
                    .iter()
                    .all(|(k, v)| n.reg.labels.get(k) == Some(v))
            })
            .map(|(id, n)| {
                (
                    id,
                    n.reg.labels.get("zone").cloned().unwrap_or_default(),
                    n.heartbeat.memory_used_bytes + n.heartbeat.disk_used_bytes,
                )
            })
            .collect();
        if candidates.is_empty() {
            return Err(StateError::Invalid(
                "no online node matches the request's labels".into(),
            ));
        }
        candidates.sort_by(|a, b| (a.2, a.0).cmp(&(b.2, b.0)));
        // Spread over zones: the least used node of each zone first, then the rest.
        let mut targets: Vec<String> = Vec::new();
        let want = req
            .replicas
            .unwrap_or(candidates.len())
            .min(candidates.len());
        let mut zones = HashSet::new();
        for (id, zone, _) in &candidates {
            if targets.len() < want && zones.insert(zone.clone()) {
                targets.push((*id).clone());
            }
        }
        for (id, _, _) in &candidates {
            if targets.len() < want && !targets.contains(id) {
                targets.push((*id).clone());
            }
        }
        let id = self.next_job;
        self.next_job += 1;
        let mut ops = Vec::new();
        let mut job_targets = Vec::new();
        for node in targets {
            let op = self.issue_command(
                node.clone(),
                Command {
                    id: 0,
                    kind: CommandKind::Preheat,
                    chunk: String::new(),
                    len: 0,
                    preheat: Some(PreheatSpec {
                        job: id,
                        bucket: req.bucket.clone(),
                        key: req.key.clone(),
                        recursive: req.recursive,
                    }),
                },
            );
            let Op::PutCommand(_, cmd) = &op else {
                unreachable!("issue_command returns PutCommand")
            };
            job_targets.push(PreheatTarget {
                node_id: node,
                command: cmd.id,
                state: TargetState::Pending,
                progress: PreheatProgress::default(),
                error: None,
            });
            ops.push(op);
        }
        let job = PreheatJob {
            id,
            created_unix_ms: SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_millis() as u64),
            request: req,
            state: JobState::Running,
            targets: job_targets,
        };
        self.jobs.insert(id, job.clone());
        ops.push(Op::PutJob(job.clone()));
        ops.extend(self.trim_jobs());
        Ok((job, ops))
    }

    fn trim_jobs(&mut self) -> Vec<Op> {
        let mut ops = Vec::new();
        while self.jobs.len() > MAX_JOBS {
            let Some(oldest) = self
                .jobs
                .values()
                .find(|j| j.state != JobState::Running)
                .map(|j| j.id)
            else {
                break;
            };
            self.jobs.remove(&oldest);
            ops.push(Op::DeleteJob(oldest));
        }
        ops
    }

    /// A node's progress on its preheat command.
    pub fn preheat_progress(
        &mut self,
        node: &str,
        cmd: u64,
        p: PreheatProgress,
    ) -> Result<Vec<Op>, StateError> {
        let job = self
            .commands
            .get(node)
            .and_then(|q| q.iter().find(|c| c.id == cmd))
            .and_then(|c| c.preheat.as_ref())
            .map(|s| s.job)
            .ok_or(StateError::UnknownCommand(cmd))?;
        let Some(j) = self.jobs.get_mut(&job) else {
            return Ok(Vec::new());
        };
        if let Some(t) = j.targets.iter_mut().find(|t| t.command == cmd) {
            t.state = TargetState::Running;
            t.progress = p;
        }
        Ok(vec![Op::PutJob(j.clone())])
    }

    /// Records the end of a target's command.
    pub(crate) fn finish_target(&mut self, job: u64, cmd: u64, a: &api::CommandAck) -> Vec<Op> {
        let Some(j) = self.jobs.get_mut(&job) else {
            return Vec::new();
        };
        if let Some(t) = j.targets.iter_mut().find(|t| t.command == cmd) {
            t.state = if a.ok {
                TargetState::Done
            } else {
                TargetState::Failed
            };
            t.error = a.error.clone();
            if let Some(p) = &a.progress {
                t.progress = p.clone();
            }
        }
        j.state = job_state(&j.targets);
        vec![Op::PutJob(j.clone())]
    }

    /// A job as clients see it: targets on nodes that died or left count as failed.
    pub fn job_view(&self, job: &PreheatJob, now: Instant) -> PreheatJob {
        let mut j = job.clone();
        for t in &mut j.targets {
            if matches!(t.state, TargetState::Pending | TargetState::Running) {
                let gone = match self.nodes.get(&t.node_id) {
                    None => Some("the node left the cluster"),
                    Some(n) if self.status(n, now) == NodeStatus::Dead => Some("the node is dead"),
                    Some(_) => None,
                };
                if let Some(why) = gone {
                    t.state = TargetState::Failed;
                    t.error = Some(why.into());
                }
            }
        }
        j.state = job_state(&j.targets);
        j
    }

    pub fn jobs_view(&self, now: Instant) -> Vec<PreheatJob> {
        self.jobs
            .values()
            .rev()
            .map(|j| self.job_view(j, now))
            .collect()
    }
}

pub(crate) fn job_state(targets: &[PreheatTarget]) -> JobState {
    if targets
        .iter()
        .any(|t| matches!(t.state, TargetState::Pending | TargetState::Running))
    {
        JobState::Running
    } else if targets.iter().all(|t| t.state == TargetState::Done) {
        JobState::Succeeded
    } else {
        JobState::Failed
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::time::Duration;

    use super::*;
    use crate::state::{ReplicationConfig, Timing};

    fn state() -> State {
        State::new(
            Timing {
                heartbeat_interval: Duration::from_secs(1),
                suspect_after: Duration::from_secs(3),
                dead_after: Duration::from_secs(6),
            },
            ReplicationConfig {
                min_replicas: 0,
                hot_threshold: 1,
                max_replicas: 0,
                max_pending_per_node: 4,
            },
        )
    }

    fn reg(s: &mut State, id: &str, zone: &str, gpu: bool) {
        let mut labels = BTreeMap::from([("zone".to_owned(), zone.to_owned())]);
        if gpu {
            labels.insert("gpu".into(), "yes".into());
        }
        s.register(
            api::Register {
                node_id: id.into(),
                p2p_addr: "127.0.0.1:9000".parse().unwrap(),
                proxy_addr: None,
                admin_addr: None,
                capacity: api::Capacity::default(),
                labels,
            },
            Instant::now(),
        )
        .unwrap();
    }

    fn req(replicas: Option<usize>, labels: &[(&str, &str)]) -> PreheatRequest {
        PreheatRequest {
            bucket: "b".into(),
            key: "p/".into(),
            recursive: true,
            replicas,
            labels: labels
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        }
    }

    #[tokio::test(start_paused = true)]
    async fn targets_states_and_dead_nodes() {
        let mut s = state();
        reg(&mut s, "a", "z1", true);
        reg(&mut s, "b", "z1", false);
        reg(&mut s, "c", "z2", true);
        let now = Instant::now();
        // All, by labels, by replicas spread over zones.
        let (all, _) = s.create_preheat(req(None, &[]), now).unwrap();
        assert_eq!(all.targets.len(), 3);
        let (gpu, _) = s.create_preheat(req(None, &[("gpu", "yes")]), now).unwrap();
        let mut ids: Vec<_> = gpu.targets.iter().map(|t| t.node_id.as_str()).collect();
        ids.sort();
        assert_eq!(ids, ["a", "c"]);
        let (two, _) = s.create_preheat(req(Some(2), &[]), now).unwrap();
        let zones: HashSet<_> = two
            .targets
            .iter()
            .map(|t| &s.nodes[&t.node_id].reg.labels["zone"])
            .collect();
        assert_eq!(zones.len(), 2, "one per zone first");
        assert!(s.create_preheat(req(None, &[("gpu", "no")]), now).is_err());
        assert!(s.create_preheat(req(Some(0), &[]), now).is_err());

        // Progress, then acks: one ok, one failed.
        let t0 = &gpu.targets[0];
        s.preheat_progress(
            &t0.node_id,
            t0.command,
            PreheatProgress {
                objects_done: 1,
                objects_total: 2,
                bytes_done: 10,
            },
        )
        .unwrap();
        assert_eq!(s.jobs[&gpu.id].targets[0].state, TargetState::Running);
        let ok = api::CommandAck {
            ok: true,
            error: None,
            progress: Some(PreheatProgress {
                objects_done: 2,
                objects_total: 2,
                bytes_done: 20,
            }),
        };
        s.ack(&t0.node_id, t0.command, &ok).unwrap();
        assert_eq!(s.job_view(&s.jobs[&gpu.id], now).state, JobState::Running);
        let t1 = &gpu.targets[1];
        let bad = api::CommandAck {
            ok: false,
            error: Some("403".into()),
            progress: None,
        };
        s.ack(&t1.node_id, t1.command, &bad).unwrap();
        let v = s.job_view(&s.jobs[&gpu.id], now);
        assert_eq!(v.state, JobState::Failed);
        assert_eq!(v.targets[0].progress.bytes_done, 20);

        // A target whose node dies fails the job.
        tokio::time::advance(Duration::from_secs(7)).await;
        let v = s.job_view(&s.jobs[&all.id], Instant::now());
        assert_eq!(v.state, JobState::Failed);
        assert_eq!(v.targets[0].error.as_deref(), Some("the node is dead"));
    }
}
