//! The capabilities one job's plugin gets, as plain data.
//!
//! Everything is denied unless listed here: the `WasiCtx` of a job is built from a
//! [`Policy`] alone. No host environment, no network, no directories but the preopens;
//! in deterministic jobs the clocks are fixed and randomness is seeded from the job id.

use std::path::PathBuf;
use std::time::Duration;

use rand::SeedableRng;
use rand::rngs::StdRng;
use wasmtime_wasi::{FsPerms, HostMonotonicClock, HostWallClock, WasiCtxBuilder};

use crate::lab::Mode;

/// A host directory made visible to the plugin.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mount {
    pub host: PathBuf,
    /// Absolute guest path, e.g. `/in/data`.
    pub guest: String,
    pub writable: bool,
}

/// What a job's plugin may see and do.
#[derive(Debug, Clone)]
pub struct Policy {
    pub mode: Mode,
    pub mounts: Vec<Mount>,
    /// The plugin's whole environment.
    pub env: Vec<(String, String)>,
    pub args: Vec<String>,
    pub cwd: Option<String>,
    /// Seed of a deterministic job's clocks and random sources; `None` uses the host's.
    pub seed: Option<[u8; 32]>,
}

/// The wall-clock time every deterministic job sees: 2020-01-01T00:00:00Z.
pub const FIXED_EPOCH_SECS: u64 = 1_577_836_800;

impl Policy {
    /// Where `guest` (an absolute, normalised guest path) lies, if inside a mount:
    /// the mount with the longest matching prefix and the path relative to it.
    pub fn resolve(&self, guest: &str) -> Option<(&Mount, String)> {
        self.mounts
            .iter()
            .filter_map(|m| {
                let rest = guest.strip_prefix(m.guest.as_str())?;
                if rest.is_empty() {
                    Some((m, String::new()))
                } else {
                    rest.strip_prefix('/').map(|r| (m, r.to_string()))
                }
            })
            .max_by_key(|(m, _)| m.guest.len())
    }

    /// Fills a WASI context builder with exactly these capabilities.
    pub fn apply(&self, builder: &mut WasiCtxBuilder) -> std::io::Result<()> {
        builder
            .envs(&self.env)
            .args(&self.args)
            .allow_blocking_current_thread(true);
        for mount in &self.mounts {
            let perms = if mount.writable {
                FsPerms::ReadWrite
            } else {
                FsPerms::ReadOnly
            };
            builder
                .preopened_dir(&mount.host, &mount.guest, perms)
                .map_err(|e| std::io::Error::other(format!("{}: {e}", mount.host.display())))?;
        }
        if let Some(cwd) = &self.cwd {
            builder.initial_cwd(cwd);
        }
        if let Some(seed) = self.seed {
            let mut insecure = seed;
            insecure[0] ^= 0xff;
            builder
                .wall_clock(FixedClock)
                .monotonic_clock(SteppingClock::default())
                .secure_random(StdRng::from_seed(seed))
                .insecure_random(StdRng::from_seed(insecure))
                .insecure_random_seed(u128::from_le_bytes(seed[..16].try_into().unwrap()));
        }
        Ok(())
    }
}

struct FixedClock;

impl HostWallClock for FixedClock {
    fn resolution(&self) -> Duration {
        Duration::from_secs(1)
    }
    fn now(&self) -> Duration {
        Duration::from_secs(FIXED_EPOCH_SECS)
    }
}

/// Advances one microsecond per reading: deterministic, yet loops that wait for time end.
#[derive(Default)]
struct SteppingClock(std::sync::atomic::AtomicU64);

impl HostMonotonicClock for SteppingClock {
    fn resolution(&self) -> u64 {
        1_000
    }
    fn now(&self) -> u64 {
        self.0
            .fetch_add(1_000, std::sync::atomic::Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> Policy {
        let mount = |guest: &str, writable| Mount {
            host: PathBuf::from(format!("/h{guest}")),
            guest: guest.into(),
            writable,
        };
        Policy {
            mode: Mode::Pure,
            mounts: vec![
                mount("/in/a", false),
                mount("/in/a/job1", false),
                mount("/out", true),
            ],
            env: vec![],
            args: vec![],
            cwd: None,
            seed: None,
        }
    }

    #[test]
    fn resolves_to_the_longest_mount() {
        let p = policy();
        let (m, rest) = p.resolve("/in/a/job1/x.csv").unwrap();
        assert_eq!((m.guest.as_str(), rest.as_str()), ("/in/a/job1", "x.csv"));
        let (m, rest) = p.resolve("/out").unwrap();
        assert_eq!((m.guest.as_str(), rest.as_str()), ("/out", ""));
        assert!(p.resolve("/outside").is_none());
        assert!(p.resolve("/in/ab").is_none());
    }
}
