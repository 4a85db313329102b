//! Rooms across processes (`--cluster`) against a real `redis-server`
//! (common/redis.rs), started by each test and stopped by it: one order
//! on every instance, resume on another instance, Redis lost and back
//! (empty), `--reuse-port`, and a slow consumer on one instance.

mod common;

use std::io::{BufRead, BufReader};
use std::net::{SocketAddr, TcpListener};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::redis::*;
use common::rooms::*;
use common::*;
use echocast::{Config, ServerHandle};

#[test]
fn every_member_and_subscriber_of_two_instances_sees_one_order() {
    let redis = Redis::start();
    let (a, b) = (instance(&redis, |_| {}), instance(&redis, |_| {}));
    let (aa, ba) = (a.local_addr(), b.local_addr());
    wait_up(aa);
    wait_up(ba);
    let room = "/broadcast/one-order";
    let mut members: Vec<Client> = [aa, aa, ba, ba]
        .iter()
        .map(|&x| Client::connect(x, room))
        .collect();
    let mut subs = [Sse::open(aa, room, ""), Sse::open(ba, room, "")];
    wait_members(aa, room, 3);
    wait_members(ba, room, 3);
    wait_live(aa, 1);
    wait_live(ba, 1);
    {
        let mut m: Vec<&mut Client> = members.iter_mut().collect();
        let mut s: Vec<&mut Sse> = subs.iter_mut().collect();
        warm_up(aa, room, &mut m, &mut s);
        warm_up(ba, room, &mut m, &mut s);
    }
    // POSTs to both instances from two threads, and every member sending,
    // all at once.
    let posters: Vec<_> = [aa, ba]
        .into_iter()
        .enumerate()
        .map(|(i, addr)| {
            std::thread::spawn(move || {
                for n in 0..25 {
                    let (head, _) =
                        post(addr, room, "text/plain", format!("post {i}.{n}").as_bytes());
                    assert!(head.contains(" 200 "), "{head}");
                }
            })
        })
        .collect();
    for n in 0..10 {
        for (i, m) in members.iter_mut().enumerate() {
            m.send_text(&format!("member {i}.{n}"));
        }
    }
    for p in posters {
        p.join().unwrap();
    }
    let total = 2 * 25 + 4 * 10;
    let orders: Vec<Vec<String>> = members
        .iter_mut()
        .map(|m| (0..total).map(|_| m.expect_text()).collect())
        .collect();
    for o in &orders[1..] {
        assert_eq!(o, &orders[0], "two members saw different orders");
    }
    for s in subs.iter_mut() {
        let events: Vec<Ev> = (0..total).map(|_| s.expect()).collect();
        let data: Vec<String> = events.iter().map(|e| e.data.clone()).collect();
        assert_eq!(data, orders[0], "a subscriber saw another order");
        let ids: Vec<u64> = events
            .iter()
            .map(|e| e.id.as_ref().unwrap().parse().unwrap())
            .collect();
        let first = ids[0];
        assert_eq!(
            ids,
            (first..first + total as u64).collect::<Vec<_>>(),
            "ids not consecutive"
        );
    }
    // Each of the 90 messages once, and in each sender's own order.
    let mut sorted = orders[0].clone();
    sorted.sort();
    sorted.dedup();
    assert_eq!(sorted.len(), total);
    a.stop().unwrap();
    b.stop().unwrap();
}

