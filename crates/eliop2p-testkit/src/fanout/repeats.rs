//! One bed row run several times, and the spread of its p99 over the runs.
//!
//! Every host of the bed runs on one machine, so a row's finish times vary from
//! run to run with what else the machine does: one build read the 16-node
//! 64 MiB row's p99 at 1.35-1.50x over about 40 runs of one session, and from
//! day to day the machine's speed moves it further. A claim about a row rests
//! on its runs' median and spread, measured beside whatever it is compared
//! with, not on one run.

use super::{Report, Spec};

pub const REPEATS_HEADER: &str = "| nodes | object | node NIC | origin NIC | mode | runs | p99 / ideal: median | mean ± sd | min - max | origin bytes / object: max | bad bodies, all runs |\n|---|---|---|---|---|---|---|---|---|---|---|";

/// The row of `runs` of `spec`: the median, mean, sample standard deviation and
/// range of the runs' p99 / ideal, the most the origin sent in a run, and the bad
/// bodies of all runs together. A run in which no client finished has no p99;
/// it is counted in `runs` and shown apart.
pub fn repeats_row(spec: &Spec, runs: &[Report]) -> String {
    let mut p99: Vec<f64> = runs.iter().filter_map(|r| r.percentile(99.0).map(|t| t / r.ideal)).collect();
    p99.sort_by(f64::total_cmp);
    let without = runs.len() - p99.len();
    let killed = runs.iter().any(|r| r.killed.is_some());
    let origin = runs.iter().map(|r| r.origin_bytes as f64 / spec.object_size as f64).fold(0.0, f64::max);
    let bad: usize = runs.iter().map(|r| r.bad_bodies).sum();
    let stats = match p99.len() {
        0 => "- | - | - |".to_owned(),
        n => {
            let median = if n % 2 == 1 { p99[n / 2] } else { (p99[n / 2 - 1] + p99[n / 2]) / 2.0 };
            let mean = p99.iter().sum::<f64>() / n as f64;
            let sd = if n > 1 { (p99.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / (n - 1) as f64).sqrt() } else { 0.0 };
            format!("{median:.3}x | {mean:.3}x ± {sd:.3} | {:.2}x - {:.2}x |", p99[0], p99[n - 1])
        }
    };
    format!(
        "{} {}{} | {stats} {origin:.3}x | {bad} |",
        super::row_name(spec, killed),
        runs.len(),
        if without > 0 { format!(" ({without} without a finished client)") } else { String::new() },
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fanout::tests::spec;

    fn run(finish: &[f64], origin: u64, bad: usize) -> Report {
        Report { finish: finish.iter().map(|t| Some(*t)).collect(), ideal: 2.0, origin_bytes: origin, bad_bodies: bad, ..Report::default() }
    }

    #[test]
    fn the_row_is_the_spread_of_the_runs_p99() {
        let s = spec();
        let size = s.object_size as u64;
        // p99 of each run is its slowest client: 2.6, 2.8, 3.0 and 2.7 s over an
        // ideal of 2 s.
        let runs = [run(&[2.2, 2.6], size, 0), run(&[2.8, 2.1], size, 0), run(&[3.0], size + size / 50, 1), run(&[2.7], size, 0)];
        let row = repeats_row(&s, &runs);
        // Sorted 1.30 1.35 1.40 1.50: median 1.375, mean 1.3875 (printed 1.388), sd 0.0854.
        assert!(row.starts_with("| 4 | 32 MiB | 100 Mbit/s | 100 Mbit/s | Gossip | 4 | "), "{row}");
        assert!(row.contains("| 1.375x | 1.388x ± 0.085 | 1.30x - 1.50x | 1.020x | 1 |"), "{row}");
        // An odd count takes the middle run.
        assert!(repeats_row(&s, &runs[..3]).contains("| 1.400x |"));
    }

    #[test]
    fn a_run_without_a_finished_client_is_counted_not_hidden() {
        let s = spec();
        let failed = Report { finish: vec![None, None], ideal: 2.0, bad_bodies: 2, ..Report::default() };
        let row = repeats_row(&s, &[run(&[2.6], 0, 0), failed.clone()]);
        assert!(row.contains("| 2 (1 without a finished client) | 1.300x | 1.300x ± 0.000 | 1.30x - 1.30x |"), "{row}");
        assert!(row.ends_with("| 2 |"), "{row}");
        assert!(repeats_row(&s, &[failed]).contains("| 1 (1 without a finished client) | - | - | - |"));
    }
}
