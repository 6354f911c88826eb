//! `eliop2p preheat`: create a preheat job on the control plane, follow it with a
//! progress line, print its targets; `preheat status ID`, `preheat list`.
//! Exit codes as `get`'s, plus 7 when the job failed.

use std::io::{IsTerminal, Write};
use std::time::Duration;

use eliop2p_cluster::api::{JobState, PreheatJob, PreheatJobs, PreheatRequest, TargetState};
use http::Method;

use crate::cp::Cp;
use crate::get::{EXIT_USAGE, ExitError};

pub const EXIT_JOB_FAILED: u8 = 7;

pub struct CreateArgs {
    pub source: String,
    pub recursive: bool,
    pub replicas: Option<usize>,
    pub labels: Vec<String>,
    pub wait: bool,
}

fn usage(message: String) -> anyhow::Error {
    ExitError {
        code: EXIT_USAGE,
        message,
    }
    .into()
}

pub fn request(a: &CreateArgs) -> anyhow::Result<PreheatRequest> {
    let rest = a
        .source
        .strip_prefix("s3://")
        .ok_or_else(|| usage(format!("{:?} is not s3://bucket/key-or-prefix", a.source)))?;
    let (bucket, key) = rest.split_once('/').unwrap_or((rest, ""));
    if bucket.is_empty() {
        return Err(usage(format!("{:?} names no bucket", a.source)));
    }
    let mut labels = std::collections::BTreeMap::new();
    for l in &a.labels {
        let (k, v) = l
            .split_once('=')
            .filter(|(k, _)| !k.is_empty())
            .ok_or_else(|| usage(format!("--label {l:?}: expected key=value")))?;
        labels.insert(k.to_owned(), v.to_owned());
    }
    if a.replicas == Some(0) {
        return Err(usage("--replicas must be at least 1".into()));
    }
    Ok(PreheatRequest {
        bucket: bucket.to_owned(),
        key: key.to_owned(),
        // A prefix cannot be an object: a trailing slash (or none) means all under it.
        recursive: a.recursive || key.is_empty() || key.ends_with('/'),
        replicas: a.replicas,
        labels,
    })
}

pub async fn create(cp: &Cp, a: CreateArgs) -> anyhow::Result<()> {
    let req = request(&a)?;
    let job: PreheatJob = cp
        .call(
            Method::POST,
            "/api/v1/preheat",
            Some(serde_json::to_vec(&req).expect("serializes")),
        )
        .await?;
    println!(
        "preheat job {} created: s3://{}/{}{} on {} node(s)",
        job.id,
        job.request.bucket,
        job.request.key,
        if job.request.recursive {
            " (prefix)"
        } else {
            ""
        },
        job.targets.len()
    );
    if a.wait {
        follow(cp, job.id).await
    } else {
        println!("follow it with: eliop2p preheat status {} --wait", job.id);
        Ok(())
    }
}

fn summary(j: &PreheatJob) -> String {
    let done = j
        .targets
        .iter()
        .filter(|t| t.state == TargetState::Done)
        .count();
    let (od, ot, b) = j.targets.iter().fold((0, 0, 0), |(a, b, c), t| {
        (
            a + t.progress.objects_done,
            b + t.progress.objects_total,
            c + t.progress.bytes_done,
        )
    });
    format!(
        "job {} {}: {done}/{} nodes done, {od}/{ot} objects, {}",
        j.id,
        format!("{:?}", j.state).to_lowercase(),
        j.targets.len(),
        crate::human_bytes(b)
    )
}

fn print_targets(j: &PreheatJob) {
    println!("{}", summary(j));
    println!(
        "  {:<24} {:<8} {:>9} {:>12}  ERROR",
        "NODE", "STATE", "OBJECTS", "BYTES"
    );
    for t in &j.targets {
        println!(
            "  {:<24} {:<8} {:>9} {:>12}  {}",
            t.node_id,
            format!("{:?}", t.state).to_lowercase(),
            format!("{}/{}", t.progress.objects_done, t.progress.objects_total),
            crate::human_bytes(t.progress.bytes_done),
            t.error.as_deref().unwrap_or("")
        );
    }
}

fn outcome(j: &PreheatJob) -> anyhow::Result<()> {
    match j.state {
        JobState::Failed => Err(ExitError {
            code: EXIT_JOB_FAILED,
            message: format!("preheat job {} failed", j.id),
        }
        .into()),
        _ => Ok(()),
    }
}

/// Polls the job until it ends, with a progress line on stderr.
pub async fn follow(cp: &Cp, id: u64) -> anyhow::Result<()> {
    let tty = std::io::stderr().is_terminal();
    let mut last_line = String::new();
    loop {
        let j: PreheatJob = cp
            .call(Method::GET, &format!("/api/v1/preheat/{id}"), None)
            .await?;
        let line = summary(&j);
        if line != last_line {
            let mut err = std::io::stderr().lock();
            if tty {
                let _ = write!(err, "\r\x1b[2K{line}");
            } else {
                let _ = writeln!(err, "{line}");
            }
            let _ = err.flush();
            last_line = line;
        }
        if j.state != JobState::Running {
            if tty {
                eprintln!();
            }
            print_targets(&j);
            return outcome(&j);
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

pub async fn status(cp: &Cp, id: u64, wait: bool) -> anyhow::Result<()> {
    if wait {
        return follow(cp, id).await;
    }
    let j: PreheatJob = cp
        .call(Method::GET, &format!("/api/v1/preheat/{id}"), None)
        .await?;
    print_targets(&j);
    outcome(&j)
}

pub async fn list(cp: &Cp) -> anyhow::Result<()> {
    let jobs: PreheatJobs = cp.call(Method::GET, "/api/v1/preheat", None).await?;
    if jobs.jobs.is_empty() {
        println!("no preheat jobs");
    }
    for j in &jobs.jobs {
        println!(
            "{}  s3://{}/{}",
            summary(j),
            j.request.bucket,
            j.request.key
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(source: &str, labels: &[&str]) -> CreateArgs {
        CreateArgs {
            source: source.into(),
            recursive: false,
            replicas: None,
            labels: labels.iter().map(|s| s.to_string()).collect(),
            wait: false,
        }
    }

    #[test]
    fn requests_from_arguments() {
        let r = request(&args("s3://b/train/", &["zone=a"])).unwrap();
        assert!(r.recursive && r.key == "train/" && r.labels["zone"] == "a");
        let r = request(&args("s3://b/one.bin", &[])).unwrap();
        assert!(!r.recursive);
        assert!(request(&args("s3://b", &[])).unwrap().recursive);
        assert!(request(&args("b/k", &[])).is_err());
        assert!(request(&args("s3://b/k", &["novalue"])).is_err());
        assert!(request(&args("s3://b/k", &["=v"])).is_err());
    }
}
