//! Redis that stops answering with its sockets open (SIGSTOP, then
//! SIGCONT), a Redis slow but alive, and idempotent publishing
//! (`Idempotency-Key`), with a real `redis-server` (common/redis.rs) and on
//! a single instance.

mod common;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use common::redis::*;
use common::rooms::*;
use common::*;
use echocast::Config;

/// A `POST` with an `Idempotency-Key`: its status, body and how long it
/// took. A connection closed without a status fails the test.
fn post_keyed(addr: SocketAddr, room: &str, key: &str, body: &str) -> (u16, String, Duration) {
    let start = Instant::now();
    let head = format!(
        "POST {room} HTTP/1.1\r\nHost: x\r\nContent-Type: text/plain\r\n\
         Idempotency-Key: {key}\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    let (head, body) = request(addr, &head, body.as_bytes());
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no status: {head:?}"));
    if status == 503 || status == 504 {
        assert!(head.contains("Retry-After: 1"), "{head}");
        assert!(
            !head.contains("Connection: close"),
            "kept for the retry: {head}"
        );
    }
    (
        status,
        String::from_utf8_lossy(&body).into_owned(),
        start.elapsed(),
    )
}

/// `/healthz`'s status and body.
fn health(addr: SocketAddr) -> (u16, String) {
    let (head, body) = http_get(addr, "/healthz");
    let status = head.split(' ').nth(1).unwrap().parse().unwrap();
    (status, String::from_utf8_lossy(&body).trim().to_string())
}

/// Waits until `/healthz` answers `status`; returns how long it took.
fn health_becomes(addr: SocketAddr, status: u16, within: Duration) -> (Duration, String) {
    let start = Instant::now();
    loop {
        let (s, body) = health(addr);
        if s == status {
            return (start.elapsed(), body);
        }
        assert!(
            start.elapsed() < within,
            "/healthz still {s} {body:?} after {within:?}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn redis_that_stops_answering_every_post_gets_a_status_and_retries_never_duplicate() {
    let timeout = Duration::from_secs(2);
    let redis = Redis::start();
    let settings = |c: &mut Config| {
        c.cluster_timeout = timeout;
        c.room_history = 1000;
    };
    let a = instance(&redis, settings);
    let b = instance(&redis, settings);
    let (aa, ba) = (a.local_addr(), b.local_addr());
    wait_up(aa);
    wait_up(ba);
    let room = "/broadcast/stall";
    let mut member = Client::connect(aa, room);
    let mut sub = Sse::open(ba, room, "");
    wait_members(aa, room, 1);
    wait_members(ba, room, 1);
    wait_live(aa, 1);
    wait_live(ba, 1);
    let first = warm_up(aa, room, &mut [&mut member], &mut [&mut sub]);

    // Publishers that retry 503 and 504 with their key until they get 200.
    const CLIENTS: usize = 3;
    const EACH: usize = 30;
    let publishers: Vec<_> = (0..CLIENTS)
        .map(|c| {
            std::thread::spawn(move || {
                let mut attempts = Vec::new();
                for n in 0..EACH {
                    let (key, body) = (format!("c{c}-{n}"), format!("c{c} {n}"));
                    loop {
                        let (status, text, took) = post_keyed(aa, room, &key, &body);
                        attempts.push((status, took));
                        match status {
                            200 => break,
                            503 => assert!(text.contains("try again"), "{text}"),
                            504 => assert!(
                                text.contains("not known whether it was appended")
                                    && text.contains("Idempotency-Key"),
                                "{text}"
                            ),
                            other => panic!("{other}: {text}"),
                        }
                        std::thread::sleep(Duration::from_millis(100));
                    }
                    std::thread::sleep(Duration::from_millis(60));
                }
                attempts
            })
        })
        .collect();

    std::thread::sleep(Duration::from_millis(500));
    redis.pause();
    let paused = Instant::now();
    // docs/limits.md: "Redis stops answering (`--cluster`)"
    let (took, body) = health_becomes(aa, 503, timeout + Duration::from_secs(1));
    assert_eq!(body, "cluster: not answering");
    eprintln!("/healthz 503 {took:?} after SIGSTOP");
    for n in 0..5 {
        member.send_text(&format!("held {n}"));
    }
    // Stays 503 through reconnect attempts that Redis does not answer.
    while paused.elapsed() < timeout * 3 {
        assert_eq!(health(aa).0, 503);
        std::thread::sleep(Duration::from_millis(100));
    }
    let stats = json(&http_get(aa, "/stats").1);
    assert_eq!(
        stats["cluster"]["state"], "not answering",
        "{}",
        stats["cluster"]
    );
    assert!(stats["cluster"]["timeouts"].as_u64().unwrap() >= 1);
    redis.resume();
    let (back, _) = health_becomes(aa, 200, Duration::from_secs(2));
    eprintln!("/healthz 200 {back:?} after SIGCONT");
    health_becomes(ba, 200, Duration::from_secs(2));

    // docs/limits.md: "A `POST`'s wait for the cluster's Redis"
    let mut statuses: HashMap<u16, usize> = HashMap::new();
    for p in publishers {
        for (status, took) in p.join().unwrap() {
            *statuses.entry(status).or_default() += 1;
            assert!(
                took < timeout + Duration::from_secs(1),
                "a POST answered {status} after {took:?}"
            );
        }
    }
    eprintln!("POST attempts by status: {statuses:?}");
    assert!(
        statuses.get(&504).is_some_and(|&n| n > 0) || statuses.get(&503).is_some_and(|&n| n > 0),
        "the stall was seen by the publishers: {statuses:?}"
    );

    // The member's messages, after the stall, in order.
    let mut from_member = Vec::new();
    while from_member.len() < 5 {
        let text = member.expect_text();
        if text.starts_with("held") {
            from_member.push(text);
        }
    }
    assert_eq!(
        from_member,
        (0..5).map(|n| format!("held {n}")).collect::<Vec<_>>()
    );

    // The subscriber on the other instance: every message once, each
    // client's in its order, ids consecutive.
    let mut next = [0usize; CLIENTS];
    let (mut last, mut held) = (first, 0);
    while next.iter().sum::<usize>() < CLIENTS * EACH || held < 5 {
        let e = sub.expect();
        assert_eq!(e.kind, "message", "{e:?}");
        let id: u64 = e.id.as_deref().unwrap().parse().unwrap();
        assert_eq!(id, last + 1, "ids consecutive: {e:?}");
        last = id;
        if let Some(n) = e.data.strip_prefix("held ") {
            assert_eq!(n.parse::<usize>().unwrap(), held, "{e:?}");
            held += 1;
            continue;
        }
        let (c, n) = e.data.split_once(' ').unwrap();
        let c: usize = c[1..].parse().unwrap();
        let n: usize = n.parse().unwrap();
        assert_eq!(
            n, next[c],
            "client {c}'s messages once each, in order: {e:?}"
        );
        next[c] += 1;
    }
    let (head, body) = post(aa, room, "text/plain", b"after");
    assert!(head.contains(" 200 "), "{head}");
    assert_eq!(
        json(&body)["id"].as_u64(),
        Some(last + 1),
        "nothing else was appended"
    );
    a.stop().unwrap();
    b.stop().unwrap();
}

#[test]
fn an_idle_instance_finds_a_stopped_redis_within_the_timeout_and_a_half() {
    let timeout = Duration::from_secs(1);
    let redis = Redis::start();
    let a = instance(&redis, |c| c.cluster_timeout = timeout);
    let aa = a.local_addr();
    wait_up(aa);
    // Quiet links: only the liveness PINGs go to Redis.
    std::thread::sleep(Duration::from_millis(700));
    redis.pause();
    let (took, body) = health_becomes(aa, 503, timeout + Duration::from_secs(1));
    assert_eq!(body, "cluster: not answering");
    eprintln!("idle: /healthz 503 {took:?} after SIGSTOP");
    redis.resume();
    health_becomes(aa, 200, Duration::from_secs(2));
    let (head, _) = post(aa, "/broadcast/idle", "text/plain", b"back");
    assert!(head.contains(" 200 "), "{head}");
    a.stop().unwrap();
}

#[test]
fn a_slow_redis_that_keeps_answering_is_not_declared_lost() {
    let redis = Redis::with(free_port(), &["--enable-debug-command", "yes"]);
    let a = instance(&redis, |c| c.cluster_timeout = Duration::from_secs(2));
    let aa = a.local_addr();
    wait_up(aa);
    let room = "/broadcast/slow";
    let mut member = Client::connect(aa, room);
    wait_live(aa, 1);
    // Redis asleep 0.5 s at a time, for 5 s: each of our replies waits
    // for a sleep to end.
    let port = redis.port;
    let sleeper = std::thread::spawn(move || {
        let end = Instant::now() + Duration::from_secs(5);
        while Instant::now() < end {
            assert_eq!(cmd(port, "DEBUG SLEEP 0.5"), "+OK");
        }
    });
    let mut n = 0;
    let mut slowest = Duration::ZERO;
    while !sleeper.is_finished() {
        let start = Instant::now();
        let (head, _) = post(aa, room, "text/plain", format!("m{n}").as_bytes());
        assert!(head.contains(" 200 "), "{head}");
        slowest = slowest.max(start.elapsed());
        assert_eq!(health(aa).0, 200);
        n += 1;
    }
    sleeper.join().unwrap();
    for i in 0..n {
        assert_eq!(member.expect_text(), format!("m{i}"));
    }
    let stats = json(&http_get(aa, "/stats").1);
    let c = &stats["cluster"];
    assert_eq!(
        (c["timeouts"].as_u64(), c["reconnects"].as_u64()),
        (Some(0), Some(0)),
        "{c}"
    );
    eprintln!("{n} POSTs while Redis slept, the slowest answered in {slowest:?}");
    a.stop().unwrap();
}

#[test]
fn a_duplicate_key_answers_the_first_id_with_and_without_the_cluster() {
    let redis = Redis::start();
    let a = instance(&redis, |_| {});
    let b = instance(&redis, |_| {});
    let single = echocast::spawn(Config::local()).expect("spawn");
    wait_up(a.local_addr());
    wait_up(b.local_addr());
    for (addr, other) in [
        (a.local_addr(), b.local_addr()),
        (single.local_addr(), single.local_addr()),
    ] {
        let room = "/broadcast/keys";
        let mut sub = Sse::open(other, room, "");
        wait_members(other, room, 1);
        if addr != other {
            wait_live(other, 1);
        }
        let (s, body, _) = post_keyed(addr, room, "order-17", "first");
        assert_eq!(s, 200, "{body}");
        let v = json(body.as_bytes());
        let id = v["id"].as_u64().unwrap();
        assert_eq!(v.get("duplicate"), None);
        // Again, on either instance, even with another body.
        let (s, body, _) = post_keyed(other, room, "order-17", "second");
        assert_eq!(s, 200, "{body}");
        let v = json(body.as_bytes());
        assert_eq!(
            (v["id"].as_u64(), v["duplicate"].as_bool()),
            (Some(id), Some(true))
        );
        // Another room has keys of its own.
        let (s, body, _) = post_keyed(addr, "/broadcast/other", "order-17", "x");
        assert_eq!(s, 200);
        assert_eq!(json(body.as_bytes()).get("duplicate"), None);
        let (s, body, _) = post_keyed(addr, room, "order-18", "third");
        assert_eq!(
            (s, json(body.as_bytes())["id"].as_u64()),
            (200, Some(id + 1))
        );
        let e = sub.expect();
        assert_eq!((e.id, e.data.as_str()), (Some(id.to_string()), "first"));
        let e = sub.expect();
        assert_eq!(
            (e.id, e.data.as_str()),
            (Some((id + 1).to_string()), "third")
        );
        let stats = json(&http_get(other, "/stats").1);
        assert_eq!(
            stats["http_publish_duplicates"].as_u64(),
            Some(1),
            "{stats}"
        );
        // docs/rooms.md: the key's form.
        for bad in ["has space", &"k".repeat(129)] {
            let (s, body, _) = post_keyed(addr, room, bad, "x");
            assert_eq!(s, 400, "{bad:?}: {body}");
            assert!(body.contains("Idempotency-Key"), "{body}");
        }
    }
    a.stop().unwrap();
    b.stop().unwrap();
    single.stop().unwrap();
}

#[test]
fn the_append_script_forgets_keys_past_the_window_or_the_count_and_they_expire() {
    let redis = Redis::start();
    let mut ticket = 0;
    let mut append = |key: &str, window_ms: &str| {
        ticket += 1;
        let t = ticket.to_string();
        let args = Append {
            ticket: &t,
            lo: &t,
            key,
            window_ms,
            count: "2",
            ..Append::default()
        };
        append_script(&redis, &args)
    };
    // docs/limits.md: "Idempotency keys a room remembers"
    let hour = "3600000";
    assert_eq!(append("a", hour), (1, false));
    assert_eq!(append("a", hour), (1, true), "the first id, not appended");
    assert_eq!(append("b", hour), (2, false));
    assert_eq!(append("c", hour), (3, false));
    assert_eq!(append("a", hour), (4, false), "pushed out by 2 newer keys");
    assert_eq!(redis.cmd("ZCARD t:keys"), ":2");
    assert_eq!(redis.cmd("HLEN t:keyids"), ":2");
    let ttl: i64 = redis.cmd("PTTL t:keys")[1..].parse().unwrap();
    assert!(ttl > 3_500_000 && ttl <= 3_600_000, "{ttl}");
    assert_eq!(append("d", "300"), (5, false));
    std::thread::sleep(Duration::from_millis(400));
    assert_eq!(append("d", "300"), (6, false), "older than the window");
    std::thread::sleep(Duration::from_millis(400));
    assert_eq!(redis.cmd("EXISTS t:keys"), ":0", "expired by itself");
    assert_eq!(redis.cmd("EXISTS t:keyids"), ":0");
    assert_eq!(append("", hour), (7, false), "no key: appended");
}
