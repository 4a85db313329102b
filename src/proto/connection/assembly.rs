//! Message assembly and streaming: when a binary message still arriving is
//! handed out in pieces ([`Event::Fragment`]) instead of whole.

use super::super::message::MessageKind;
use super::{Connection, Event, Item, STREAM_PIECE_MAX};

impl Connection {
    /// Lets the core echo a read's whole small data frames itself, as
    /// frames straight into the output, when nothing else is pending
    /// (`receive.rs`): for a plain echo connection, where the handler would
    /// send each message back unchanged. Those messages are counted in
    /// [`super::Counters::echoed_messages`], not handed out as events.
    pub fn set_fast_echo(&mut self, on: bool) {
        self.fast_echo = on;
    }

    /// Streaming: a binary message is handed out in pieces ([`Event::Fragment`])
    /// as it arrives, instead of whole once complete, so that an echo can go
    /// back while the rest is still coming and memory stays bounded by the
    /// backpressure budget rather than the message size. Text messages (which
    /// must be validated whole before any of it is answered) and messages that
    /// arrive within one `receive` are still delivered whole. Turning it off
    /// stops new messages from streaming; one already streaming goes on.
    /// A connection whose echoes are delayed or repeated does not stream.
    pub fn set_streaming(&mut self, on: bool) {
        self.streaming = on && !self.mis().is_some_and(|m| m.shapes_echoes());
    }

    /// Whether a message is being streamed: pieces of it went out and the rest
    /// is still arriving. A driver must keep reading such a connection even
    /// over its backpressure budget: a client may well send a whole message
    /// before it reads anything, and if we stopped reading it midway while our
    /// echo of the first pieces waits unread, neither side would move again.
    /// To keep that bounded, the driver turns streaming off while over budget
    /// ([`Connection::set_streaming`]), so at most one message (up to the size
    /// cap) streams past the budget.
    pub fn is_streaming_message(&self) -> bool {
        self.message().is_some_and(|m| m.is_streaming())
    }

    /// Room left in the current piece, if the frame being received is part
    /// of a binary message that streams (or may start to).
    pub(super) fn stream_room(&self) -> Option<usize> {
        let frame = self.frame()?;
        let msg = self.message()?;
        let eligible = self.state.is_open()
            && !frame.opcode.is_control()
            && !frame.discard
            && msg.kind() == MessageKind::Binary
            && !msg.is_compressed()
            && (self.streaming || msg.is_streaming());
        eligible.then(|| STREAM_PIECE_MAX.saturating_sub(msg.len()))
    }

    /// Hands out what is buffered of an incomplete binary message. A message
    /// that started streaming goes on streaming; a new one starts only while
    /// streaming is on.
    pub(super) fn hand_out_piece(&mut self) {
        if !self.state.is_open() {
            return;
        }
        let (streaming, chunk) = (self.streaming, self.limits.stream_chunk);
        let Some(msg) = self.rx.as_mut().and_then(|r| r.message.as_mut()) else {
            return;
        };
        let first = !msg.is_streaming();
        if msg.kind() != MessageKind::Binary
            || msg.is_compressed()
            || (first && !streaming)
            || msg.len() < chunk.clamp(1, STREAM_PIECE_MAX)
        {
            return;
        }
        let data = msg.take_piece(self.out.take_spare());
        let preview = self.limits.tap.preview();
        if let Some(t) = self.rx.as_mut().and_then(|r| r.tally.as_mut()) {
            if t.handed_out == 0 {
                t.head = data[..data.len().min(preview)].to_vec();
            }
            t.handed_out += data.len() as u64;
        }
        self.items.push_back(Item::Event(Event::Fragment {
            data,
            first,
            fin: false,
        }));
    }
}
