//! The processes of a notebook run, found and killed when the run ends.
//!
//! A kernel runs in a session of its own (jupyter_client starts it so), but
//! what a notebook starts need not stay there: `!sleep 90 &` runs under a
//! pseudo-terminal in yet another session, and a daemon may leave every group
//! it was born in. What every such process keeps is the environment it
//! inherited: the driver starts each kernel with [`TOKEN_VARIABLE`] set to a
//! token of that run, and what carries the token belongs to the run. The
//! driver kills a run's processes when it ends; nbci kills a driver's (all its
//! runs') when it has to stop the driver itself: a deadline passed, a job was
//! cancelled, nbci is being stopped.
//!
//! Finding them reads `/proc/<pid>/environ`, so this is Linux's (where nbci
//! runs in CI); elsewhere only the driver's process group is killed.

use std::path::Path;

use nix::sys::signal::{Signal, kill, killpg};
use nix::unistd::Pid;

/// The variable that marks a run's processes (set by the driver on each kernel).
pub const TOKEN_VARIABLE: &str = "NBCI_RUN";

/// How many times [`kill_tagged`] looks again (a process may fork while its
/// siblings die; each round kills what the last one missed).
const KILL_ROUNDS: usize = 50;

/// The processes (other than this one) whose environment has
/// `NBCI_RUN=<prefix>...`.
pub fn tagged_processes(prefix: &str) -> Vec<Pid> {
    tagged_in(Path::new("/proc"), prefix, std::process::id())
}

/// [`tagged_processes`] over a `/proc`-like directory (tests give their own).
fn tagged_in(proc_root: &Path, prefix: &str, me: u32) -> Vec<Pid> {
    let needle = format!("{TOKEN_VARIABLE}={prefix}");
    let Ok(entries) = std::fs::read_dir(proc_root) else {
        return Vec::new();
    };
    let mut found = Vec::new();
    for entry in entries.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|name| name.parse::<u32>().ok())
        else {
            continue;
        };
        if pid == me {
            continue;
        }
        // Gone by now, or another user's: not ours to kill either way.
        let Ok(environment) = std::fs::read(entry.path().join("environ")) else {
            continue;
        };
        let tagged = environment
            .split(|byte| *byte == 0)
            .any(|variable| variable.starts_with(needle.as_bytes()));
        if let (true, Ok(pid)) = (tagged, i32::try_from(pid)) {
            found.push(Pid::from_raw(pid));
        }
    }
    found
}

/// Kills (SIGKILL) every process carrying the prefix, looking again until none
/// is left or the rounds run out; returns how many it killed.
pub fn kill_tagged(prefix: &str) -> usize {
    let mut killed = 0;
    for _ in 0..KILL_ROUNDS {
        let pids = tagged_processes(prefix);
        if pids.is_empty() {
            break;
        }
        for pid in pids {
            if kill(pid, Signal::SIGKILL).is_ok() {
                killed += 1;
            }
        }
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    killed
}

/// Sends `signal` to the process group led by `pid` (a driver: spawned as the
/// leader of a group of its own).
pub fn signal_group(pid: u32, signal: Signal) {
    if let Ok(pid) = i32::try_from(pid) {
        let _ = killpg(Pid::from_raw(pid), signal);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fake_process(root: &Path, pid: u32, environment: &[&str]) {
        let dir = root.join(pid.to_string());
        std::fs::create_dir_all(&dir).expect("mkdir");
        let mut bytes = environment.join("\0").into_bytes();
        bytes.push(0);
        std::fs::write(dir.join("environ"), bytes).expect("write");
    }

    #[test]
    fn processes_are_found_by_the_token_prefix_in_their_environment() {
        let root = tempfile::tempdir().expect("tempdir");
        fake_process(root.path(), 10, &["PATH=/bin", "NBCI_RUN=d1.1"]);
        fake_process(root.path(), 11, &["NBCI_RUN=d1.2", "HOME=/root"]);
        fake_process(root.path(), 12, &["NBCI_RUN=d12.1"]);
        fake_process(root.path(), 13, &["OTHER=NBCI_RUN=d1.1"]);
        fake_process(root.path(), 14, &["NBCI_RUN=d1.3"]);
        std::fs::create_dir_all(root.path().join("self")).expect("mkdir");
        let mut found = tagged_in(root.path(), "d1.", 14);
        found.sort();
        assert_eq!(found, vec![Pid::from_raw(10), Pid::from_raw(11)]);
        assert_eq!(tagged_in(root.path(), "d1.2", 0), vec![Pid::from_raw(11)]);
        assert!(tagged_in(&root.path().join("none"), "d1.", 0).is_empty());
    }

    #[test]
    fn a_real_process_carrying_the_token_is_killed() {
        let token = format!("test-{}-{}.1", std::process::id(), line!());
        let mut child = std::process::Command::new("sleep")
            .arg("30")
            .env(TOKEN_VARIABLE, &token)
            .spawn()
            .expect("sleep starts");
        let started = std::time::Instant::now();
        while tagged_processes(&token).is_empty() {
            assert!(started.elapsed().as_secs() < 10, "never saw the process");
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        assert!(kill_tagged(&token) >= 1);
        let status = child.wait().expect("wait");
        assert!(!status.success());
    }
}
