//! The server's figures, read from /proc: CPU time (all threads) and RSS.

/// Server CPU time (user + system, all threads) in nanoseconds.
pub(crate) fn cpu_ns(pid: u32) -> Option<u64> {
    let mut total = 0;
    for t in std::fs::read_dir(format!("/proc/{pid}/task")).ok()? {
        let p = t.ok()?.path().join("schedstat");
        let s = std::fs::read_to_string(p).ok()?;
        total += s.split_whitespace().next()?.parse::<u64>().ok()?;
    }
    Some(total)
}

pub(crate) fn rss_kib(pid: u32) -> Option<u64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    s.lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))?
        .trim()
        .trim_end_matches(" kB")
        .parse()
        .ok()
}

/// Server CPU nanoseconds per operation since `cpu0` (read at the start),
/// if the server's figures are readable.
pub(crate) fn cpu_per_op(pid: Option<u32>, cpu0: Option<u64>, ops: u64) -> Option<f64> {
    let (a, b) = (cpu0?, cpu_ns(pid?)?);
    Some((b - a) as f64 / ops.max(1) as f64)
}

/// The 50th and 99th percentiles of `latencies`, in microseconds.
pub(crate) fn p50_p99_us(latencies: &mut [std::time::Duration]) -> (u128, u128) {
    latencies.sort_unstable();
    let pct = |p: f64| latencies[((latencies.len() - 1) as f64 * p) as usize].as_micros();
    (pct(0.5), pct(0.99))
}
