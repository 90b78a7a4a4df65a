//! A CPU bandwidth limit for a benchmark run: `mojaswitch-bench
//! --cpu-limit-cores X` puts itself, and so the switch it starts, into a
//! control group of its own that may use at most X cores' worth of CPU time.
//!
//! Why: the shared machine's speed changes from day to day (the generator's
//! own CPU per transfer has ranged over 2.5 times), and the tail latency at
//! a given rate follows how close the machine is to running out of CPU.
//! A fixed limit below the machine's two cores makes that closeness
//! repeatable, so that two builds can be compared under pressure on any
//! day. It is not the same as a slower CPU (the work per transfer does not
//! grow); it takes capacity away, as other tenants of a host do.
//!
//! Linux only, and it needs write access to the cgroup file system (root);
//! cgroup v2 (`cpu.max`) and v1 (`cpu.cfs_quota_us`) are both handled.
//! Everything is undone when the limit is dropped; a run killed by a
//! signal leaves an empty group `mojaswitch-bench-<pid>` behind, which
//! `rmdir` removes.

use std::fs;
use std::path::{Path, PathBuf};

/// The accounting period of the limit. A group that has used its share
/// waits for the next period, so one stall lasts at most this long; shorter
/// periods make the stalls shorter and the scheduler's bookkeeping dearer.
pub const PERIOD_US: u64 = 20_000;

/// The accepted range of `--cpu-limit-cores`.
pub const CORES_MIN: f64 = 0.05;
pub const CORES_MAX: f64 = 64.0;

#[derive(Debug, thiserror::Error)]
pub enum CpuLimitError {
    #[error("--cpu-limit-cores must be between {CORES_MIN} and {CORES_MAX}, got {0}")]
    OutOfRange(f64),
    #[error("no cgroup cpu controller found under /sys/fs/cgroup")]
    NoController,
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// Which cgroup interface the group was made with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Version {
    V1,
    V2,
}

/// Throttling counters of the group (from its `cpu.stat`).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Throttling {
    /// Accounting periods in which the group had runnable threads.
    pub periods: u64,
    /// Periods in which it used up its share and was stopped.
    pub throttled_periods: u64,
    /// Total time its threads were held back, in milliseconds.
    pub throttled_ms: f64,
}

/// A control group holding this process, limited to `cores`.
#[derive(Debug)]
pub struct CpuLimit {
    pub cores: f64,
    version: Version,
    /// The group made for this run, and its path as `/proc/<pid>/cgroup`
    /// names it.
    dir: PathBuf,
    name: String,
    /// The group this process came from, to go back to.
    home: PathBuf,
}

impl CpuLimit {
    /// Makes a group limited to `cores` and moves this process into it.
    /// Threads and processes started afterwards are in it too.
    pub fn apply(cores: f64) -> Result<CpuLimit, CpuLimitError> {
        if !(CORES_MIN..=CORES_MAX).contains(&cores) {
            return Err(CpuLimitError::OutOfRange(cores));
        }
        let (version, root, home, parent_name) = find_controller()?;
        let leaf = format!("mojaswitch-bench-{}", std::process::id());
        let dir = root.join(&leaf);
        create_dir(&dir)?;
        let limit = CpuLimit {
            cores,
            version,
            dir,
            name: format!("{}/{leaf}", parent_name.trim_end_matches('/')),
            home,
        };
        // Written before this process moves in; on failure `Drop` removes
        // the empty group.
        let quota_us = (cores * PERIOD_US as f64).round() as u64;
        match version {
            Version::V2 => write(
                &limit.dir.join("cpu.max"),
                &format!("{quota_us} {PERIOD_US}"),
            )?,
            Version::V1 => {
                write(&limit.dir.join("cpu.cfs_period_us"), &PERIOD_US.to_string())?;
                write(&limit.dir.join("cpu.cfs_quota_us"), &quota_us.to_string())?;
            }
        }
        write(
            &limit.dir.join("cgroup.procs"),
            &std::process::id().to_string(),
        )?;
        Ok(limit)
    }

    /// The group's throttling counters so far.
    pub fn throttling(&self) -> Option<Throttling> {
        let text = fs::read_to_string(self.dir.join("cpu.stat")).ok()?;
        let field = |name: &str| {
            text.lines()
                .filter_map(|line| line.split_once(' '))
                .find(|(key, _)| *key == name)
                .and_then(|(_, value)| value.trim().parse::<u64>().ok())
        };
        let throttled_ms = match self.version {
            Version::V2 => field("throttled_usec")? as f64 / 1e3,
            Version::V1 => field("throttled_time")? as f64 / 1e6,
        };
        Some(Throttling {
            periods: field("nr_periods")?,
            throttled_periods: field("nr_throttled")?,
            throttled_ms,
        })
    }

    /// The group's directory (for reports).
    pub fn path(&self) -> &Path {
        &self.dir
    }

