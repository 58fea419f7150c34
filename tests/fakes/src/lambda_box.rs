//! A Lambda-sized box: a process run under the memory limit and CPU share a Lambda
//! function of that size has, so that tests and benchmarks meet the envelope the stack
//! deploys into.
//!
//! - Memory is a hard limit in Lambda ("the function's memory ... if exceeded, the
//!   invocation is stopped": AWS Lambda Developer Guide, "Configuring function memory"):
//!   here the kernel's OOM killer ends a process of the box that goes over
//!   `memory.limit_in_bytes` (cgroup v1, the kernel's memory controller), with swap held
//!   to the same limit where the kernel accounts it.
//! - CPU scales with memory: one vCPU at 1 769 MB (the same guide): the box's
//!   `cpu.cfs_quota_us` is that share of `cpu.cfs_period_us`.
//!
//! It needs root and cgroup v1 (this machine's kind has both, see DESIGN.md); `available`
//! says whether it can be used, and a test that must run inside it fails rather than
//! skips when `HEIMDALLR_REQUIRE_LAMBDA_BOX` is set (scripts/test.sh sets it).

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

const MEMORY_ROOT: &str = "/sys/fs/cgroup/memory";
const CPU_ROOT: &str = "/sys/fs/cgroup/cpu";
/// Lambda gives one full vCPU at this much memory (MB).
pub const MB_PER_VCPU: u64 = 1769;
const CFS_PERIOD_US: u64 = 100_000;

static NEXT: AtomicU64 = AtomicU64::new(0);

/// A cgroup pair (memory, cpu) sized like a Lambda function; removed when dropped (once
/// its processes have ended).
#[derive(Debug)]
pub struct LambdaBox {
    memory_mb: u64,
    memory: PathBuf,
    cpu: Option<PathBuf>,
}

impl LambdaBox {
    /// Whether boxes can be made here (cgroup v1 memory controller, writable).
    pub fn available() -> bool {
        let probe = Path::new(MEMORY_ROOT).join(format!("heimdallr-probe-{}", std::process::id()));
        let made = std::fs::create_dir(&probe).is_ok();
        if made {
            let _ = std::fs::remove_dir(&probe);
        }
        made
    }

    /// Whether a test must run in a box (else it may skip where boxes cannot be made).
    pub fn required() -> bool {
        std::env::var_os("HEIMDALLR_REQUIRE_LAMBDA_BOX").is_some()
    }

    /// A box with the memory (MB, as Lambda counts it: MiB) and CPU share of a Lambda
    /// function of `memory_mb`.
    pub fn new(memory_mb: u64) -> std::io::Result<Self> {
        Self::with_cpu_of(memory_mb, memory_mb)
    }

    /// A box with the memory of a `memory_mb` function and the CPU share of a `cpu_mb` one
    /// (tests of debug builds, which need about ten times the CPU of the release build the
    /// stack deploys, give them that much more share, so the memory is what is tested).
    pub fn with_cpu_of(memory_mb: u64, cpu_mb: u64) -> std::io::Result<Self> {
        let name = format!(
            "heimdallr-box-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        );
        let memory = Path::new(MEMORY_ROOT).join(&name);
        std::fs::create_dir(&memory)?;
        let limit = (memory_mb * 1024 * 1024).to_string();
        std::fs::write(memory.join("memory.limit_in_bytes"), &limit)?;
        // Swap counts against the limit too (where the kernel accounts it), as in Lambda,
        // which has none.
        let _ = std::fs::write(memory.join("memory.memsw.limit_in_bytes"), &limit);
        let _ = std::fs::write(memory.join("memory.swappiness"), "0");
        let cpu = Path::new(CPU_ROOT).join(&name);
        let cpu = match std::fs::create_dir(&cpu) {
            Ok(()) => {
                let quota = (CFS_PERIOD_US * cpu_mb / MB_PER_VCPU).max(1000);
                std::fs::write(cpu.join("cpu.cfs_period_us"), CFS_PERIOD_US.to_string())?;
                std::fs::write(cpu.join("cpu.cfs_quota_us"), quota.to_string())?;
                Some(cpu)
            }
            Err(_) => None,
        };
        Ok(Self {
            memory_mb,
            memory,
            cpu,
        })
    }

    /// A box for a test of a debug build: `None` where boxes cannot be made, unless
    /// [`LambdaBox::required`] (then it panics with the reason).
    pub fn for_test(memory_mb: u64) -> Option<Self> {
        let debug_cpu = if cfg!(debug_assertions) { 10 } else { 1 };
        match Self::with_cpu_of(memory_mb, memory_mb * debug_cpu) {
            Ok(boxed) => Some(boxed),
            Err(e) if Self::required() => panic!(
                "HEIMDALLR_REQUIRE_LAMBDA_BOX is set but a {memory_mb} MB box cannot be made (root and cgroup v1 needed): {e}"
            ),
            Err(e) => {
                eprintln!("no Lambda-sized box here ({e}): running without a memory limit");
                None
            }
        }
    }

    pub fn memory_mb(&self) -> u64 {
        self.memory_mb
    }

    /// The program and arguments that run `program args..` inside the box: a shell that
    /// moves itself into the box's cgroups, then becomes the program (so the box holds it
    /// from its first allocation, and its pid is the program's).
    pub fn wrap(&self, program: &str, args: &[&str]) -> (String, Vec<String>) {
        let mut procs = vec![self.memory.join("cgroup.procs")];
        if let Some(cpu) = &self.cpu {
            procs.push(cpu.join("cgroup.procs"));
        }
        let enter: Vec<String> = procs
            .iter()
            .map(|p| format!("echo $$ > '{}'", p.display()))
            .collect();
        let script = format!("{} && exec \"$0\" \"$@\"", enter.join(" && "));
        let mut wrapped = vec!["-c".to_string(), script, program.to_string()];
        wrapped.extend(args.iter().map(|a| a.to_string()));
        ("/bin/sh".to_string(), wrapped)
    }

    /// The most memory the box's processes held at once, in bytes (as the kernel charges
    /// it: their pages and the page cache they brought in).
    pub fn peak_bytes(&self) -> u64 {
        read_u64(&self.memory.join("memory.max_usage_in_bytes")).unwrap_or(0)
    }

    /// How many times the kernel killed a process of the box for going over its memory.
    pub fn oom_kills(&self) -> u64 {
        std::fs::read_to_string(self.memory.join("memory.oom_control"))
            .ok()
            .and_then(|text| {
                text.lines()
                    .find_map(|line| line.strip_prefix("oom_kill "))
                    .and_then(|n| n.trim().parse().ok())
            })
            .unwrap_or(0)
    }

    /// How often the box hit its limit (the kernel reclaimed or refused memory).
    pub fn limit_hits(&self) -> u64 {
        read_u64(&self.memory.join("memory.failcnt")).unwrap_or(0)
    }
}

fn read_u64(path: &Path) -> Option<u64> {
    std::fs::read_to_string(path).ok()?.trim().parse().ok()
}

impl Drop for LambdaBox {
    fn drop(&mut self) {
        // A cgroup is removed once empty; processes still in it are moved back first.
        for dir in [Some(&self.memory), self.cpu.as_ref()]
            .into_iter()
            .flatten()
        {
            if let Ok(procs) = std::fs::read_to_string(dir.join("cgroup.procs")) {
                let root = dir.parent().map(|p| p.join("cgroup.procs"));
                for pid in procs.lines() {
                    if let Some(root) = &root {
                        let _ = std::fs::write(root, pid);
                    }
                }
            }
            let _ = std::fs::remove_dir(dir);
        }
    }
}
