//! The rooms' rules without a socket: ids and order, history by count and
//! bytes, resume with and without a gap, an id ahead of the room, linger and
//! expiry, shedding oldest first across rooms, members leaving mid-fan-out.

use std::time::{Duration, Instant};

use super::*;

fn rooms(history: usize, history_bytes: usize, linger: Duration) -> Rooms<u32> {
    Rooms::new(Settings {
        history,
        history_bytes,
        linger,
    })
}

/// Publishes through a run of its own; `to`: the members it is for.
fn publish(
    r: &mut Rooms<u32>,
    id: RoomId,
    kind: MessageKind,
    data: &[u8],
    to: &mut Vec<u32>,
) -> u64 {
    let mut run = Run::default();
    let msg = r.publish(id, 0, kind, data, &mut run);
    to.clear();
    to.extend_from_slice(run.members());
    msg
}

fn publish_as(
    r: &mut Rooms<u32>,
    id: RoomId,
    msg: u64,
    kind: MessageKind,
    data: &[u8],
    to: &mut Vec<u32>,
) {
    let mut run = Run::default();
    r.publish_as(id, 0, msg, kind, data, &mut run);
    to.clear();
    to.extend_from_slice(run.members());
}

fn ids(r: &Replay) -> Vec<u64> {
    r.messages.iter().map(|m| m.id).collect()
}

fn text(r: &Rooms<u32>, id: RoomId, n: usize) -> Vec<String> {
    r.last_messages(id, n)
        .map(|m| String::from_utf8(m.data.to_vec()).unwrap())
        .collect()
}

#[test]
fn ids_start_at_one_per_room_and_every_member_is_told() {
    let now = Instant::now();
    let mut r = rooms(100, HISTORY_BYTES, Duration::from_secs(60));
    let a = r.join("/broadcast/a", 1, now);
    r.join("/broadcast/a", 2, now);
    let b = r.join("/broadcast/b", 3, now);
    assert_ne!(a, b);
    let mut to = Vec::new();
    assert_eq!(publish(&mut r, a, MessageKind::Text, b"one", &mut to), 1);
    assert_eq!(to, [1, 2]);
    assert_eq!(publish(&mut r, a, MessageKind::Text, b"two", &mut to), 2);
    assert_eq!(publish(&mut r, b, MessageKind::Binary, b"\x00", &mut to), 1);
    assert_eq!(to, [3]);
    assert_eq!(publish(&mut r, a, MessageKind::Text, b"three", &mut to), 3);
    assert_eq!((r.last_id(a), r.last_id(b)), (3, 1));
    assert_eq!(text(&r, a, 10), ["one", "two", "three"]);
    assert_eq!(r.name(a), "/broadcast/a");
    assert_eq!(r.find("/broadcast/b"), Some(b));
    assert_eq!(r.count(), 2);
    assert_eq!(r.largest(10), [("/broadcast/a", 2), ("/broadcast/b", 1)]);
}

#[test]
fn history_is_bounded_by_count_and_by_bytes() {
    let now = Instant::now();
    let mut r = rooms(3, 10, Duration::from_secs(60));
    let a = r.join("a", 1, now);
    let mut to = Vec::new();
    for m in ["1", "2", "3", "4", "5"] {
        publish(&mut r, a, MessageKind::Text, m.as_bytes(), &mut to);
    }
    assert_eq!(text(&r, a, 10), ["3", "4", "5"], "by count");
    assert_eq!(r.history_bytes(), 3);
    publish(&mut r, a, MessageKind::Text, b"abcdefgh", &mut to);
    assert_eq!(text(&r, a, 10), ["4", "5", "abcdefgh"], "1 + 1 + 8 <= 10");
    assert_eq!(r.history_bytes(), 10);
    publish(&mut r, a, MessageKind::Text, b"x", &mut to);
    assert_eq!(text(&r, a, 10), ["5", "abcdefgh", "x"], "by bytes");
    publish(&mut r, a, MessageKind::Text, b"0123456789a", &mut to);
    assert_eq!(
        text(&r, a, 10),
        Vec::<String>::new(),
        "a message over the bound is not kept"
    );
    assert_eq!(r.history_bytes(), 0);
    assert_eq!(r.last_id(a), 8, "ids go on whatever is kept");
    assert_eq!(text(&r, a, 1), Vec::<String>::new());

    let mut off = rooms(0, HISTORY_BYTES, Duration::from_secs(60));
    let a = off.join("a", 1, now);
    publish(&mut off, a, MessageKind::Text, b"x", &mut to);
    assert_eq!(off.history_bytes(), 0);
    assert_eq!(off.last_id(a), 1);
    assert!(off.check_history(Some(1)).is_err());
    assert!(r.check_history(Some(3)).is_ok());
    let e = r.check_history(Some(4)).unwrap_err();
    assert!(e.contains("at most --room-history (3)"), "{e}");
}

