//! The connection table: slots with generations (a token is a slot index
//! and the slot's generation, so an event left over for a closed connection
//! never reaches a newer one in the same slot), the connections' ids for
//! the logs, and the two lists of connections the loop serves again at the
//! end of a turn: `ready` (stopped reading before `WouldBlock`) and `dirty`
//! (output queued by another connection's message). Owns `Client`, what the
//! driver keeps per connection beside its sans-IO `Connection`.

use std::num::NonZeroU32;
use std::time::Instant;

use log::{debug, info};
use mio::Token;

use super::transport;
use crate::proto::stamp::Stamp;
use crate::proto::{CloseCode, Connection};
use crate::rooms::RoomId;

/// A connection's id in the logs (`#17`); the peer address is logged once, at
/// accept, so the per-connection state does not carry it.
#[derive(Clone, Copy)]
pub(super) struct Id(pub(super) u32);

impl std::fmt::Display for Id {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "#{}", self.0)
    }
}

/// A slot of the table: a transport (the socket, and TLS once decided) and
/// the session on it (`proto`: the sans-IO WebSocket or HTTP exchange).
pub(super) struct Client {
    pub(super) io: transport::Transport,
    pub(super) proto: Connection,
    /// The room, set when the upgrade (or subscription) is accepted.
    room: Option<NonZeroU32>,
    /// What [`Client::memory`] said when this connection was last
    /// accounted: its share of the memory budget (budget.rs).
    pub(super) held: usize,
    /// Counted against `--max-connections` (not refused with 503).
    pub(super) admitted: bool,
    /// Not read because its unsent output is over the budget (echo backpressure).
    pub(super) read_paused: bool,
    /// Has output queued by another connection's message, to write this turn.
    dirty: bool,
    /// The deadline last pushed on the timer heap.
    pub(super) scheduled: Option<Stamp>,
    /// Stopped reading before `WouldBlock`: must be read again without a new event.
    pub(super) read_pending: bool,
    /// A live frame inspector (`/.inspect`): sent records, its messages ignored.
    pub(super) inspecting: bool,
    /// A leg of a proxied pair (proxying.rs): its events are the proxy's.
    pub(super) proxied: bool,
}

impl Client {
    /// `proto` carries the connection's id ([`Connection::set_id`]).
    pub(super) fn new(io: transport::Transport, proto: Connection, admitted: bool) -> Client {
        Client {
            io,
            proto,
            room: None,
            held: 0,
            admitted,
            read_paused: false,
            dirty: false,
            scheduled: None,
            read_pending: false,
            inspecting: false,
            proxied: false,
        }
    }

    /// The connection's id in the logs (kept once, in the core).
    pub(super) fn id(&self) -> Id {
        Id(self.proto.id())
    }

    /// What this connection holds, as counted against `--max-memory`: the
    /// core's buffers and, with TLS, rustls's (a bound, `TLS_BYTES`).
    pub(super) fn memory(&self) -> usize {
        self.proto.memory() + self.io.memory()
    }