    /// Whether process `pid` is in the group.
    pub fn holds(&self, pid: u32) -> bool {
        fs::read_to_string(format!("/proc/{pid}/cgroup")).is_ok_and(|text| {
            text.lines()
                .filter_map(|line| cpu_cgroup(self.version, line))
                .any(|path| path == self.name)
        })
    }
}

impl Drop for CpuLimit {
    /// Moves this process back where it came from and removes the group.
    /// A child still in the group (a switch that did not stop) keeps it
    /// from being removed; that is reported, not fatal.
    fn drop(&mut self) {
        let procs = self.home.join("cgroup.procs");
        if let Err(error) = write(&procs, &std::process::id().to_string()) {
            eprintln!("cpu limit: could not leave {}: {error}", self.dir.display());
        }
        if let Err(error) = fs::remove_dir(&self.dir) {
            eprintln!(
                "cpu limit: could not remove {}: {error}",
                self.dir.display()
            );
        }
    }
}

/// The cgroup file system with a cpu controller: the directory new groups
/// go in, the group this process is in now, and the cgroup path of the
/// former.
fn find_controller() -> Result<(Version, PathBuf, PathBuf, String), CpuLimitError> {
    let base = Path::new("/sys/fs/cgroup");
    let own = fs::read_to_string("/proc/self/cgroup").map_err(|source| CpuLimitError::Io {
        path: "/proc/self/cgroup".into(),
        source,
    })?;
    if base.join("cgroup.controllers").exists() {
        // v2: one hierarchy ("0::/path"). A new group directly under the
        // root avoids the rule that a group with processes has no children
        // with controllers; the root must hand the cpu controller down.
        let path = own
            .lines()
            .find_map(|line| cpu_cgroup(Version::V2, line))
            .ok_or(CpuLimitError::NoController)?;
        write(&base.join("cgroup.subtree_control"), "+cpu")?;
        return Ok((
            Version::V2,
            base.to_path_buf(),
            under(base, path),
            "/".into(),
        ));
    }
    // v1: the cpu hierarchy ("N:cpu,cpuacct:/path" or "N:cpu:/path").
    let root = ["cpu", "cpu,cpuacct"]
        .iter()
        .map(|name| base.join(name))
        .find(|dir| dir.join("cpu.cfs_quota_us").exists())
        .ok_or(CpuLimitError::NoController)?;
    let path = own
        .lines()
        .find_map(|line| cpu_cgroup(Version::V1, line))
        .ok_or(CpuLimitError::NoController)?;
    let home = under(&root, path);
    Ok((Version::V1, home.clone(), home, path.to_string()))
}

/// The cgroup path in a `/proc/<pid>/cgroup` line (`id:controllers:path`)
/// that names the cpu controller's group: v2's single hierarchy has no
/// controller list (`0::/path`), v1's lists `cpu` (`4:cpu,cpuacct:/path`).
fn cpu_cgroup(version: Version, line: &str) -> Option<&str> {
    let mut fields = line.splitn(3, ':');
    let (_id, controllers, path) = (fields.next()?, fields.next()?, fields.next()?);
    let cpu = match version {
        Version::V2 => controllers.is_empty(),
        Version::V1 => controllers.split(',').any(|c| c == "cpu"),
    };
    cpu.then_some(path)
}

/// `base` joined with a cgroup path such as `/a/b`.
fn under(base: &Path, cgroup_path: &str) -> PathBuf {
    base.join(cgroup_path.trim_start_matches('/'))
}

fn create_dir(dir: &Path) -> Result<(), CpuLimitError> {
    fs::create_dir(dir).map_err(|source| CpuLimitError::Io {
        path: dir.to_path_buf(),
        source,
    })
}

fn write(path: &Path, value: &str) -> Result<(), CpuLimitError> {
    fs::write(path, value).map_err(|source| CpuLimitError::Io {
        path: path.to_path_buf(),
        source,
    })
}

#[cfg(test)]
mod tests {
    use super::{cpu_cgroup, Version};

    fn first(version: Version, text: &str) -> Option<&str> {
        text.lines().find_map(|line| cpu_cgroup(version, line))
    }

    #[test]
    fn the_cpu_group_is_read_from_either_cgroup_layout() {
        let v1 = "9:pids:/\n4:cpu,cpuacct:/a/b\n0::/";
        assert_eq!(first(Version::V1, v1), Some("/a/b"));
        assert_eq!(first(Version::V1, "3:cpuset:/x\n1:cpu:/y"), Some("/y"));
        assert_eq!(first(Version::V1, "3:cpuset:/x"), None);
        assert_eq!(
            first(Version::V2, "0::/user.slice/s"),
            Some("/user.slice/s")
        );
        assert_eq!(first(Version::V2, v1), Some("/"));
        assert_eq!(first(Version::V2, "4:cpu:/a"), None);
    }
}