#[test]
fn resume_after_an_id_with_and_without_a_gap() {
    let now = Instant::now();
    let mut r = rooms(3, HISTORY_BYTES, Duration::from_secs(60));
    let a = r.join("a", 1, now);
    let mut to = Vec::new();
    for i in 1..=6u8 {
        publish(&mut r, a, MessageKind::Binary, &[i], &mut to);
    }
    // Retained: 4, 5, 6.
    let within = r.resume(a, Some(4), None);
    assert_eq!(
        (within.gap, ids(&within), within.ahead_of),
        (None, vec![5, 6], None)
    );
    let edge = r.resume(a, Some(3), None);
    assert_eq!(
        (edge.gap, ids(&edge)),
        (None, vec![4, 5, 6]),
        "3 is the last evicted: no gap"
    );
    let gap = r.resume(a, Some(1), None);
    assert_eq!((gap.gap, ids(&gap)), (Some((2, 3)), vec![4, 5, 6]));
    let from_zero = r.resume(a, Some(0), None);
    assert_eq!(from_zero.gap, Some((1, 3)));
    let up_to_date = r.resume(a, Some(6), None);
    assert_eq!((up_to_date.gap, ids(&up_to_date)), (None, vec![]));
    // history=N counts ids back from the last, gap included.
    let last2 = r.resume(a, None, Some(2));
    assert_eq!((last2.gap, ids(&last2)), (None, vec![5, 6]));
    let last5 = r.resume(a, None, Some(5));
    assert_eq!((last5.gap, ids(&last5)), (Some((2, 3)), vec![4, 5, 6]));
    let nothing = r.resume(a, None, None);
    assert_eq!((nothing.gap, ids(&nothing)), (None, vec![]));
    // The id wins over history=N.
    assert_eq!(ids(&r.resume(a, Some(5), Some(3))), vec![6]);
    assert_eq!(
        r.last_messages(a, 2).map(|m| m.data[0]).collect::<Vec<_>>(),
        [5, 6]
    );
}

#[test]
fn an_id_ahead_of_the_room_resumes_from_its_start() {
    let now = Instant::now();
    let mut r = rooms(10, HISTORY_BYTES, Duration::from_secs(60));
    let a = r.join("a", 1, now);
    let mut to = Vec::new();
    publish(&mut r, a, MessageKind::Text, b"x", &mut to);
    publish(&mut r, a, MessageKind::Text, b"y", &mut to);
    let ahead = r.resume(a, Some(40), None);
    assert_eq!(ahead.ahead_of, Some(2));
    assert_eq!((ahead.gap, ids(&ahead)), (None, vec![1, 2]));
    let empty = r.join("b", 2, now);
    let ahead = r.resume(empty, Some(1), None);
    assert_eq!(
        (ahead.ahead_of, ahead.gap, ids(&ahead)),
        (Some(0), None, vec![])
    );
}

#[test]
fn a_room_lingers_after_its_last_member_then_is_forgotten() {
    let t0 = Instant::now();
    let linger = Duration::from_secs(60);
    let mut r = rooms(10, HISTORY_BYTES, linger);
    let a = r.join("a", 1, t0);
    r.join("a", 2, t0);
    let mut to = Vec::new();
    publish(&mut r, a, MessageKind::Text, b"kept", &mut to);
    r.leave(a, 1, t0);
    assert_eq!(r.expire(t0 + linger * 2), 0, "a member is left");
    let t1 = t0 + Duration::from_secs(1);
    r.leave(a, 2, t1);
    assert_eq!(
        r.expire(t1 + linger - Duration::from_millis(1)),
        0,
        "lingering"
    );
    assert_eq!(r.history_bytes(), 4);
    // Coming back within the linger finds the room, its ids and history.
    let t2 = t1 + Duration::from_secs(30);
    assert_eq!(r.join("a", 3, t2), a);
    assert_eq!(publish(&mut r, a, MessageKind::Text, b"again", &mut to), 2);
    r.leave(a, 3, t2);
    // A publisher alone (no member) keeps it from now.
    let t3 = t2 + Duration::from_secs(50);
    assert_eq!(r.open("a", t3), a);
    assert_eq!(r.expire(t3 + linger - Duration::from_millis(1)), 0);
    assert_eq!(r.expire(t3 + linger), 1);
    assert_eq!((r.count(), r.history_bytes(), r.find("a")), (0, 0, None));
    // Forgotten: its ids start again.
    let a2 = r.join("a", 4, t3 + linger);
    assert_eq!(r.last_id(a2), 0);
    assert_eq!(publish(&mut r, a2, MessageKind::Text, b"new", &mut to), 1);
}

