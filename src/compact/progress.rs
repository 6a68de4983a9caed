//! Progress of a run, every `--progress` seconds: on a terminal one status line on stderr,
//! redrawn in place; anywhere else (a pipe, a file, Lambda's log) a structured `progress` log line.
//! Each says which partition the run is in, how many of the run's partitions are done, the events
//! merged and objects read so far, the rate, and the time left. The time left is estimated from
//! the partitions done, so it is unknown until the first one is. indicatif would draw a nicer bar,
//! but the binary is also the Lambda bootstrap, whose size and Init this would cost.

use std::future::Future;
use std::io::{IsTerminal, Write};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use time::Date;

/// Where a run stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Status {
    /// The partition being worked on.
    pub partition: Date,
    /// Partitions finished (or failed, or cut off) before it.
    pub partitions_done: usize,
    /// Events merged so far, this partition's included.
    pub merged: u64,
    /// Per-event objects read so far.
    pub read: u64,
}

pub(crate) struct Progress {
    started: Instant,
    every: Duration,
    partitions: usize,
    terminal: bool,
    drawn: AtomicBool,
    last: std::sync::Mutex<Instant>,
}

impl Progress {
    pub fn new(partitions: usize, every: Duration) -> Progress {
        let now = Instant::now();
        Progress {
            started: now,
            every,
            partitions,
            terminal: std::io::stderr().is_terminal(),
            drawn: AtomicBool::new(false),
            last: std::sync::Mutex::new(now),
        }
    }

    /// Runs `work`, showing `status()` every `every` while it is not done.
    pub async fn watch<F: Future>(&self, work: F, status: impl Fn() -> Status) -> F::Output {
        let mut work = std::pin::pin!(work);
        let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + self.every, self.every);
        loop {
            tokio::select! {
                out = &mut work => return out,
                _ = tick.tick() => self.show(status()),
            }
        }
    }

    /// Shows `status` if `every` has passed since the last time: between partitions, for work
    /// that never waits.
    pub fn between(&self, status: Status) {
        if self.last.lock().map(|last| last.elapsed() >= self.every).unwrap_or(false) {
            self.show(status);
        }
    }

    fn show(&self, status: Status) {
        let elapsed = self.started.elapsed();
        if let Ok(mut last) = self.last.lock() {
            *last = Instant::now();
        }
        let left = time_left(status.partitions_done, self.partitions, elapsed);
        let rate = status.read as f64 / elapsed.as_secs_f64().max(0.001);
        if self.terminal {
            let line = line(&status, self.partitions, rate, left);
            let _ = write!(std::io::stderr().lock(), "\r{line:<100}");
            self.drawn.store(true, Ordering::Relaxed);
        } else {
            tracing::info!(
                partition = %status.partition,
                partitions_done = status.partitions_done,
                partitions = self.partitions,
                merged = status.merged,
                read = status.read,
                objects_per_s = rate.round() as u64,
                seconds_left = left.map(|d| d.as_secs()),
                "progress"
            );
        }
    }

    /// Clears the status line on a terminal, so that a log line written next starts on a line of
    /// its own; the next status redraws it.
    pub fn clear(&self) {
        if self.drawn.swap(false, Ordering::Relaxed) {
            let _ = write!(std::io::stderr().lock(), "\r{:100}\r", "");
        }
    }
}

/// The time left, if some partition is done: the time so far per partition done, for each one left.
pub(crate) fn time_left(done: usize, total: usize, elapsed: Duration) -> Option<Duration> {
    (done > 0).then(|| elapsed.mul_f64(total.saturating_sub(done) as f64 / done as f64))
}

/// The terminal's status line.
pub(crate) fn line(status: &Status, partitions: usize, rate: f64, left: Option<Duration>) -> String {
    let left = match left {
        Some(d) if d.as_secs() >= 3600 => {
            format!("about {} h {} min left", d.as_secs() / 3600, d.as_secs() % 3600 / 60)
        }
        Some(d) if d.as_secs() >= 60 => format!("about {} min left", d.as_secs().div_ceil(60)),
        Some(d) => format!("about {} s left", d.as_secs()),
        None => "time left known after the first partition".to_owned(),
    };
    format!(
        "dt={} (partition {} of {}): {} events merged, {} objects read, {:.0}/s, {left}",
        status.partition,
        status.partitions_done + 1,
        partitions,
        status.merged,
        status.read,
        rate
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::Cell;

    const DAY: Date = time::macros::date!(2026 - 11 - 26);

    #[test]
    fn the_time_left_follows_the_partitions_done() {
        assert_eq!(time_left(0, 10, Duration::from_secs(60)), None);
        assert_eq!(time_left(2, 10, Duration::from_secs(60)), Some(Duration::from_secs(240)));
        assert_eq!(time_left(10, 10, Duration::from_secs(60)), Some(Duration::ZERO));
        let status = Status { partition: DAY, partitions_done: 2, merged: 12_345, read: 12_400 };
        assert_eq!(
            line(&status, 10, 410.4, Some(Duration::from_secs(130))),
            "dt=2026-11-26 (partition 3 of 10): 12345 events merged, 12400 objects read, 410/s, about 3 min left"
        );
        assert!(line(&status, 10, 1.0, None).ends_with("time left known after the first partition"));
        assert!(line(&status, 10, 1.0, Some(Duration::from_secs(7500))).ends_with("about 2 h 5 min left"));
    }

    #[tokio::test(start_paused = true)]
    async fn a_long_partition_is_shown_every_period_and_not_after_it_ends() {
        let progress = Progress::new(3, Duration::from_secs(10));
        let asked = Cell::new(0);
        let work = tokio::time::sleep(Duration::from_secs(35));
        progress
            .watch(work, || {
                asked.set(asked.get() + 1);
                Status { partition: DAY, partitions_done: 0, merged: 0, read: 0 }
            })
            .await;
        assert_eq!(asked.get(), 3, "at 10, 20 and 30 s of a 35 s partition");
    }
}
