//! Several live inspectors at once (`/.inspect`), filtered and unfiltered,
//! one of them not reading: each either receives every record it asked
//! for, in order, or is told exactly how many it missed (`dropped`) before
//! the next record it receives. Records carry the ring's `seq`, so a
//! watcher can check both: between two records it receives, the records
//! its filter passes and it did not receive are exactly the `dropped` count
//! announced between them.

mod common;

use std::io::Read;
use std::net::SocketAddr;
use std::time::Duration;

use common::*;

/// The id of the one open connection whose path is `path`.
fn conn_id(addr: SocketAddr, path: &str) -> u64 {
    let (_, body) = http_get(addr, "/connections");
    let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
    v.as_array()
        .unwrap()
        .iter()
        .find(|c| c["path"] == path)
        .unwrap_or_else(|| panic!("no connection on {path}: {v}"))["id"]
        .as_u64()
        .unwrap()
}

/// What a watcher received: data records (seq, conn) and dropped notices,
/// in order.
#[derive(Debug, PartialEq)]
enum Got {
    Record {
        seq: u64,
        conn: Option<u64>,
        message: bool,
        frame: bool,
    },
    Dropped(u64),
}

fn parse(data: &[u8]) -> Got {
    let v: serde_json::Value = serde_json::from_slice(data).unwrap();
    if v["event"] == "dropped" {
        return Got::Dropped(v["count"].as_u64().unwrap());
    }
    Got::Record {
        seq: v["seq"].as_u64().unwrap_or_else(|| panic!("no seq: {v}")),
        conn: v["conn"].as_u64(),
        message: v["event"] == "message",
        frame: v.get("opcode").is_some(),
    }
}

/// Reads everything a watcher has until it is quiet for `quiet`.
fn drain(c: &mut Client, quiet: Duration) -> Vec<Got> {
    c.stream.set_read_timeout(Some(quiet)).unwrap();
    let mut raw = std::mem::take(&mut c.buf);
    let mut tmp = vec![0u8; 1 << 16];
    while let Ok(n) = c.stream.read(&mut tmp) {
        if n == 0 {
            break;
        }
        raw.extend_from_slice(&tmp[..n]);
    }
    c.buf = raw;
    c.stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut got = Vec::new();
    while let Ok(Some((h, n))) = echocast::proto::FrameHeader::decode(&c.buf) {
        let end = n + h.payload_len as usize;
        if c.buf.len() < end {
            break;
        }
        assert_eq!((h.opcode, h.fin), (1, true), "one text frame per record");
        got.push(parse(&c.buf[n..end]));
        c.buf.drain(..end);
    }
    got
}

/// The message records of connection `id` among `got`.
fn messages_of(got: &[Got], id: u64) -> Vec<u64> {
    got.iter()
        .filter_map(|g| match g {
            Got::Record {
                seq,
                conn,
                message: true,
                ..
            } if *conn == Some(id) => Some(*seq),
            _ => None,
        })
        .collect()
}

fn seqs<'a>(got: &'a [Got], conn: Option<u64>) -> impl Iterator<Item = u64> + 'a {
    got.iter().filter_map(move |g| match g {
        Got::Record { seq, conn: c, .. } if conn.is_none() || *c == conn => Some(*seq),
        _ => None,
    })
}

/// Checks a watcher's stream against the records that passed its filter
/// (`wanted`, in seq order, from its first record on): everything received
/// in order, every miss announced with its exact count before the next
/// record. Returns (received, dropped).
fn check(name: &str, got: &[Got], wanted: &[u64]) -> (u64, u64) {
    let first = got
        .iter()
        .find_map(|g| match g {
            Got::Record { seq, .. } => Some(*seq),
            Got::Dropped(_) => None,
        })
        .unwrap_or_else(|| panic!("{name}: no record at all"));
    let mut expect = wanted.iter().skip_while(|&&s| s < first).peekable();
    let (mut received, mut dropped, mut pending) = (0, 0, 0);
    for g in got {
        match g {
            Got::Dropped(n) => {
                assert_eq!(pending, 0, "{name}: two dropped notices in a row");
                pending = *n;
                dropped += n;
            }
            Got::Record { seq, .. } => {
                let mut skipped = 0;
                while expect.peek().is_some_and(|&&s| s < *seq) {
                    expect.next();
                    skipped += 1;
                }
                assert_eq!(
                    expect.next(),
                    Some(seq),
                    "{name}: record {seq} is not one its filter passes, or out of order"
                );
                assert_eq!(
                    skipped, pending,
                    "{name}: before record {seq}, {skipped} records were missed and {pending} announced"
                );
                pending = 0;
                received += 1;
            }
        }
    }
    (received, dropped)
}

