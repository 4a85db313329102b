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

/// Other processes measured over the same window as the server
/// (`ECHOCAST_BENCH_ALSO_PIDS=PID,PID`: a second instance, Redis), for
/// benchmarks of several processes (bench/cluster.sh).
pub(crate) struct Also(Vec<(u32, u64)>);

impl Also {
    /// Their CPU time now.
    pub(crate) fn start() -> Also {
        let pids = std::env::var("ECHOCAST_BENCH_ALSO_PIDS").unwrap_or_default();
        Also(
            pids.split(',')
                .filter_map(|p| p.trim().parse().ok())
                .filter_map(|p| Some((p, cpu_ns(p)?)))
                .collect(),
        )
    }

    /// `,"also_cpu_ns_per_delivery":{"PID":ns,…}` since `start` (empty
    /// without the variable).
    pub(crate) fn json(&self, ops: u64) -> String {
        if self.0.is_empty() {
            return String::new();
        }
        let each: Vec<String> = self
            .0
            .iter()
            .map(|&(pid, c0)| {
                let ns = cpu_ns(pid).map_or(0, |c1| c1 - c0) as f64 / ops.max(1) as f64;
                format!("\"{pid}\":{ns:.1}")
            })
            .collect();
        format!(",\"also_cpu_ns_per_delivery\":{{{}}}", each.join(","))
    }
}

/// What a fan-out scenario (`broadcast`, `sse`) measured.
pub(crate) struct Fanout<'a> {
    pub(crate) scenario: &'a str,
    /// How the subscribers connect, for the human line (`""`: WebSocket).
    pub(crate) kind: &'a str,
    pub(crate) subscribers: usize,
    pub(crate) size: usize,
    pub(crate) window: usize,
    /// Messages every subscriber received.
    pub(crate) messages: u64,
    pub(crate) deliveries: u64,
    pub(crate) elapsed: f64,
    pub(crate) cpu_per_delivery: Option<f64>,
    /// Other processes' CPU per delivery (`Also::json`).
    pub(crate) also: String,
}

impl Fanout<'_> {
    /// The human lines, then the JSON line (the last line is the result).
    pub(crate) fn print(&self) {
        let Fanout {
            scenario,
            kind,
            subscribers,
            size,
            window,
            messages,
            deliveries,
            elapsed,
            cpu_per_delivery,
            ref also,
        } = *self;
        let rate = deliveries as f64 / elapsed;
        println!("scenario     {scenario}");
        println!("subscribers  {subscribers}{kind}");
        println!("size         {size} B");
        println!("window       {window}");
        println!("messages     {messages} fully delivered");
        println!("deliveries   {deliveries} in {elapsed:.2} s = {rate:.0}/s");
        if let Some(c) = cpu_per_delivery {
            println!("server CPU   {c:.0} ns per delivery");
        }
        println!(
            "{{\"scenario\":\"{scenario}\",\"subscribers\":{subscribers},\"size\":{size},\"window\":{window},\
             \"seconds\":{elapsed:.3},\"messages\":{messages},\"deliveries\":{deliveries},\
             \"deliveries_per_sec\":{rate:.0},\"server_cpu_ns_per_delivery\":{}{also}}}",
            cpu_per_delivery.map_or("null".into(), |c| format!("{c:.1}"))
        );
    }
}
