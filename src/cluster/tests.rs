//! The cluster's state machine without Redis: replies are written as RESP
//! by hand and fed in; what it asks Redis is read back from its output.

use super::*;
use std::time::{Duration, Instant};

/// RESP values to feed in.
enum R<'a> {
    Ok,
    Pong,
    Int(i64),
    Bulk(&'a [u8]),
    Err(&'a str),
    Arr(Vec<R<'a>>),
}

fn enc(r: &R, out: &mut Vec<u8>) {
    match r {
        R::Ok => out.extend_from_slice(b"+OK\r\n"),
        R::Pong => out.extend_from_slice(b"+PONG\r\n"),
        R::Int(i) => out.extend_from_slice(format!(":{i}\r\n").as_bytes()),
        R::Bulk(b) => {
            out.extend_from_slice(format!("${}\r\n", b.len()).as_bytes());
            out.extend_from_slice(b);
            out.extend_from_slice(b"\r\n");
        }
        R::Err(e) => out.extend_from_slice(format!("-{e}\r\n").as_bytes()),
        R::Arr(v) => {
            out.extend_from_slice(format!("*{}\r\n", v.len()).as_bytes());
            for x in v {
                enc(x, out);
            }
        }
    }
}

fn feed(c: &mut Cluster, link: Link, r: R) {
    let mut bytes = Vec::new();
    enc(&r, &mut bytes);
    // Split in two: replies may arrive in pieces.
    let (a, b) = bytes.split_at(bytes.len() / 2);
    c.receive(link, a).unwrap();
    c.receive(link, b).unwrap();
}

fn events(c: &mut Cluster) -> Vec<Event> {
    std::iter::from_fn(|| c.poll_event()).collect()
}

/// What was asked of `link`, as text (bulk strings kept readable), taken.
fn asked(c: &mut Cluster, link: Link) -> String {
    let s = String::from_utf8_lossy(c.output(link)).into_owned();
    let n = c.output(link).len();
    c.consume(link, n);
    s
}

fn entry<'a>(id: &'a [u8], data: &'a [u8]) -> R<'a> {
    R::Arr(vec![
        R::Bulk(id),
        R::Arr(vec![
            R::Bulk(b"k"),
            R::Bulk(b"t"),
            R::Bulk(b"d"),
            R::Bulk(data),
        ]),
    ])
}

fn publication(c: &mut Cluster, room: &str, payload: &[u8]) {
    let ch = format!("echocast:0:room:{room}");
    feed(
        c,
        Link::Subscriber,
        R::Arr(vec![
            R::Bulk(b"message"),
            R::Bulk(ch.as_bytes()),
            R::Bulk(payload),
        ]),
    );
}

fn subscribed(c: &mut Cluster, room: &str) {
    let ch = format!("echocast:0:room:{room}");
    feed(
        c,
        Link::Subscriber,
        R::Arr(vec![
            R::Bulk(b"subscribe"),
            R::Bulk(ch.as_bytes()),
            R::Int(1),
        ]),
    );
}

fn deliver(room: &str, id: u64, data: &str) -> Event {
    Event::Deliver {
        room: room.into(),
        id,
        kind: MessageKind::Text,
        data: data.as_bytes().to_vec(),
    }
}

/// `SELECT` and the two `SCRIPT LOAD`s answered.
fn hello(c: &mut Cluster) {
    feed(c, Link::Commands, R::Ok);
    feed(
        c,
        Link::Commands,
        R::Bulk(resp::sha(resp::APPEND).as_bytes()),
    );
    feed(
        c,
        Link::Commands,
        R::Bulk(resp::sha(resp::CATCH_UP).as_bytes()),
    );
}

const TIMEOUT: Duration = Duration::from_secs(3);

fn cluster() -> Cluster {
    let url = Url::parse("redis://127.0.0.1:1/0").unwrap();
    Cluster::new(url, 10, "test".into(), TIMEOUT)
}

/// Both links connected and their hello answered: up.
fn connect(c: &mut Cluster) {
    c.connecting();
    c.connected(Link::Commands);
    c.connected(Link::Subscriber);
    assert!(!c.is_up(), "up only once Redis answered");
    let ask = asked(c, Link::Commands);
    assert!(ask.contains("SELECT") && ask.contains("SCRIPT") && ask.contains("XREVRANGE"));
    assert!(asked(c, Link::Subscriber).contains("PING"));
    hello(c);
    assert!(!c.is_up());
    feed(c, Link::Subscriber, R::Pong);
    assert!(c.is_up());
    assert_eq!(events(c), [Event::Up]);
}

/// Connected, `SELECT` answered, `room` watched and caught up at `last`
/// with epoch `e1`.
fn live(room: &str, last: i64) -> Cluster {
    let mut c = cluster();
    connect(&mut c);
    assert!(!c.watch(room));
    assert!(asked(&mut c, Link::Subscriber).contains("SUBSCRIBE"));
    subscribed(&mut c, room);
    let ask = asked(&mut c, Link::Commands);
    assert!(
        ask.contains("EVALSHA") && ask.contains(&resp::sha(resp::CATCH_UP)),
        "{ask}"
    );
    let (id, data) = (format!("{last}-1"), last.to_string());
    let kept = if last > 0 {
        vec![entry(id.as_bytes(), data.as_bytes())]
    } else {
        vec![]
    };
    feed(
        &mut c,
        Link::Commands,
        R::Arr(vec![R::Int(last), R::Bulk(b"e1"), R::Arr(kept)]),
    );
    assert!(c.is_live(room));
    c
}

#[test]
fn a_room_new_here_is_restored_then_delivers_in_order() {
    let mut c = live("r", 3);
    let ev = events(&mut c);
    assert_eq!(
        ev,
        [
            Event::Restore {
                room: "r".into(),
                last: 3,
                messages: vec![(3, MessageKind::Text, b"3".to_vec())],
            },
            Event::Live { room: "r".into() },
        ]
    );
    publication(&mut c, "r", b"4 e1 t\nfour");
    publication(&mut c, "r", b"4 e1 t\nfour again"); // a duplicate
    publication(&mut c, "r", b"5 e1 b\n\x00\xff");
    assert_eq!(
        events(&mut c),
        [
            deliver("r", 4, "four"),
            Event::Deliver {
                room: "r".into(),
                id: 5,
                kind: MessageKind::Binary,
                data: vec![0, 0xff],
            },
        ]
    );
}

#[test]
fn a_skipped_id_catches_up_and_what_came_meanwhile_follows_in_order() {
    let mut c = live("r", 3);
    events(&mut c);
    publication(&mut c, "r", b"6 e1 t\nsix");
    assert!(
        events(&mut c).is_empty(),
        "6 is not delivered before 4 and 5"
    );
    let ask = asked(&mut c, Link::Commands);
    assert!(
        ask.contains(&resp::sha(resp::CATCH_UP)) && ask.contains("\r\n3\r\n"),
        "after 3: {ask}"
    );
    publication(&mut c, "r", b"7 e1 t\nseven"); // held while catching up
    feed(
        &mut c,
        Link::Commands,
        R::Arr(vec![
            R::Int(6),
            R::Bulk(b"e1"),
            R::Arr(vec![
                entry(b"4-1", b"four"),
                entry(b"5-1", b"five"),
                entry(b"6-1", b"six"),
            ]),
        ]),
    );
    assert_eq!(
        events(&mut c),
        [
            deliver("r", 4, "four"),
            deliver("r", 5, "five"),
            deliver("r", 6, "six"),
            Event::Live { room: "r".into() },
            deliver("r", 7, "seven"),
        ]
    );
}

#[test]
fn history_lost_in_redis_is_a_gap_and_ids_go_on() {
    let mut c = live("r", 6);
    events(&mut c);
    // Redis restarted empty; an instance re-seeded the counter at 8.
    publication(&mut c, "r", b"9 e2 t\nnine");
    assert!(events(&mut c).is_empty());
    let ask = asked(&mut c, Link::Commands);
    assert!(ask.contains("\r\n6\r\n"), "the floor is our last id: {ask}");
    feed(
        &mut c,
        Link::Commands,
        R::Arr(vec![
            R::Int(9),
            R::Bulk(b"e2"),
            R::Arr(vec![entry(b"9-1", b"nine")]),
        ]),
    );
    assert_eq!(
        events(&mut c),
        [
            Event::Gap {
                room: "r".into(),
                from: 7,
                to: 8
            },
            deliver("r", 9, "nine"),
            Event::Live { room: "r".into() },
        ]
    );
    assert_eq!(c.stats.gaps, 1);
}

#[test]
fn appends_are_held_while_away_and_resent_in_order_with_their_keys() {
    let mut c = live("r", 0);
    events(&mut c);
    let t1 = c.append("r", MessageKind::Text, b"first", None);
    assert!(asked(&mut c, Link::Commands).contains("first"));
    c.disconnected();
    assert!(!c.is_up() && !c.is_live("r"));
    let t2 = c.append("r", MessageKind::Text, b"second", None);
    assert_eq!(c.pending_appends(), 2);
    assert_eq!(c.held_bytes(), 11);
    connect(&mut c);
    // Not before the room is caught up again: they must come back here.
    let ask = asked(&mut c, Link::Commands);
    assert!(!ask.contains("first") && !ask.contains("second"), "{ask}");
    assert!(asked(&mut c, Link::Subscriber).contains("SUBSCRIBE"));
    subscribed(&mut c, "r");
    feed(
        &mut c,
        Link::Commands,
        R::Arr(vec![R::Int(0), R::Bulk(b"e1"), R::Arr(vec![])]),
    );
    assert_eq!(events(&mut c), [Event::Live { room: "r".into() }]);
    let ask = asked(&mut c, Link::Commands);
    let (first, second) = (ask.find("first").unwrap(), ask.find("second").unwrap());
    assert!(first < second, "resent in order");
    // The same key as before: Redis appends a resent message once.
    assert!(
        ask.contains("echocast:0:sent:test") && ask.contains(&format!("\r\n{t1}\r\n")),
        "{ask}"
    );
    feed(
        &mut c,
        Link::Commands,
        R::Arr(vec![R::Int(1), R::Bulk(b"e1")]),
    );
    feed(&mut c, Link::Commands, R::Err("OOM command not allowed"));
    assert_eq!(
        events(&mut c),
        [
            Event::Appended {
                ticket: t1,
                id: 1,
                duplicate: false
            },
            Event::Refused {
                ticket: t2,
                why: "OOM command not allowed".into()
            },
        ]
    );
    assert_eq!(c.pending_appends(), 0);
}

#[test]
fn a_refusal_at_hello_or_garbage_is_an_error() {
    let url = Url::parse("redis://:secret@127.0.0.1:1/2").unwrap();
    let mut c = Cluster::new(url, 10, "x".into(), TIMEOUT);
    c.connected(Link::Commands);
    let ask = asked(&mut c, Link::Commands);
    assert!(ask.contains("AUTH") && ask.contains("secret") && ask.contains("SELECT"));
    let mut bytes = Vec::new();
    enc(&R::Err("WRONGPASS invalid password"), &mut bytes);
    let e = c.receive(Link::Commands, &bytes).unwrap_err();
    assert!(e.contains("WRONGPASS"), "{e}");
    let e = c.receive(Link::Subscriber, b"?what\r\n").unwrap_err();
    assert!(e.contains("RESP"), "{e}");
}

#[test]
fn urls() {
    let u = Url::parse("redis://user:pw@redis.local:6380/3").unwrap();
    assert_eq!(
        (
            u.host.as_str(),
            u.port,
            u.db,
            u.user.as_deref(),
            u.password.as_deref()
        ),
        ("redis.local", 6380, 3, Some("user"), Some("pw"))
    );
    let u = Url::parse("redis://127.0.0.1").unwrap();
    assert_eq!((u.port, u.db, u.password), (6379, 0, None));
    let u = Url::parse("redis://[::1]:7000/").unwrap();
    assert_eq!((u.host.as_str(), u.port), ("::1", 7000));
    let u = Url::parse("rediss://:pw@localhost").unwrap();
    assert!(u.tls && u.password.as_deref() == Some("pw") && u.port == 6379);
    assert!(!Url::parse("redis://h").unwrap().tls);
    for bad in [
        "http://x",
        "redis://",
        "redis://h:port",
        "redis://h/db",
        "rediss://",
    ] {
        assert!(Url::parse(bad).is_err(), "{bad}");
    }
}

#[test]
fn a_quiet_link_is_pinged_and_lost_when_the_pong_is_overdue() {
    let mut c = live("r", 0);
    events(&mut c);
    let t0 = Instant::now();
    c.tick(t0).unwrap();
    assert_eq!(c.next_tick(), Some(t0 + liveness::PING_AFTER));
    c.tick(t0 + liveness::PING_AFTER - Duration::from_millis(1))
        .unwrap();
    assert!(asked(&mut c, Link::Commands).is_empty());
    let t1 = t0 + liveness::PING_AFTER;
    c.tick(t1).unwrap();
    assert!(asked(&mut c, Link::Commands).contains("PING"));
    assert!(asked(&mut c, Link::Subscriber).contains("PING"));
    // Answered: quiet again, pinged again a second later.
    feed(&mut c, Link::Commands, R::Pong);
    feed(
        &mut c,
        Link::Subscriber,
        R::Arr(vec![R::Bulk(b"pong"), R::Bulk(b"")]),
    );
    c.tick(t1 + Duration::from_millis(10)).unwrap();
    let t2 = t1 + Duration::from_millis(10) + liveness::PING_AFTER;
    c.tick(t2).unwrap();
    assert!(asked(&mut c, Link::Commands).contains("PING"));
    // Not answered: lost once a reply is overdue by the timeout.
    c.tick(t2 + TIMEOUT - Duration::from_millis(1)).unwrap();
    let why = c.tick(t2 + TIMEOUT).unwrap_err();
    assert!(why.contains("overdue by 3000 ms"), "{why}");
    assert_eq!(c.stats.timeouts, 1);
}

#[test]
fn a_slow_redis_that_keeps_answering_is_not_lost() {
    let mut c = live("r", 0);
    events(&mut c);
    let mut now = Instant::now();
    let tickets: Vec<u64> = (0..20)
        .map(|i| c.append("r", MessageKind::Text, format!("m{i}").as_bytes(), None))
        .collect();
    c.tick(now).unwrap();
    // One reply every 2 s: 40 s for all, each answer within the timeout of
    // the one before it.
    for (i, _) in tickets.iter().enumerate() {
        now += Duration::from_secs(2);
        c.tick(now).unwrap();
        feed(
            &mut c,
            Link::Commands,
            R::Arr(vec![R::Int(i as i64 + 1), R::Bulk(b"e1")]),
        );
        // The subscriber, quiet, is pinged; it answers.
        if asked(&mut c, Link::Subscriber).contains("PING") {
            feed(&mut c, Link::Subscriber, R::Pong);
        }
        c.tick(now).unwrap();
    }
    assert_eq!(c.pending_appends(), 0);
    assert_eq!(c.stats.timeouts, 0);
}

#[test]
fn an_attempt_whose_hello_is_not_answered_in_time_is_lost() {
    let mut c = cluster();
    let t0 = Instant::now();
    c.connecting();
    c.tick(t0).unwrap();
    c.connected(Link::Commands);
    c.connected(Link::Subscriber);
    c.tick(t0 + Duration::from_secs(1)).unwrap();
    assert!(!c.is_up());
    assert!(c.tick(t0 + TIMEOUT).is_err());
    c.disconnected();
    assert_eq!(
        c.next_tick(),
        None,
        "nothing to watch until the next attempt"
    );
}

/// Reconnected, `room` subscribed again and caught up (empty, epoch
/// `e1`): what was then asked of Redis (the appends sent or resent).
fn back_and_caught_up(c: &mut Cluster, room: &str) -> String {
    connect(c);
    subscribed(c, room);
    asked(c, Link::Commands);
    feed(
        c,
        Link::Commands,
        R::Arr(vec![R::Int(0), R::Bulk(b"e1"), R::Arr(vec![])]),
    );
    asked(c, Link::Commands)
}

#[test]
fn an_append_withdrawn_before_it_was_sent_is_never_sent() {
    let mut c = live("r", 0);
    events(&mut c);
    let sent = c.append("r", MessageKind::Text, b"sent", Some(b"k1"));
    let ask = asked(&mut c, Link::Commands);
    assert!(ask.contains("sent") && ask.contains("\r\nk1\r\n"), "{ask}");
    c.disconnected();
    let unsent = c.append("r", MessageKind::Text, b"unsent", None);
    assert_eq!(c.withdraw(unsent), Withdrawn::Unsent);
    assert_eq!(c.withdraw(sent), Withdrawn::InFlight);
    assert_eq!(c.held_bytes(), 4);
    let ask = back_and_caught_up(&mut c, "r");
    assert!(ask.contains("sent") && !ask.contains("unsent"), "{ask}");
    // Redis had the key: the first id, not appended again.
    feed(
        &mut c,
        Link::Commands,
        R::Arr(vec![R::Int(7), R::Bulk(b"e1"), R::Int(1)]),
    );
    assert_eq!(
        events(&mut c),
        [
            Event::Live { room: "r".into() },
            Event::Appended {
                ticket: sent,
                id: 7,
                duplicate: true
            }
        ]
    );
    assert_eq!((c.stats.duplicates, c.stats.appended), (1, 0));
    assert_eq!(c.withdraw(sent), Withdrawn::Answered);
}

#[test]
fn an_append_reply_of_the_wrong_shape_breaks_the_link_and_the_append_is_kept() {
    let mut c = live("r", 0);
    events(&mut c);
    let t = c.append("r", MessageKind::Text, b"kept", None);
    asked(&mut c, Link::Commands);
    let mut bytes = Vec::new();
    enc(&R::Ok, &mut bytes);
    assert!(c.receive(Link::Commands, &bytes).is_err());
    assert_eq!((c.pending_appends(), c.held_bytes()), (1, 4));
    assert!(events(&mut c).is_empty(), "neither appended nor refused");
    c.disconnected();
    let ask = back_and_caught_up(&mut c, "r");
    assert!(
        ask.contains("kept") && ask.contains(&format!("\r\n{t}\r\n")),
        "resent under its ticket: {ask}"
    );
}