#[test]
fn a_subscriber_resumes_on_the_other_instance_and_one_too_far_behind_gets_the_gap() {
    let redis = Redis::start();
    let a = instance(&redis, |c| c.room_history = 5);
    let b = instance(&redis, |c| c.room_history = 5);
    let (aa, ba) = (a.local_addr(), b.local_addr());
    wait_up(aa);
    wait_up(ba);
    let room = "/broadcast/resume";
    let mut s = Sse::open(aa, room, "");
    wait_members(aa, room, 1);
    wait_live(aa, 1);
    let mut ids = Vec::new();
    for n in 1..=3 {
        let (head, body) = post(ba, room, "text/plain", format!("m{n}").as_bytes());
        assert!(head.contains(" 200 "), "{head}");
        ids.push(json(&body)["id"].as_u64().unwrap());
    }
    assert_eq!(ids, [1, 2, 3], "ids are consecutive from 1, given by Redis");
    for n in 1..=3 {
        let e = s.expect();
        assert_eq!((e.id.unwrap(), e.data), (n.to_string(), format!("m{n}")));
    }
    drop(s);
    for n in 4..=6 {
        post(aa, room, "text/plain", format!("m{n}").as_bytes());
    }
    // Resumed on B, which has never had a member of this room.
    let mut s = Sse::open(ba, room, "Last-Event-ID: 3\r\n");
    for n in 4..=6 {
        let e = s.expect();
        assert_eq!((e.id.unwrap(), e.data), (n.to_string(), format!("m{n}")));
    }
    // Live after the replay, published on the other instance.
    post(aa, room, "text/plain", b"m7");
    let e = s.expect();
    assert_eq!((e.id.unwrap(), e.data), ("7".to_string(), "m7".to_string()));
    // History keeps 5 (3..7): resuming after 1 on A announces 2 as gone.
    let mut s = Sse::open(aa, room, "Last-Event-ID: 1\r\n");
    let gap = s.expect();
    assert_eq!(gap.kind, "gap", "{gap:?}");
    assert_eq!(
        json(gap.data.as_bytes()),
        serde_json::json!({"from": 2, "to": 2})
    );
    let replay: Vec<String> = (0..5).map(|_| s.expect().id.unwrap()).collect();
    assert_eq!(replay, ["3", "4", "5", "6", "7"]);
    a.stop().unwrap();
    b.stop().unwrap();
}

