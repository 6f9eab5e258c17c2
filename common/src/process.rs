//! The standard `process_*` metrics of the running process and the
//! service's build, in the Prometheus text format, appended to every
//! `/metrics` answer (Linux: read from `/proc` at scrape time; elsewhere
//! only the build line).

use std::fmt::Write as _;

/// Clock ticks per second of `/proc/<pid>/stat` times (`USER_HZ`, 100 on
/// every Linux architecture mlwatch builds for).
const TICKS_PER_SEC: f64 = 100.0;

/// What `/proc` tells of this process.
#[derive(Debug, Default, PartialEq)]
struct Process {
    cpu_secs: f64,
    start_time_secs: f64,
    virtual_bytes: f64,
    resident_bytes: f64,
    open_fds: Option<f64>,
    max_fds: Option<f64>,
}

/// Parses `/proc/self/stat` (fields after the command name) with the boot
/// time from `/proc/stat` and the resident set from `/proc/self/status`.
fn parse(stat: &str, boot_time_secs: f64, status: &str) -> Option<Process> {
    let rest = stat.rsplit_once(')')?.1;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // `rest` starts at field 3 (state): field N is fields[N - 3].
    let field = |n: usize| fields.get(n - 3).and_then(|v| v.parse::<f64>().ok());
    let resident_kib = status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse::<f64>().ok())
        .unwrap_or(0.0);
    Some(Process {
        cpu_secs: (field(14)? + field(15)?) / TICKS_PER_SEC,
        start_time_secs: boot_time_secs + field(22)? / TICKS_PER_SEC,
        virtual_bytes: field(23)?,
        resident_bytes: resident_kib * 1024.0,
        open_fds: None,
        max_fds: None,
    })
}

fn read() -> Option<Process> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    let boot = std::fs::read_to_string("/proc/stat").ok()?;
    let boot_time = boot
        .lines()
        .find_map(|l| l.strip_prefix("btime "))
        .and_then(|v| v.trim().parse::<f64>().ok())?;
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let mut p = parse(&stat, boot_time, &status)?;
    p.open_fds = std::fs::read_dir("/proc/self/fd").ok().map(|d| d.count() as f64);
    p.max_fds = std::fs::read_to_string("/proc/self/limits").ok().and_then(|l| {
        l.lines()
            .find(|l| l.starts_with("Max open files"))
            .and_then(|l| l.split_whitespace().nth(3))
            .and_then(|v| v.parse::<f64>().ok())
    });
    Some(p)
}

fn metric(out: &mut String, name: &str, kind: &str, help: &str, value: f64) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {value}");
}

/// The process and build lines of a scrape.
pub fn render() -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "# HELP mlwatch_build_info The mlwatch release this process runs (always 1).\n\
         # TYPE mlwatch_build_info gauge\n\
         mlwatch_build_info{{version=\"{}\"}} 1",
        env!("CARGO_PKG_VERSION")
    );
    if let Some(p) = read() {
        metric(
            &mut out,
            "process_cpu_seconds_total",
            "counter",
            "Total user and system CPU time spent in seconds.",
            p.cpu_secs,
        );
        metric(
            &mut out,
            "process_start_time_seconds",
            "gauge",
            "Start time of the process since unix epoch in seconds.",
            p.start_time_secs,
        );
        metric(
            &mut out,
            "process_virtual_memory_bytes",
            "gauge",
            "Virtual memory size in bytes.",
            p.virtual_bytes,
        );
        metric(
            &mut out,
            "process_resident_memory_bytes",
            "gauge",
            "Resident memory size in bytes.",
            p.resident_bytes,
        );
        if let Some(v) = p.open_fds {
            metric(
                &mut out,
                "process_open_fds",
                "gauge",
                "Number of open file descriptors.",
                v,
            );
        }
        if let Some(v) = p.max_fds {
            metric(
                &mut out,
                "process_max_fds",
                "gauge",
                "Maximum number of open file descriptors.",
                v,
            );
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_proc_stat_with_spaces_in_the_name() {
        let stat = "4242 (my (odd) name) S 1 4242 4242 0 -1 4194560 500 0 0 0 250 50 0 0 20 0 3 0 12000 104857600 2000 18446744073709551615";
        let p = parse(stat, 1_700_000_000.0, "Name:\tx\nVmRSS:\t  8192 kB\n").unwrap();
        assert_eq!(p.cpu_secs, 3.0);
        assert_eq!(p.start_time_secs, 1_700_000_120.0);
        assert_eq!(p.virtual_bytes, 104_857_600.0);
        assert_eq!(p.resident_bytes, 8_388_608.0);
    }

    #[test]
    fn renders_build_and_process_lines() {
        let text = render();
        assert!(text.contains("mlwatch_build_info{version=\""), "{text}");
        if cfg!(target_os = "linux") {
            for name in [
                "process_cpu_seconds_total",
                "process_resident_memory_bytes",
                "process_open_fds",
            ] {
                assert!(text.contains(&format!("\n{name} ")), "{name} missing:\n{text}");
            }
        }
    }
}