#[test]
fn every_watcher_gets_every_record_or_is_told_exactly_how_many_it_missed() {
    let (_s, addr) = spawn_binary(&[]);
    let mut client = Client::connect(addr, "/echo?tag=live");
    let id = conn_id(addr, "/echo?tag=live");
    // A filtered watcher that reads, an unfiltered one that reads, an
    // unfiltered one that does not (4 KiB receive buffer), and one that
    // wants only messages and does not read either.
    let mut fast = Client::connect(addr, &format!("/.inspect?conn={id}"));
    let mut unfiltered = Client::connect(addr, "/.inspect");
    let mut frames = Client::connect(addr, "/.inspect?only=frames");
    let mut slow = Client::connect_small_rcvbuf(addr, "/.inspect", 4096);
    let mut slow_messages =
        Client::connect_small_rcvbuf(addr, &format!("/.inspect?conn={id}&only=messages"), 4096);
    // Every watcher is registered once a record reaches each.
    client.send_binary(b"first");
    assert_eq!(client.read_message().1, b"first");
    let mut readers: Vec<(&str, &mut Client, Vec<Got>)> = vec![
        ("fast", &mut fast, Vec::new()),
        ("all", &mut unfiltered, Vec::new()),
        ("frames", &mut frames, Vec::new()),
    ];
    let payload = [7u8; 64];
    for n in 0..20_000 {
        client.send_binary(&payload);
        assert_eq!(client.read_message().1.len(), 64);
        if n % 500 == 0 {
            for (_, c, got) in readers.iter_mut() {
                got.extend(drain(c, Duration::from_millis(1)));
            }
        }
    }
    // The slow ones catch up with what was queued for them, then the next
    // record tells them what they missed.
    let mut slow_got = drain(&mut slow, Duration::from_millis(1500));
    let mut slow_messages_got = drain(&mut slow_messages, Duration::from_millis(1500));
    client.send_binary(b"nudge");
    assert_eq!(client.read_message().1, b"nudge");
    slow_got.extend(drain(&mut slow, Duration::from_millis(500)));
    slow_messages_got.extend(drain(&mut slow_messages, Duration::from_millis(500)));
    for (_, c, got) in readers.iter_mut() {
        got.extend(drain(c, Duration::from_millis(500)));
    }

    // The unfiltered reader got every record (no notice): the reference
    // for what each filter passes.
    let gots: Vec<Vec<Got>> = readers.into_iter().map(|(_, _, got)| got).collect();
    let all = &gots[1];
    let everything: Vec<u64> = seqs(all, None).collect();
    assert!(
        everything.windows(2).all(|w| w[0] < w[1]),
        "records in order"
    );
    let (all_received, all_dropped) = check("all", all, &everything);
    assert_eq!(all_dropped, 0, "a watcher that reads lost records");
    assert!(all_received >= 80_000, "{all_received}");
    let of_client: Vec<u64> = seqs(all, Some(id)).collect();
    let (fast_received, fast_dropped) = check("fast", &gots[0], &of_client);
    assert_eq!(fast_dropped, 0, "a watcher that reads lost records");
    assert_eq!(fast_received as usize, of_client.len());
    let frames_only: Vec<u64> = all
        .iter()
        .filter_map(|g| match g {
            Got::Record {
                seq,
                message: false,
                frame: true,
                ..
            } => Some(*seq),
            _ => None,
        })
        .collect();
    let (frames_received, frames_dropped) = check("frames", &gots[2], &frames_only);
    assert_eq!(frames_dropped, 0, "a watcher that reads lost records");
    assert!(frames_received >= 40_000, "{frames_received}");
    // docs/inspector.md: what a slow watcher sees.
    for (name, got, wanted) in [
        ("slow", &slow_got, everything.clone()),
        (
            "slow, messages only",
            &slow_messages_got,
            messages_of(all, id),
        ),
    ] {
        let (received, dropped) = check(name, got, &wanted);
        eprintln!("{name}: {received} records received, {dropped} announced as dropped");
        assert!(dropped > 0, "{name}: not told what it missed");
        let first = seqs(got, None).next().unwrap();
        let passed = wanted.iter().filter(|&&s| s >= first).count() as u64;
        assert_eq!(
            received + dropped,
            passed,
            "{name}: every record received or counted"
        );
    }

    // A watcher that leaves takes its own place with it, not another's.
    drop(unfiltered);
    std::thread::sleep(Duration::from_millis(200));
    drain(&mut fast, Duration::from_millis(100));
    client.send_binary(b"after");
    assert_eq!(client.read_message().1, b"after");
    let got = drain(&mut fast, Duration::from_millis(500));
    assert!(
        matches!(got.first(), Some(Got::Record { .. })),
        "the filtered watcher still gets records: {got:?}"
    );
}