    /// `http` or `https`, for the logs.
    pub(super) fn http_scheme(&self) -> &'static str {
        if self.io.is_tls() {
            "https"
        } else {
            "http"
        }
    }

    /// `ws` or `wss`, or `h2c` or `h2` for a stream of HTTP/2, for the
    /// logs and the inspector.
    pub(super) fn scheme(&self) -> &'static str {
        self.io.name()
    }

    pub(super) fn room(&self) -> Option<RoomId> {
        self.room.map(RoomId::from_key)
    }

    pub(super) fn set_room(&mut self, room: RoomId) {
        self.room = Some(room.key());
    }

    /// Whether a new message may start streaming its echo: echo connections
    /// only (a room needs whole messages: one frame, encoded once, for every
    /// member), and only while under the backpressure budget, so at most one
    /// message's echo piles up past it.
    pub(super) fn may_stream(&self, streaming: bool, budget: usize) -> bool {
        streaming && self.room.is_none() && self.proto.backlog() <= budget
    }

    /// The socket reached EOF or failed.
    pub(super) fn receive_eof(&mut self, now: Instant) {
        self.io.receive_eof(&mut self.proto, now);
    }

    /// The log lines of a connection that ended.
    pub(super) fn log_closed(&self) {
        let p = &self.proto;
        if !p.was_opened() {
            debug!("{}: closed before upgrade", self.id());
            return;
        }
        if let Some(unsent) = p.close_unsent() {
            let why = if p.timed_out() {
                "peer did not read within --close-timeout"
            } else {
                "the connection ended first"
            };
            info!("{}: close {} not delivered ({why})", self.id(), unsent.0);
        }
        let code = |c: Option<CloseCode>| c.map_or("-".to_string(), |c| c.0.to_string());
        match p.error() {
            Some(e) => info!(
                "{}: closed, sent {} ({e}; {}), received {}",
                self.id(),
                code(p.close_sent().or(p.close_unsent())),
                e.rule(),
                code(p.close_received())
            ),
            None => info!(
                "{}: closed, sent {}, received {}",
                self.id(),
                code(p.close_sent()),
                code(p.close_received())
            ),
        }
    }
}

struct Slot {
    gen: u32,
    client: Option<Client>,
}

fn token(index: usize, gen: u32) -> Token {
    Token((gen as usize) << 32 | index)
}

fn split(token: Token) -> (usize, u32) {
    (token.0 & 0xffff_ffff, (token.0 >> 32) as u32)
}

#[derive(Default)]
pub(super) struct Connections {
    slots: Vec<Slot>,
    free: Vec<usize>,
    ready: Vec<Token>,
    dirty: Vec<Token>,
    next_id: u32,
    open: usize,
}

impl Connections {
    /// The token the next connection will have (its slot is taken by
    /// [`Connections::insert`]).
    pub(super) fn vacant(&mut self) -> Token {
        let index = match self.free.last() {
            Some(&i) => i,
            None => {
                self.slots.push(Slot {
                    gen: 0,
                    client: None,
                });
                self.free.push(self.slots.len() - 1);
                self.slots.len() - 1
            }
        };
        token(index, self.slots[index].gen)
    }

    /// A new id for the logs.
    pub(super) fn next_id(&mut self) -> Id {
        let id = Id(self.next_id);
        self.next_id = self.next_id.wrapping_add(1);
        id
    }

    /// Fills the slot [`Connections::vacant`] named.
    pub(super) fn insert(&mut self, t: Token, client: Client) {
        let (index, gen) = split(t);
        let at = self.free.iter().rposition(|&i| i == index);
        let slot = &mut self.slots[index];
        assert!(slot.gen == gen && slot.client.is_none() && at.is_some());
        self.free.swap_remove(at.expect("checked"));
        slot.client = Some(client);
        self.open += 1;
    }

    pub(super) fn get(&self, t: Token) -> Option<&Client> {
        let (index, gen) = split(t);
        let slot = self.slots.get(index)?;
        (slot.gen == gen).then_some(())?;
        slot.client.as_ref()
    }

    pub(super) fn get_mut(&mut self, t: Token) -> Option<&mut Client> {
        let (index, gen) = split(t);
        let slot = self.slots.get_mut(index)?;
        if slot.gen != gen {
            return None;
        }
        slot.client.as_mut()
    }

    /// Two different connections at once (an HTTP/2 stream and the
    /// connection it is on).
    pub(super) fn pair_mut(&mut self, a: Token, b: Token) -> Option<(&mut Client, &mut Client)> {
        let ((ia, ga), (ib, gb)) = (split(a), split(b));
        if ia == ib {
            return None;
        }
        let (lo, hi) = self.slots.split_at_mut(ia.max(ib));
        let (first, second) = (&mut lo[ia.min(ib)], hi.first_mut()?);
        let (sa, sb) = if ia < ib {
            (first, second)
        } else {
            (second, first)
        };
        if sa.gen != ga || sb.gen != gb {
            return None;
        }
        Some((sa.client.as_mut()?, sb.client.as_mut()?))
    }

