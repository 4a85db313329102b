//! A room's one order as this instance follows it: the catch-up's reply
//! (what the room kept, and the gap before it), publications delivered in
//! id order, held while catching up, and a new catch-up when an id is
//! skipped or the room's epoch changed (Redis lost it).

use redis_protocol::resp2::types::OwnedFrame;

use super::resp::{self, entry, publication};
use super::{Cluster, Event, Watch};
use crate::proto::MessageKind;

impl Cluster {
    /// The catch-up's reply: `{seq, epoch, entries}`.
    pub(super) fn caught_up(&mut self, room: &str, frame: OwnedFrame) -> Result<(), String> {
        let OwnedFrame::Array(mut parts) = frame else {
            return Err("a catch-up reply that is not an array".into());
        };
        if parts.len() != 3 {
            return Err("a catch-up reply of the wrong shape".into());
        }
        let entries = parts.pop().unwrap_or(OwnedFrame::Null);
        let epoch = resp::bytes(&parts[1]).map(<[u8]>::to_vec);
        let seq = resp::int(&parts[0]).ok_or("a catch-up reply without the room's last id")?;
        let mut messages = Vec::new();
        if let OwnedFrame::Array(list) = entries {
            for e in list {
                messages.push(entry(&e).ok_or("a stream entry of the wrong shape")?);
            }
        }
        let Some(w) = self.rooms.get_mut(room) else {
            return Ok(()); // unwatched meanwhile
        };
        if w.state != Watch::CatchingUp {
            return Ok(());
        }
        let held = std::mem::take(&mut w.held);
        let known = w.last;
        if let (Some(last), Some(_)) = (known, &w.epoch) {
            if w.epoch != epoch {
                log::warn!(
                    "cluster: room {room}: its history in Redis was lost (new epoch); \
                     continuing after id {last}"
                );
            }
        }
        w.epoch = epoch;
        w.state = Watch::Live;
        match known {
            None => {
                w.last = Some(seq);
                self.events.push_back(Event::Restore {
                    room: room.to_owned(),
                    last: seq,
                    messages,
                });
            }
            Some(start) => {
                let newest = messages.iter().map(|m| m.0).filter(|&id| id > start).max();
                w.last = Some(newest.unwrap_or(start).max(seq));
                let mut last = start;
                for (id, kind, data) in messages.into_iter().filter(|m| m.0 > start) {
                    self.gap(room, last, id);
                    self.deliver(room, id, kind, data);
                    last = id;
                }
                // Appended but no longer retained (or history is off).
                self.gap(room, last, seq + 1);
            }
        }
        self.events.push_back(Event::Live {
            room: room.to_owned(),
        });
        for (id, epoch, kind, data) in held {
            self.apply(room, id, epoch, kind, data);
        }
        self.send_held();
        Ok(())
    }

    /// The ids between `last` and `next` (both excluded), if any, are gone.
    fn gap(&mut self, room: &str, last: u64, next: u64) {
        if next > last + 1 {
            self.stats.gaps += 1;
            self.events.push_back(Event::Gap {
                room: room.to_owned(),
                from: last + 1,
                to: next - 1,
            });
        }
    }

    fn deliver(&mut self, room: &str, id: u64, kind: MessageKind, data: Vec<u8>) {
        self.stats.delivered += 1;
        self.events.push_back(Event::Deliver {
            room: room.to_owned(),
            id,
            kind,
            data,
        });
    }

    /// A message on the subscriber connection.
    pub(super) fn publication(&mut self, frame: OwnedFrame) -> Result<(), String> {
        if let Some(e) = resp::error(&frame) {
            return Err(format!("Redis refused us: {e}"));
        }
        let OwnedFrame::Array(parts) = frame else {
            // AUTH's +OK, or PING's +PONG while subscribed to nothing.
            self.sub_answered(resp::bytes(&frame) == Some(b"PONG"));
            return Ok(());
        };
        let kind = parts.first().and_then(resp::bytes).unwrap_or_default();
        match kind {
            b"pong" => self.sub_answered(true),
            b"subscribe" | b"unsubscribe" => self.sub_answered(false),
            _ => {}
        }
        let channel = parts.get(1).and_then(resp::bytes).unwrap_or_default();
        let Some(room) = std::str::from_utf8(channel)
            .ok()
            .and_then(|c| c.strip_prefix(&self.prefix))
            .and_then(|c| c.strip_prefix("room:"))
            .map(str::to_owned)
        else {
            return Ok(());
        };
        match kind {
            b"subscribe"
                if self
                    .rooms
                    .get(&room)
                    .is_some_and(|w| w.state == Watch::Subscribing) =>
            {
                self.catch_up(&room);
            }
            b"message" => {
                let payload = parts.get(2).and_then(resp::bytes).unwrap_or_default();
                let (id, epoch, kind, data) =
                    publication(payload).ok_or("a publication of the wrong shape")?;
                self.apply(&room, id, epoch, kind, data);
            }
            _ => {}
        }
        Ok(())
    }

    /// A reply the subscriber connection waited for; `pong`: PING's, the
    /// first of which makes it ready.
    fn sub_answered(&mut self, pong: bool) {
        self.sub_awaiting = self.sub_awaiting.saturating_sub(1);
        if pong {
            self.ready(1);
        }
    }

    /// A publication in `room`: delivered if it is the next id; held while
    /// catching up; anything else (ids skipped, another epoch) catches up.
    fn apply(&mut self, room: &str, id: u64, epoch: Vec<u8>, kind: MessageKind, data: Vec<u8>) {
        let Some(w) = self.rooms.get_mut(room) else {
            return;
        };
        match w.state {
            Watch::Subscribing => {} // before the catch-up: it will have it
            Watch::CatchingUp => w.held.push((id, epoch, kind, data)),
            Watch::Live => {
                let last = w.last.unwrap_or(0);
                let same_epoch = w.epoch.as_deref() == Some(&epoch[..]);
                if same_epoch && id <= last {
                    // Already delivered.
                } else if same_epoch && id == last + 1 {
                    w.last = Some(id);
                    self.deliver(room, id, kind, data);
                } else {
                    w.held.push((id, epoch, kind, data));
                    self.catch_up(room);
                }
            }
        }
    }
}
