//! Benchmark children: run a process to completion with its output in
//! files, and measure its wall time, CPU time and peak RSS (`wait4`).
//! Shared by the benches that compare separate processes.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// A finished child process.
pub struct Child {
    /// Wall time.
    pub wall: Duration,
    /// User + system CPU time.
    pub cpu: Duration,
    /// `ru_maxrss`: the child's peak resident set, KiB on Linux.
    pub max_rss_kib: u64,
    /// Its standard output.
    pub stdout: String,
    /// Its standard error.
    pub stderr: String,
}

/// This process's peak RSS (`VmHWM`), KiB.
///
/// On Linux a child's `ru_maxrss` is at least this when it is spawned
/// (`exec` keeps the high-water mark of the address space it replaces, which
/// a fork or vfork copies from or shares with the parent), so this process
/// stays small: it never holds the results, a `__check` child compares them.
/// (Its own `ru_maxrss` is no use here: it inherited `cargo`'s the same way.)
pub fn self_max_rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

/// Run `cmd` to completion with stdout and stderr in files under `dir`
/// (no pipes, so nothing can block), reaping it with `wait4` for its rusage.
pub fn run_child(mut cmd: Command, dir: &Path, name: &str) -> Child {
    let out = dir.join(format!("{name}.stdout"));
    let err = dir.join(format!("{name}.stderr"));
    cmd.stdin(Stdio::null())
        .stdout(std::fs::File::create(&out).unwrap())
        .stderr(std::fs::File::create(&err).unwrap());
    let parent_max_rss_kib = self_max_rss_kib();
    let started = Instant::now();
    let child = cmd
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {name}: {e}"));
    let pid = child.id() as libc::pid_t;
    let mut status = 0;
    // SAFETY: rusage is plain data; all-zero is a valid value.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    loop {
        // SAFETY: waits for our own child, writing into the two locals.
        let r = unsafe { libc::wait4(pid, &mut status, 0, &mut usage) };
        if r == pid {
            break;
        }
        let e = std::io::Error::last_os_error();
        assert_eq!(
            e.kind(),
            std::io::ErrorKind::Interrupted,
            "wait4 for {name}: {e}"
        );
    }
    let wall = started.elapsed();
    // Reaped already: `Child` must not wait again (dropping it does not).
    drop(child);
    let tv = |t: libc::timeval| {
        Duration::from_secs(t.tv_sec as u64) + Duration::from_micros(t.tv_usec as u64)
    };
    let stdout = std::fs::read_to_string(&out).unwrap_or_default();
    let stderr = std::fs::read_to_string(&err).unwrap_or_default();
    let ok = libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0;
    assert!(ok, "{name} failed (wait status {status:#x}):\n{stderr}");
    let max_rss_kib = usage.ru_maxrss as u64;
    if max_rss_kib <= parent_max_rss_kib {
        eprintln!("warning: the peak RSS of {name} ({max_rss_kib} KiB) is not above this process's ({parent_max_rss_kib} KiB), which it inherits on Linux: it may be wrong");
    }
    Child {
        wall,
        cpu: tv(usage.ru_utime) + tv(usage.ru_stime),
        max_rss_kib,
        stdout,
        stderr,
    }
}