    /// Takes the connection out; its token is retired with it.
    pub(super) fn remove(&mut self, t: Token) -> Option<Client> {
        let (index, gen) = split(t);
        let slot = self.slots.get_mut(index).filter(|s| s.gen == gen)?;
        let c = slot.client.take()?;
        slot.gen = slot.gen.wrapping_add(1);
        self.free.push(index);
        self.open -= 1;
        Some(c)
    }

    /// Connections held now.
    pub(super) fn len(&self) -> usize {
        self.open
    }

    pub(super) fn iter(&self) -> impl Iterator<Item = (Token, &Client)> {
        self.slots
            .iter()
            .enumerate()
            .filter_map(|(i, s)| Some((token(i, s.gen), s.client.as_ref()?)))
    }

    pub(super) fn iter_mut(&mut self) -> impl Iterator<Item = (Token, &mut Client)> {
        self.slots
            .iter_mut()
            .enumerate()
            .filter_map(|(i, s)| Some((token(i, s.gen), s.client.as_mut()?)))
    }

    pub(super) fn tokens(&self) -> Vec<Token> {
        self.iter().map(|(t, _)| t).collect()
    }

    /// Reads `t` again next turn without waiting for a new event.
    pub(super) fn mark_ready(&mut self, t: Token) {
        if let Some(c) = self.get_mut(t) {
            if !c.read_pending {
                c.read_pending = true;
                self.ready.push(t);
            }
        }
    }

    pub(super) fn has_ready(&self) -> bool {
        !self.ready.is_empty()
    }

    /// The connections put on the ready list; [`Connections::unpend`]
    /// each before reading it.
    pub(super) fn take_ready(&mut self) -> Vec<Token> {
        std::mem::take(&mut self.ready)
    }

    /// Whether `t` is still there and was waiting to be read again (it no
    /// longer is).
    pub(super) fn unpend(&mut self, t: Token) -> bool {
        self.get_mut(t)
            .is_some_and(|c| std::mem::replace(&mut c.read_pending, false))
    }

    /// Writes `t` at the end of this turn (with whatever else is queued by then).
    pub(super) fn mark_dirty(&mut self, t: Token) {
        if let Some(c) = self.get_mut(t) {
            if !c.dirty {
                c.dirty = true;
                self.dirty.push(t);
            }
        }
    }

    /// The connections to write at the end of the turn; [`Connections::clean`]
    /// each before writing it.
    pub(super) fn take_dirty(&mut self) -> Vec<Token> {
        std::mem::take(&mut self.dirty)
    }

    /// Whether `t` is still there (it is no longer dirty).
    pub(super) fn clean(&mut self, t: Token) -> bool {
        self.get_mut(t).is_some_and(|c| {
            c.dirty = false;
            true
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Idle memory per connection is this slot (issue 29: at most 150
    /// bytes of RSS per idle connection; docs/limits.md accounts for every
    /// byte). In debug builds mio's `TcpStream` carries a selector
    /// id beside the descriptor (16 bytes). The TLS layer costs a plain connection
    /// one pointer (`Client::tls`).
    #[test]
    fn connection_slot_stays_small() {
        let slot = std::mem::size_of::<Slot>();
        let bound = if cfg!(debug_assertions) { 160 } else { 144 };
        assert!(slot <= bound, "a connection slot grew to {slot} bytes");
    }

    #[test]
    fn tokens_carry_the_generation() {
        let t = token(7, 3);
        assert_eq!(split(t), (7, 3));
        assert_eq!(split(token(0xffff_ffff, u32::MAX)), (0xffff_ffff, u32::MAX));
    }
}
