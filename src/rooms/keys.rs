//! Idempotency keys of a single instance (without `--cluster`, where Redis
//! keeps them: `cluster::resp::APPEND`), with the same rules: a room
//! remembers a key with the id its message got, for `window` or until
//! `count` newer keys of the room pushed it out, whichever comes first. A
//! key seen again is answered with its first id and not published again.
//! Sans-IO: time is passed in; `expire` drops what aged out in every room
//! (the driver's periodic sweep), `seen` the room it looks in.

use std::collections::{HashMap, VecDeque};
use std::rc::Rc;
use std::time::{Duration, Instant};

/// What a remembered key costs besides its bytes: its place in the order
/// and in the map (counted in the memory budget).
const KEY_OVERHEAD: usize = 64;

#[derive(Default)]
struct RoomKeys {
    /// Oldest first.
    order: VecDeque<(Instant, Rc<[u8]>)>,
    ids: HashMap<Rc<[u8]>, u64>,
}

pub struct Keys {
    window: Duration,
    count: usize,
    rooms: HashMap<String, RoomKeys>,
    bytes: usize,
}

impl Keys {
    pub fn new(window: Duration, count: usize) -> Keys {
        Keys {
            window,
            count: count.max(1),
            rooms: HashMap::new(),
            bytes: 0,
        }
    }

    /// The id `key` got in `room`, if it is remembered.
    pub fn seen(&mut self, room: &str, key: &[u8], now: Instant) -> Option<u64> {
        let r = self.rooms.get_mut(room)?;
        self.bytes -= trim(r, now, self.window, self.count);
        r.ids.get(key).copied()
    }

    /// `key`'s message was published in `room` under `id` (a key not
    /// remembered: `seen` said `None`; one still remembered keeps its place
    /// and its first id).
    pub fn remember(&mut self, room: &str, key: &[u8], id: u64, now: Instant) {
        let r = self.rooms.entry(room.to_owned()).or_default();
        if r.ids.contains_key(key) {
            return;
        }
        let key: Rc<[u8]> = key.into();
        self.bytes += key.len() + KEY_OVERHEAD;
        r.ids.insert(key.clone(), id);
        r.order.push_back((now, key));
        self.bytes -= trim(r, now, self.window, self.count);
    }

    /// Forgets what aged out, in every room.
    pub fn expire(&mut self, now: Instant) {
        let (window, count) = (self.window, self.count);
        let mut freed = 0;
        self.rooms.retain(|_, r| {
            freed += trim(r, now, window, count);
            !r.ids.is_empty()
        });
        self.bytes -= freed;
    }

    /// Bytes the keys hold (an estimate: their bytes and their places).
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    /// Keys remembered, in every room.
    pub fn len(&self) -> usize {
        self.rooms.values().map(|r| r.ids.len()).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.rooms.is_empty()
    }
}

/// Drops a room's keys older than `window` and past the newest `count`
/// (each key has one place in the order); returns the bytes freed.
fn trim(r: &mut RoomKeys, now: Instant, window: Duration, count: usize) -> usize {
    let mut freed = 0;
    while let Some((at, _)) = r.order.front() {
        let old = now.saturating_duration_since(*at) >= window;
        if !old && r.order.len() <= count {
            break;
        }
        if let Some((_, key)) = r.order.pop_front() {
            r.ids.remove(&key[..]);
            freed += key.len() + KEY_OVERHEAD;
        }
    }
    freed
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_key_answers_its_first_id_until_it_ages_out() {
        let t0 = Instant::now();
        let mut k = Keys::new(Duration::from_secs(600), 100);
        assert_eq!(k.seen("/r", b"a", t0), None);
        k.remember("/r", b"a", 7, t0);
        assert_eq!(k.seen("/r", b"a", t0 + Duration::from_secs(599)), Some(7));
        assert_eq!(k.seen("/other", b"a", t0), None, "keys are per room");
        assert_eq!(k.seen("/r", b"a", t0 + Duration::from_secs(600)), None);
        assert_eq!(k.bytes(), 0);
    }

    // docs/limits.md: "Idempotency keys a room remembers"
    #[test]
    fn a_room_keeps_only_its_newest_keys_and_expire_frees_every_room() {
        let t0 = Instant::now();
        let mut k = Keys::new(Duration::from_secs(600), 3);
        for (i, key) in [b"a", b"b", b"c", b"d"].iter().enumerate() {
            k.remember("/r", *key, i as u64 + 1, t0);
        }
        assert_eq!(k.seen("/r", b"a", t0), None, "pushed out by 3 newer keys");
        assert_eq!(k.seen("/r", b"b", t0), Some(2));
        assert_eq!(k.seen("/r", b"d", t0), Some(4));
        k.remember("/s", b"a", 1, t0 + Duration::from_secs(300));
        assert_eq!(k.len(), 4);
        k.expire(t0 + Duration::from_secs(600));
        assert_eq!(k.len(), 1, "only /s's key is younger than the window");
        k.expire(t0 + Duration::from_secs(900));
        assert!(k.is_empty());
        assert_eq!(k.bytes(), 0);
    }

    #[test]
    fn a_key_reused_after_it_aged_out_is_remembered_anew() {
        let t0 = Instant::now();
        let mut k = Keys::new(Duration::from_secs(10), 100);
        k.remember("/r", b"a", 1, t0);
        let later = t0 + Duration::from_secs(20);
        assert_eq!(k.seen("/r", b"a", later), None);
        k.remember("/r", b"a", 5, later);
        k.expire(later + Duration::from_secs(5));
        assert_eq!(k.seen("/r", b"a", later + Duration::from_secs(5)), Some(5));
    }
}
