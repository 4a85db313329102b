//! `idle`: hold C open connections and report the server's RSS per
//! connection (with `--deflate`: connections that agreed permessage-deflate
//! and each sent one compressed message).

use std::net::SocketAddr;
use std::time::Duration;

use crate::conn::handshake;
use crate::deflate::{json_message, DeflateConn};
use crate::report::{cpu_ns, rss_kib};

pub(crate) fn idle(
    addr: SocketAddr,
    path: &str,
    connections: usize,
    deflate: bool,
    pid: u32,
) -> Result<(), String> {
    let mut held = Vec::with_capacity(connections + 1);
    let mut held_deflate = Vec::new();
    // One connection first, not counted: the server's code for a handshake
    // (and a message, with --deflate) is then in memory before `before` is
    // read, so what is measured is what each connection holds, not pages of
    // the binary touched once (~500 KB of echocast's, 50 B a connection at
    // 10,000).
    let mut open = |i: usize| -> Result<(), String> {
        let err = |e: std::io::Error| format!("connection {i}: {e}");
        if deflate {
            let mut c = DeflateConn::open(addr, path).map_err(err)?;
            let m = json_message(i as u64, 1024);
            c.send(&m).map_err(err)?;
            if c.recv().map_err(err)? != m.as_bytes() {
                return Err(format!("connection {i}: echo differs"));
            }
            held_deflate.push(c);
        } else {
            held.push(handshake(addr, path).map_err(err)?);
        }
        Ok(())
    };
    open(connections)?;
    std::thread::sleep(Duration::from_millis(200));
    let before = rss_kib(pid).ok_or("cannot read the server's RSS")?;
    for i in 0..connections {
        open(i)?;
    }
    // Let the server settle, then measure.
    std::thread::sleep(Duration::from_millis(500));
    let cpu_mid = cpu_ns(pid);
    std::thread::sleep(Duration::from_secs(2));
    let cpu_end = cpu_ns(pid);
    let after = rss_kib(pid).ok_or("cannot read the server's RSS")?;
    let per = (after.saturating_sub(before) as f64 * 1024.0) / connections as f64;
    let idle_cpu = match (cpu_mid, cpu_end) {
        (Some(a), Some(b)) => Some((b - a) as f64 / 2e9 * 100.0),
        _ => None,
    };
    println!(
        "scenario     idle{}",
        if deflate {
            " (permessage-deflate, one message each)"
        } else {
            ""
        }
    );
    println!("connections  {connections}");
    println!("server RSS   {before} KiB before, {after} KiB after");
    println!("per conn     {per:.0} B");
    if let Some(c) = idle_cpu {
        println!("idle CPU     {c:.2} % of one core");
    }
    println!(
        "{{\"scenario\":\"idle\",\"deflate\":{deflate},\"connections\":{connections},\"rss_before_kib\":{before},\
         \"rss_after_kib\":{after},\"rss_bytes_per_connection\":{per:.0},\"idle_cpu_percent\":{}}}",
        idle_cpu.map_or("null".into(), |c| format!("{c:.3}"))
    );
    drop((held, held_deflate));
    Ok(())
}