#[test]
fn without_linger_the_last_leave_forgets_the_room() {
    let now = Instant::now();
    let mut r = rooms(10, HISTORY_BYTES, Duration::ZERO);
    let a = r.join("a", 1, now);
    let mut to = Vec::new();
    publish(&mut r, a, MessageKind::Text, b"x", &mut to);
    r.leave(a, 1, now);
    assert_eq!((r.count(), r.history_bytes()), (0, 0));
    let b = r.join("b", 2, now);
    assert_eq!(b, a, "the slot is reused");
    assert_eq!(r.last_id(b), 0, "with fresh ids");
    assert_eq!(r.name(b), "b");
}

#[test]
fn shedding_takes_the_oldest_first_across_rooms() {
    let now = Instant::now();
    let mut r = rooms(100, HISTORY_BYTES, Duration::from_secs(60));
    let a = r.join("a", 1, now);
    let b = r.join("b", 2, now);
    let mut to = Vec::new();
    // Publish order: a1 b1 a2 b2 a3, 10 bytes each.
    for (room, _) in [(a, 1), (b, 1), (a, 2), (b, 2), (a, 3)] {
        publish(&mut r, room, MessageKind::Binary, &[0; 10], &mut to);
    }
    assert_eq!(r.history_bytes(), 50);
    assert_eq!(r.largest_history(1), [("a", 30)]);
    assert_eq!(r.shed(15), 20, "whole messages: a1, then b1");
    assert_eq!(ids(&r.resume(a, Some(0), None)), vec![2, 3]);
    assert_eq!(ids(&r.resume(b, Some(0), None)), vec![2]);
    assert_eq!(r.shed(10), 10, "a2 next");
    assert_eq!(ids(&r.resume(a, Some(0), None)), vec![3]);
    assert_eq!(r.shed(1000), 20, "all that is left");
    assert_eq!((r.history_bytes(), r.shed_count()), (0, 5));
    assert_eq!(r.shed(10), 0);
    assert_eq!(r.largest_history(10), Vec::<(&str, usize)>::new());
    // Shed history is announced as a gap.
    assert_eq!(r.resume(a, Some(0), None).gap, Some((1, 3)));
}

#[test]
fn members_may_leave_and_join_while_a_message_is_delivered() {
    let now = Instant::now();
    let mut r = rooms(10, HISTORY_BYTES, Duration::ZERO);
    let a = r.join("a", 1, now);
    r.join("a", 2, now);
    r.join("a", 3, now);
    let mut to = Vec::new();
    publish(&mut r, a, MessageKind::Text, b"m1", &mut to);
    assert_eq!(to, [1, 2, 3]);
    // The driver delivers from `to`; meanwhile member 2 goes and 4 comes.
    let mut delivered = Vec::new();
    for &m in &to {
        if m == 1 {
            r.leave(a, 2, now);
            r.join("a", 4, now);
        }
        delivered.push(m);
    }
    assert_eq!(delivered, [1, 2, 3], "the list of the publish, unchanged");
    let mut members = r.members(a).to_vec();
    members.sort();
    assert_eq!(members, [1, 3, 4], "the room itself changed");
    assert_eq!(publish(&mut r, a, MessageKind::Text, b"m2", &mut to), 2);
    to.sort();
    assert_eq!(to, [1, 3, 4]);
    // Everyone leaving during a fan-out forgets the room (no linger) and
    // does not disturb the list being delivered.
    publish(&mut r, a, MessageKind::Text, b"m3", &mut to);
    for &m in &to.clone() {
        r.leave(a, m, now);
    }
    assert_eq!(to.len(), 3);
    assert_eq!(r.count(), 0);
}

