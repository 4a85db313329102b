//! What the server does with a complete message: routing and the two handlers.
//! Handlers decide what to send; they do no I/O.

use std::time::Instant;

use crate::proto::deflate::SharedCodec;
use crate::proto::output::Chunk;
use crate::proto::{Connection, MessageKind};
use crate::rooms::forms::{self, Forms};
use crate::rooms::Run;

/// How paths map to handlers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Mode {
    /// Every path echoes, except paths under `/broadcast`, which are rooms.
    #[default]
    Echo,
    /// Every path is a broadcast room.
    Broadcast,
}

impl Mode {
    /// The routing in one sentence, for the 426 answer to a plain request.
    pub fn describe(self) -> &'static str {
        match self {
            Mode::Echo => "Every path echoes; paths under /broadcast are broadcast rooms.",
            Mode::Broadcast => {
                "Every path is a broadcast room, named by the path (--mode broadcast)."
            }
        }
    }
}

/// Where a connection's messages go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Route {
    Echo,
    /// A broadcast room, named by the request path without its query.
    Room(String),
}

/// The routing table (README, "Routing").
pub fn route(mode: Mode, target: &str) -> Route {
    let path = target.split(['?', '#']).next().unwrap_or("/");
    let is_room = match mode {
        Mode::Broadcast => true,
        Mode::Echo => path == "/broadcast" || path.starts_with("/broadcast/"),
    };
    if is_room {
        Route::Room(path.to_owned())
    } else {
        Route::Echo
    }
}

/// The echo handler: every message goes back to its sender as one message of
/// the same type. The payload buffer is moved into the output queue, not copied.
/// The connection's knobs shape it (`delay`, `repeat`: [`Connection::echo`]).
/// Returns whether it was queued (the connection can still send).
pub fn echo(conn: &mut Connection, kind: MessageKind, data: Vec<u8>) -> bool {
    conn.echo(kind, data)
}

/// Echo of a streamed binary message: each piece goes back as it arrived, as
/// one fragment of the echoed message.
pub fn echo_fragment(conn: &mut Connection, data: Vec<u8>, first: bool, fin: bool) -> bool {
    conn.send_fragment(data, first, fin)
}

/// The broadcast handler: a run of room messages (see `crate::rooms::Run`)
/// to one member, in its form. Every member of a form shares one buffer
/// (`forms`: encoded on first use, a reference count per member, no copy):
/// plain frames, frames compressed without context for its window, or the
/// events of an event stream. A member that compresses with its own
/// context or asked for `fragment` is sent each message on its own, and so
/// is an event stream that ends after N events (it ends exactly there).
/// Returns whether the run was queued (the member can still be sent to).
pub fn broadcast<M: Copy>(
    conn: &mut Connection,
    run: &Run<M>,
    forms: &mut Forms<M>,
    (threshold, codec): (usize, &SharedCodec),
    now: Instant,
) -> bool {
    if !conn.is_event_stream() {
        match forms.frames(conn.broadcast_form(), threshold, codec) {
            Some(frames) => conn.send_encoded(frames, run.len()),
            None => run
                .messages()
                .all(|(e, data)| conn.send(e.kind, data.to_vec())),
        }
    } else if conn.counts_events() {
        run.messages().all(|(e, data)| {
            let event = Chunk::Shared(forms::event(e.id, e.kind, data));
            conn.send_event(event, true, now)
        })
    } else {
        conn.send_events(forms.events(), now)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routing_table() {
        assert_eq!(route(Mode::Echo, "/"), Route::Echo);
        assert_eq!(route(Mode::Echo, "/runCase?case=1"), Route::Echo);
        assert_eq!(route(Mode::Echo, "/broadcaster"), Route::Echo);
        assert_eq!(
            route(Mode::Echo, "/broadcast"),
            Route::Room("/broadcast".into())
        );
        assert_eq!(
            route(Mode::Echo, "/broadcast/lobby?name=ann"),
            Route::Room("/broadcast/lobby".into())
        );
        assert_eq!(
            route(Mode::Broadcast, "/chat?x"),
            Route::Room("/chat".into())
        );
        assert_eq!(route(Mode::Broadcast, "/"), Route::Room("/".into()));
    }
}