#[test]
fn redis_lost_and_back_empty_posts_get_503_members_messages_are_held_and_ids_go_on() {
    let mut redis = Redis::start();
    let port = redis.port;
    let a = instance(&redis, |_| {});
    let b = instance(&redis, |_| {});
    let (aa, ba) = (a.local_addr(), b.local_addr());
    wait_up(aa);
    wait_up(ba);
    let room = "/broadcast/faults";
    let mut sender = Client::connect(aa, room);
    let mut reader = Client::connect(ba, room);
    let mut sub = Sse::open(ba, room, "");
    wait_members(aa, room, 1);
    wait_members(ba, room, 2);
    wait_live(aa, 1);
    wait_live(ba, 1);
    let last = warm_up(aa, room, &mut [&mut sender, &mut reader], &mut [&mut sub]);
    let last = last.max(warm_up(
        ba,
        room,
        &mut [&mut sender, &mut reader],
        &mut [&mut sub],
    ));

    redis.stop();
    // docs/limits.md: "`POST` to a room while the cluster's Redis is away"
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (head, body) = post(aa, room, "text/plain", b"while away");
        if head.contains(" 503 ") {
            assert!(head.contains("Retry-After: 1"), "{head}");
            assert!(String::from_utf8_lossy(&body).contains("unreachable"));
            break;
        }
        assert!(
            Instant::now() < deadline,
            "POSTs still accepted with Redis gone: {head}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let (head, body) = http_get(aa, "/healthz");
    assert!(head.contains(" 503 "), "{head}");
    assert!(String::from_utf8_lossy(&body).contains("cluster: connecting"));
    for n in 0..5 {
        sender.send_text(&format!("held {n}"));
    }
    std::thread::sleep(Duration::from_millis(300));
    let redis = Redis::on(port); // back, empty
    for n in 0..5 {
        assert_eq!(sender.expect_text(), format!("held {n}"));
        assert_eq!(reader.expect_text(), format!("held {n}"));
    }
    let mut after = Vec::new();
    for n in 0..5 {
        let e = sub.expect();
        assert_eq!(e.data, format!("held {n}"), "{e:?}");
        after.push(e.id.unwrap().parse::<u64>().unwrap());
    }
    assert!(
        after[0] > last,
        "ids restarted after Redis lost them: {after:?} after {last}"
    );
    assert_eq!(after, (after[0]..after[0] + 5).collect::<Vec<_>>());
    wait_up(aa);
    let (head, _) = post(aa, room, "text/plain", b"back");
    assert!(head.contains(" 200 "), "{head}");
    drop(redis);
    a.stop().unwrap();
    b.stop().unwrap();
}

#[test]
fn a_slow_consumer_on_one_instance_is_closed_and_the_other_instance_keeps_up() {
    let redis = Redis::start();
    let a = instance(&redis, |c| c.max_backpressure = 256 * 1024);
    let b = instance(&redis, |_| {});
    let (aa, ba) = (a.local_addr(), b.local_addr());
    wait_up(aa);
    wait_up(ba);
    let room = "/broadcast/slow";
    let mut slow = Client::connect_small_rcvbuf(aa, room, 4096);
    let mut fast = Client::connect(ba, room);
    wait_members(aa, room, 1);
    wait_members(ba, room, 1);
    wait_live(aa, 1);
    wait_live(ba, 1);
    warm_up(ba, room, &mut [&mut slow, &mut fast], &mut []);
    let big = vec![b'x'; 64 * 1024];
    let n = 64;
    let publisher = std::thread::spawn(move || {
        let body = String::from_utf8(big).unwrap();
        for _ in 0..n {
            let (head, _) = post(ba, room, "text/plain", body.as_bytes());
            assert!(head.contains(" 200 "), "{head}");
        }
    });
    for _ in 0..n {
        assert_eq!(fast.expect_text().len(), 64 * 1024);
    }
    publisher.join().unwrap();
    // What fit in its buffers, then the close.
    loop {
        let (_, op, p) = slow.read_frame();
        if op == 8 {
            assert_eq!(close_code(&p), Some(1008));
            break;
        }
        assert_eq!(op, 1);
    }
    a.stop().unwrap();
    b.stop().unwrap();
}

#[test]
fn two_processes_on_one_port_with_reuse_port_share_connections_and_rooms() {
    let redis = Redis::start();
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let listen = format!("127.0.0.1:{port}");
    let url = format!("redis://127.0.0.1:{}", redis.port);
    let dir = std::env::temp_dir().join(format!("echocast-reuse-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let logs = [dir.join("a.log"), dir.join("b.log")];
    let _procs: Vec<Spawned> = logs
        .iter()
        .map(|log| {
            let mut cmd = Command::new(env!("CARGO_BIN_EXE_echocast"));
            cmd.args(["--reuse-port", "--listen", &listen, "--cluster", &url])
                .env("RUST_LOG", "info,echocast::server::rooms=debug")
                .stdout(Stdio::piped())
                .stderr(std::fs::File::create(log).unwrap());
            let mut child = cmd.spawn().unwrap();
            let mut line = String::new();
            BufReader::new(child.stdout.take().unwrap())
                .read_line(&mut line)
                .unwrap();
            assert!(line.contains(&listen), "{line}");
            Spawned(child)
        })
        .collect();
    let addr: SocketAddr = listen.parse().unwrap();
    let room = "/broadcast/reuse";
    let mut members: Vec<Client> = (0..16).map(|_| Client::connect(addr, room)).collect();
    std::thread::sleep(Duration::from_millis(300));
    let opened: Vec<usize> = logs
        .iter()
        .map(|l| {
            std::fs::read_to_string(l)
                .unwrap()
                .matches(": open ws /broadcast/reuse")
                .count()
        })
        .collect();
    assert_eq!(opened.iter().sum::<usize>(), 16, "{opened:?}");
    assert!(
        opened.iter().all(|&n| n > 0),
        "every connection on one process: {opened:?}"
    );
    // Rooms work across the two: a message from each member reaches all
    // (once both processes are caught up with the room).
    let deadline = Instant::now() + Duration::from_secs(10);
    while !logs.iter().all(|l| {
        std::fs::read_to_string(l)
            .unwrap()
            .contains("cluster: /broadcast/reuse caught up")
    }) {
        assert!(
            Instant::now() < deadline,
            "a process never caught up with the room"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    members[0].send_text("hello from 0");
    for m in members.iter_mut() {
        assert_eq!(m.expect_text(), "hello from 0");
    }
    members[15].send_text("hello from 15");
    for m in members.iter_mut() {
        assert_eq!(m.expect_text(), "hello from 15");
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn an_instance_started_before_redis_answers_503_until_it_is_there() {
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut c = Config::local();
    c.cluster = Some(echocast::cluster::Url::parse(&format!("redis://127.0.0.1:{port}")).unwrap());
    let a = echocast::spawn(c).expect("the server starts without Redis");
    let addr = a.local_addr();
    let (head, body) = http_get(addr, "/healthz");
    assert!(
        head.contains(" 503 ") && head.contains("Retry-After: 1"),
        "{head}"
    );
    assert_eq!(String::from_utf8_lossy(&body).trim(), "cluster: connecting");
    // A member can join meanwhile; its messages wait for Redis.
    let mut m = Client::connect(addr, "/broadcast/early");
    m.send_text("before Redis");
    let stats = json(&http_get(addr, "/stats").1);
    assert_eq!(stats["cluster"]["state"], "connecting");
    let _redis = Redis::on(port);
    wait_up(addr);
    assert_eq!(m.expect_text(), "before Redis");
    let stats = json(&http_get(addr, "/stats").1);
    assert_eq!(stats["cluster"]["state"], "connected");
    assert_eq!(stats["cluster"]["appends_pending"], 0);
    a.stop().unwrap();
}

#[test]
fn the_append_script_appends_a_resent_message_once_and_never_goes_below_the_floor() {
    use echocast::cluster::resp;
    let redis = Redis::start();
    let append = |ticket: &str, lo: &str, floor: &str| {
        let args = Append {
            ticket,
            lo,
            floor,
            ..Append::default()
        };
        append_script(&redis, &args).0
    };
    assert_eq!(append("5", "5", "0"), 1);
    assert_eq!(
        append("5", "5", "0"),
        1,
        "resent: the same id, not a new message"
    );
    assert_eq!(redis.cmd("GET t:seq"), "$1");
    assert_eq!(append("6", "6", "0"), 2);
    assert_eq!(
        redis.cmd("ZCARD t:sent"),
        ":1",
        "answered tickets below lo are forgotten"
    );
    assert_eq!(append("7", "7", "10"), 11, "raised to the floor first");
    assert_eq!(redis.cmd("XLEN t:log"), ":3");
    let catch_up = call(
        &redis,
        &[
            b"EVAL",
            resp::CATCH_UP.as_bytes(),
            b"3",
            b"t:seq",
            b"t:epoch",
            b"t:log",
            b"e2",
            b"0",
            b"1",
            b"10",
        ],
    );
    let redis_protocol::resp2::types::OwnedFrame::Array(v) = catch_up else {
        panic!("{catch_up:?}");
    };
    assert_eq!(resp::int(&v[0]), Some(11));
    assert_eq!(
        resp::bytes(&v[1]),
        Some(&b"e1"[..]),
        "the room's epoch is kept"
    );
    let redis_protocol::resp2::types::OwnedFrame::Array(entries) = &v[2] else {
        panic!("{v:?}");
    };
    let ids: Vec<u64> = entries.iter().map(|e| resp::entry(e).unwrap().0).collect();
    assert_eq!(ids, [2, 11], "after id 1");
}

#[test]
fn a_member_whose_held_message_would_pass_the_memory_budget_is_closed_1013() {
    // docs/limits.md: "Members' messages while the cluster's Redis is away (`--cluster`)"
    let mut redis = Redis::start();
    // 9 MiB: holding the first 3 MiB message fits (its buffer, grown to
    // 4 MiB, the next one's start, one 256 KiB read in reserve and the
    // held copy); holding the second beside it does not.
    let a = instance(&redis, |c| c.max_memory = 9 << 20);
    let addr = a.local_addr();
    wait_up(addr);
    let room = "/broadcast/budget";
    let mut small = Client::connect(addr, room);
    let mut big = Client::connect(addr, room);
    wait_members(addr, room, 2);
    wait_live(addr, 1);
    redis.stop();
    let deadline = Instant::now() + Duration::from_secs(10);
    while !http_get(addr, "/healthz").0.contains(" 503 ") {
        assert!(Instant::now() < deadline);
        std::thread::sleep(Duration::from_millis(20));
    }
    small.send_text("small, held");
    big.send_binary(&vec![7u8; 3 << 20]);
    big.send_binary(&vec![8u8; 3 << 20]);
    assert_eq!(big.expect_close(), Some(1013));
    let stats = json(&http_get(addr, "/stats").1);
    assert_eq!(
        stats["cluster"]["appends_pending"], 2,
        "{}",
        stats["cluster"]
    );
    let _redis = Redis::on(redis.port);
    assert_eq!(small.expect_text(), "small, held");
    let (op, data, _) = small.read_message();
    assert_eq!(
        (op, data.len()),
        (2, 3 << 20),
        "the first big one was held and appended"
    );
    a.stop().unwrap();
}

#[test]
fn rediss_with_a_password_and_a_ca_of_our_own() {
    // Redis over TLS only (the plain port off), requiring a password.
    let plain = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let dir = std::env::temp_dir().join(format!("echocast-rediss-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let made =
        rcgen::generate_simple_self_signed(vec!["localhost".into(), "127.0.0.1".into()]).unwrap();
    let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
    std::fs::write(&cert, made.cert.pem()).unwrap();
    std::fs::write(&key, made.signing_key.serialize_pem()).unwrap();
    // A port of its own (not `plain + 1`, which another test's connection
    // may hold while tests run in parallel).
    let tls_port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let (c, k) = (cert.to_str().unwrap(), key.to_str().unwrap());
    let _redis = Redis::with(
        plain,
        &[
            "--tls-port",
            &tls_port.to_string(),
            "--tls-cert-file",
            c,
            "--tls-key-file",
            k,
            "--tls-ca-cert-file",
            c,
            "--tls-auth-clients",
            "no",
            "--requirepass",
            "s3cret",
        ],
    );
    let url = format!("rediss://:s3cret@localhost:{tls_port}");
    let instances: Vec<ServerHandle> = (0..2)
        .map(|_| {
            let mut cfg = Config::local();
            cfg.cluster = Some(echocast::cluster::Url::parse(&url).unwrap());
            cfg.cluster_tls = Some(echocast::tls::client_config(Some(c)).unwrap());
            echocast::spawn(cfg).unwrap()
        })
        .collect();
    let (aa, ba) = (instances[0].local_addr(), instances[1].local_addr());
    wait_up(aa);
    wait_up(ba);
    let room = "/broadcast/tls";
    let mut m = Client::connect(ba, room);
    wait_live(ba, 1);
    let (head, body) = post(aa, room, "text/plain", b"over TLS");
    assert!(head.contains(" 200 "), "{head}");
    assert_eq!(json(&body)["id"], 1);
    assert_eq!(m.expect_text(), "over TLS");
    // The wrong password: the instance stays "connecting" and says why.
    let mut cfg = Config::local();
    cfg.cluster = Some(
        echocast::cluster::Url::parse(&format!("rediss://:wrong@localhost:{tls_port}")).unwrap(),
    );
    cfg.cluster_tls = Some(echocast::tls::client_config(Some(c)).unwrap());
    let bad = echocast::spawn(cfg).unwrap();
    std::thread::sleep(Duration::from_millis(500));
    assert!(http_get(bad.local_addr(), "/healthz").0.contains(" 503 "));
    bad.stop().unwrap();
    for i in instances {
        i.stop().unwrap();
    }
    let _ = std::fs::remove_dir_all(&dir);
}
