//! The cluster's sans-IO core (rooms on Redis): the input is a script of
//! driver actions — connect, replies on either link (bytes from the input,
//! so any RESP or none), appends with and without idempotency keys, rooms
//! watched and unwatched, POSTs withdrawn, time steps for the liveness
//! check, output written — carried out as the driver would (an error drops
//! both links). Invariants: no panic; a dropped link has no output and is
//! not up; the bytes held for Redis are those of the appends not answered
//! (every append answered, refused or withdrawn gives its bytes back).
#![no_main]
use std::time::{Duration, Instant};

use echocast::cluster::{Cluster, Event, Link, Url};
use echocast::proto::MessageKind;
use libfuzzer_sys::fuzz_target;

const ROOMS: [&str; 3] = ["/broadcast/a", "/broadcast/b", "/c"];

fuzz_target!(|data: &[u8]| {
    let url = Url::parse("redis://:pw@127.0.0.1:6379/1").unwrap();
    let mut c = Cluster::new(url, 4, "fuzz".into(), Duration::from_secs(3));
    let mut now = Instant::now();
    let mut bytes_in: usize = 0;
    let mut tickets: Vec<(u64, usize)> = Vec::new();
    let mut i = 0;
    let drop_links = |c: &mut Cluster| {
        c.disconnected();
        assert!(!c.is_up());
        assert!(c.output(Link::Commands).is_empty() && c.output(Link::Subscriber).is_empty());
    };
    while i < data.len() {
        let op = data[i];
        let arg = data.get(i + 1).copied().unwrap_or(0);
        i = (i + 2).min(data.len());
        match op % 12 {
            0 => c.connecting(),
            1 => c.connected(Link::Commands),
            2 => c.connected(Link::Subscriber),
            3 | 4 => {
                let link = if op % 12 == 3 {
                    Link::Commands
                } else {
                    Link::Subscriber
                };
                let n = (arg as usize).min(data.len().saturating_sub(i));
                let chunk = &data[i..i + n];
                i += n;
                if c.receive(link, chunk).is_err() {
                    drop_links(&mut c);
                }
            }
            5 => {
                now += Duration::from_millis(u64::from(arg) * 40);
                if c.tick(now).is_err() {
                    drop_links(&mut c);
                }
            }
            6 | 7 => {
                let room = ROOMS[arg as usize % 3];
                let n = (arg as usize % 17).min(data.len().saturating_sub(i));
                let body = &data[i..i + n];
                i += n;
                let key = (op % 12 == 7).then_some(&body[..n.min(4)]);
                let t = c.append(room, MessageKind::Binary, body, key);
                bytes_in += body.len();
                tickets.push((t, body.len()));
            }
            8 => {
                c.watch(ROOMS[arg as usize % 3]);
            }
            9 => c.unwatch(ROOMS[arg as usize % 3]),
            10 => {
                if let Some(&(t, len)) = tickets.get(arg as usize % tickets.len().max(1)) {
                    if c.withdraw(t) == echocast::cluster::Withdrawn::Unsent {
                        bytes_in -= len;
                        tickets.retain(|&(x, _)| x != t);
                    }
                }
            }
            _ => {
                for link in [Link::Commands, Link::Subscriber] {
                    let n = c.output(link).len().min(usize::from(arg) * 64 + 1);
                    c.consume(link, n);
                }
            }
        }
        while let Some(e) = c.poll_event() {
            if let Event::Appended { ticket, .. } | Event::Refused { ticket, .. } = e {
                if let Some(pos) = tickets.iter().position(|&(t, _)| t == ticket) {
                    bytes_in -= tickets.remove(pos).1;
                }
            }
        }
        assert_eq!(c.held_bytes(), bytes_in, "bytes held for Redis");
        assert_eq!(c.pending_appends(), tickets.len());
    }
});
