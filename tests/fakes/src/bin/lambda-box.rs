//! Runs a command inside a Lambda-sized box (memory limit and CPU share of a function of
//! that size, `heimdallr_fakes::lambda_box`), then prints what the box saw.
//! Usage: lambda-box <memory-mb> <program> [args...]
//! (LAMBDA_BOX_CPU_MB=<mb> gives the CPU share of a function of that size instead)
//! Prints to stderr `lambda-box: memory_mb=.. peak_bytes=.. oom_kills=.. exit=..` and exits
//! with the program's code (137 when the kernel killed it, as a shell reports SIGKILL).

use heimdallr_fakes::lambda_box::LambdaBox;
use std::os::unix::process::ExitStatusExt;
use std::process::Command;

fn main() {
    let mut args = std::env::args().skip(1);
    let (Some(memory), Some(program)) = (args.next(), args.next()) else {
        eprintln!("usage: lambda-box <memory-mb> <program> [args...]");
        std::process::exit(2);
    };
    let Ok(memory_mb) = memory.parse::<u64>() else {
        eprintln!("lambda-box: memory {memory:?} is not a number of MB");
        std::process::exit(2);
    };
    let rest: Vec<String> = args.collect();
    let rest: Vec<&str> = rest.iter().map(String::as_str).collect();
    let cpu_mb = std::env::var("LAMBDA_BOX_CPU_MB")
        .ok()
        .and_then(|mb| mb.parse::<u64>().ok())
        .unwrap_or(memory_mb);
    let boxed = match LambdaBox::with_cpu_of(memory_mb, cpu_mb) {
        Ok(boxed) => boxed,
        Err(e) => {
            eprintln!("lambda-box: cannot make a {memory_mb} MB box (needs root and cgroup v1 at /sys/fs/cgroup/memory): {e}");
            std::process::exit(2);
        }
    };
    let (shell, wrapped) = boxed.wrap(&program, &rest);
    let status = match Command::new(shell).args(wrapped).status() {
        Ok(status) => status,
        Err(e) => {
            eprintln!("lambda-box: cannot run {program}: {e}");
            std::process::exit(2);
        }
    };
    let code = status
        .code()
        .unwrap_or_else(|| 128 + status.signal().unwrap_or(0));
    eprintln!(
        "lambda-box: memory_mb={memory_mb} peak_bytes={} oom_kills={} exit={code}",
        boxed.peak_bytes(),
        boxed.oom_kills()
    );
    drop(boxed);
    std::process::exit(code);
}
