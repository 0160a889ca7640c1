//! Per-stage resource limits and their defaults.
//!
//! A job that exceeds one fails with a message naming the limit; other jobs carry on.

use std::fmt;
use std::time::Duration;

/// What one job of a stage may use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Limits {
    /// Bytes of the plugin's linear memories and tables, all of them together.
    pub memory: u64,
    /// Wall time of the plugin, tools included.
    pub time: Duration,
    /// What `/out` and the scratch `/tmp` hold: the bytes of their files, and every entry
    /// counted by [`entry_cost`]; held while the plugin writes
    /// (it stops there; a tool's writes are measured when the tool returns) and checked
    /// again at commit.
    pub output: u64,
    /// Bytes kept of each of stdout and stderr; the rest is cut with a marker.
    pub log: u64,
    /// Handles (files, directories, streams) a component may hold open at once.
    pub files: u64,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            memory: 1 << 30,
            time: Duration::from_secs(3600),
            output: 4 << 30,
            log: 16 << 20,
            files: 1024,
        }
    }
}

/// The largest memory limit a stage may ask for; the runtime reserves address space for it.
pub const MAX_MEMORY: u64 = 4 << 30;

/// The keys of a stage's `limits` table.
pub const NAMES: [&str; 5] = ["memory", "time", "output", "log", "files"];

/// How a stage's limits grow with each retry (`escalate = { memory = 2, time = 1.5 }`):
/// attempt `k` (from 1) runs with each limit times its factor to the power `k - 1`, memory
/// at most [`MAX_MEMORY`]. The other limits stay: they bound what a job leaves behind, not
/// what it needs to finish.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Escalation {
    pub memory: f64,
    pub time: f64,
}

impl Default for Escalation {
    /// Memory doubles with each retry, the commonest reason to retry; time stays.
    fn default() -> Escalation {
        Escalation {
            memory: 2.0,
            time: 1.0,
        }
    }
}

/// The keys of a stage's `escalate` table.
pub const ESCALATE_NAMES: [&str; 2] = ["memory", "time"];

/// The largest factor `escalate` takes: past it, one retry would be another job.
pub const MAX_FACTOR: f64 = 16.0;

impl Escalation {
    /// The limits of attempt `attempt` (from 1) of a job whose first attempt has `limits`.
    pub fn at(&self, limits: Limits, attempt: u32) -> Limits {
        let retries = attempt.saturating_sub(1).min(64) as i32;
        let memory = limits.memory as f64 * self.memory.powi(retries);
        let time = limits.time.as_secs_f64() * self.time.powi(retries);
        Limits {
            memory: (memory.min(MAX_MEMORY as f64) as u64).max(limits.memory.min(MAX_MEMORY)),
            // A week bounds what a clock deadline is asked to hold.
            time: Duration::from_secs_f64(time.min(7.0 * 86_400.0)).max(limits.time),
            ..limits
        }
    }
}

/// What every entry of an output (file, directory, link) costs against the output limit
/// beyond its path and content: its inode and its directory entry, about.
pub const ENTRY: u64 = 512;

/// What one entry of an output counts against the output limit, besides a file's bytes:
/// [`ENTRY`], the length of its path (relative to the output) and, for a link, of its
/// target. So empty files, directories and links cost, and the output's manifest, one
/// line of path and digest or target per entry, is never much more than what was counted.
pub fn entry_cost(path: u64, target: u64) -> u64 {
    ENTRY.saturating_add(path).saturating_add(target)
}

impl fmt::Display for Limits {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "memory {}, time {}, output {}, log {}, files {}",
            bytes(self.memory),
            duration(self.time),
            bytes(self.output),
            bytes(self.log),
            self.files
        )
    }
}

/// `1073741824` as `1G`, for messages.
pub fn bytes(n: u64) -> String {
    for (unit, size) in [("G", 1u64 << 30), ("M", 1 << 20), ("K", 1 << 10)] {
        if n >= size && n.is_multiple_of(size) {
            return format!("{}{unit}", n / size);
        }
    }
    format!("{n}B")
}

pub fn duration(d: Duration) -> String {
    let secs = d.as_secs();
    match secs {
        s if s >= 3600 && s % 3600 == 0 => format!("{}h", s / 3600),
        s if s >= 60 && s % 60 == 0 => format!("{}m", s / 60),
        s => format!("{s}s"),
    }
}

/// Splits `16M` into `16` and `M`.
fn number_and_unit(text: &str) -> Option<(u64, &str)> {
    let text = text.trim();
    let (number, unit) = text.split_at(
        text.find(|c: char| !c.is_ascii_digit())
            .unwrap_or(text.len()),
    );
    Some((number.parse().ok()?, unit.trim()))
}

/// Parses `512`, `64K`, `16M`, `1G` (bytes, binary units).
pub fn parse_bytes(text: &str) -> Option<u64> {
    let (n, unit) = number_and_unit(text)?;
    let scale = match unit.to_ascii_uppercase().as_str() {
        "" | "B" => 1,
        "K" | "KB" | "KIB" => 1 << 10,
        "M" | "MB" | "MIB" => 1 << 20,
        "G" | "GB" | "GIB" => 1 << 30,
        _ => return None,
    };
    n.checked_mul(scale)
}

/// Parses `30s`, `10m`, `2h`, or a number of seconds.
pub fn parse_duration(text: &str) -> Option<Duration> {
    let (n, unit) = number_and_unit(text)?;
    let secs = match unit {
        "" | "s" => n,
        "m" | "min" => n * 60,
        "h" => n * 3600,
        "ms" => return Some(Duration::from_millis(n)),
        _ => return None,
    };
    Some(Duration::from_secs(secs))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_and_durations_round_trip() {
        assert_eq!(parse_bytes("1G"), Some(1 << 30));
        assert_eq!(parse_bytes("64K"), Some(65536));
        assert_eq!(parse_bytes("12"), Some(12));
        assert_eq!(parse_bytes("1T"), None);
        assert_eq!(parse_duration("10m"), Some(Duration::from_secs(600)));
        assert_eq!(parse_duration("250ms"), Some(Duration::from_millis(250)));
        assert_eq!(bytes(16 << 20), "16M");
        assert_eq!(
            Limits::default().to_string(),
            "memory 1G, time 1h, output 4G, log 16M, files 1024"
        );
    }

    #[test]
    fn escalation_multiplies_per_retry_within_the_ceiling() {
        let limits = Limits {
            memory: 32 << 20,
            time: Duration::from_secs(60),
            ..Limits::default()
        };
        let grow = Escalation {
            memory: 2.0,
            time: 1.5,
        };
        assert_eq!(grow.at(limits, 1), limits);
        let third = grow.at(limits, 3);
        assert_eq!(third.memory, 128 << 20);
        assert_eq!(third.time, Duration::from_secs(135));
        assert_eq!(third.output, limits.output);
        assert_eq!(grow.at(limits, 40).memory, MAX_MEMORY);
        assert_eq!(Escalation::default().at(limits, 2).time, limits.time);
    }
}