#[test]
fn ids_given_elsewhere_are_kept_and_a_restored_room_resumes_from_them() {
    // `--cluster`: the room's order comes from Redis (crate::cluster).
    let now = Instant::now();
    let mut r = rooms(3, HISTORY_BYTES, Duration::from_secs(60));
    let a = r.join("/broadcast/a", 1, now);
    publish(&mut r, a, MessageKind::Text, b"local", &mut Vec::new());
    let kept = [
        (40, MessageKind::Text, b"forty".to_vec()),
        (41, MessageKind::Binary, b"\x01".to_vec()),
    ];
    r.restore(a, 41, &kept);
    assert_eq!(r.last_id(a), 41);
    assert_eq!(
        text(&r, a, 10),
        ["forty", "\u{1}"],
        "what was kept here is replaced"
    );
    assert_eq!(r.history_bytes(), 6);
    let mut to = Vec::new();
    publish_as(&mut r, a, 42, MessageKind::Text, b"42", &mut to);
    assert_eq!(to, [1]);
    assert_eq!(r.last_id(a), 42);
    let replay = r.resume(a, Some(39), None);
    assert_eq!((replay.gap, ids(&replay)), (None, vec![40, 41, 42]));
    publish_as(&mut r, a, 43, MessageKind::Text, b"43", &mut to);
    let replay = r.resume(a, Some(30), None);
    assert_eq!(
        (replay.gap, ids(&replay)),
        (Some((31, 40)), vec![41, 42, 43])
    );
    let replay = r.resume(a, Some(50), None);
    assert_eq!(replay.ahead_of, Some(43));
}

#[test]
fn a_run_gathers_messages_for_the_same_members_and_ends_when_they_change() {
    let now = Instant::now();
    let mut r = rooms(10, HISTORY_BYTES, Duration::from_secs(60));
    let a = r.join("a", 1, now);
    r.join("a", 2, now);
    let b = r.join("b", 3, now);
    let mut run = Run::default();
    assert!(
        r.continues(&run, a) && r.continues(&run, b),
        "empty: any room"
    );
    assert_eq!(r.publish(a, 7, MessageKind::Text, b"one", &mut run), 1);
    assert!(r.continues(&run, a));
    assert!(!r.continues(&run, b), "another room");
    assert_eq!(
        r.publish(a, 8, MessageKind::Binary, &[0xff; 200], &mut run),
        2
    );
    assert_eq!(
        (run.len(), run.payload_bytes(), run.room()),
        (2, 203, Some(a))
    );
    assert_eq!(run.members(), [1, 2]);
    let got: Vec<(u32, u64, MessageKind, Vec<u8>)> = run
        .messages()
        .map(|(e, d)| (e.from, e.id, e.kind, d.to_vec()))
        .collect();
    assert_eq!(
        got,
        [
            (7, 1, MessageKind::Text, b"one".to_vec()),
            (8, 2, MessageKind::Binary, vec![0xff; 200]),
        ]
    );
    // The plain frames one after the other: FIN text 3, FIN binary 200
    // (16-bit length).
    let mut want = vec![0x81, 3];
    want.extend_from_slice(b"one");
    want.extend_from_slice(&[0x82, 126, 0, 200]);
    want.extend_from_slice(&[0xff; 200]);
    assert_eq!(run.frames(), &want[..]);
    // A member joining ends the run: it must not get live what it may
    // have had in its history replay, and does not miss what follows.
    r.join("a", 4, now);
    assert!(!r.continues(&run, a));
    run.clear();
    assert!(run.is_empty() && run.frames().is_empty() && run.members().is_empty());
    r.publish(a, 0, MessageKind::Text, b"three", &mut run);
    let mut members = run.members().to_vec();
    members.sort();
    assert_eq!(members, [1, 2, 4]);
    // So does a member leaving.
    r.leave(a, 2, now);
    assert!(!r.continues(&run, a));
    run.clear();
    assert_eq!(r.publish(a, 0, MessageKind::Text, b"four", &mut run), 4);
    assert_eq!(run.members().len(), 2);
    // The ids given elsewhere join a run too.
    r.publish_as(a, 0, 9, MessageKind::Text, b"nine", &mut run);
    let ids: Vec<u64> = run.messages().map(|(e, _)| e.id).collect();
    assert_eq!(ids, [4, 9]);
}
