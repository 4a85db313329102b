//! Inbound frames: headers split anywhere, payloads unmasked into the message
//! or control buffer, each frame's checks (RFC 6455 §5) and what ends it.

use std::time::Instant;

use super::super::error::ProtocolError;
use super::super::frame::{FrameHeader, MAX_HEADER_LEN};
use super::super::inspect::{Content, Dir, MessageInfo, PREVIEW};
use super::super::message::{MessageBuffer, MessageKind};
use super::{bump, bump_by, Connection, Deflate, Event, FrameInfo, Item, OpCode, State, What};

/// The frame being received.
#[derive(Debug)]
pub(super) struct Frame {
    pub(super) remaining: u64,
    key: [u8; 4],
    pub(super) opcode: OpCode,
    fin: bool,
    /// Payload bytes received so far, modulo 4 (all the mask needs).
    offset: u8,
    /// Payload is read past (after our close frame, only a close matters).
    pub(super) discard: bool,
}

/// What the inspector records of the message being received, counted as
/// its frames arrive (tap on only).
#[derive(Debug, Default)]
pub(super) struct Tally {
    /// Payload bytes of its frames on the wire.
    wire: u64,
    frames: u32,
    compressed: bool,
    /// Bytes already handed out as pieces (a streamed message).
    pub(super) handed_out: u64,
    /// A streamed message's first bytes (the pieces are gone by its end).
    pub(super) head: Vec<u8>,
}

impl Connection {
    pub(super) fn receive_frames(&mut self, mut data: &[u8], now: Instant) {
        while self.state.reads_frames() {
            if self.frame().is_none() {
                if self.fast_echo && !data.is_empty() {
                    data = &data[self.echo_whole_frames(data)..];
                }
                if data.is_empty() {
                    return;
                }
                let have = self.rx.as_ref().map_or(0, |r| usize::from(r.header_len));
                let decoded = if have == 0 {
                    FrameHeader::decode(data)
                } else {
                    let rx = self.rx();
                    let take = (MAX_HEADER_LEN - have).min(data.len());
                    rx.header[have..have + take].copy_from_slice(&data[..take]);
                    match FrameHeader::decode(&rx.header[..have + take]) {
                        Ok(Some((h, n))) => {
                            rx.header_len = 0;
                            Ok(Some((h, n - have)))
                        }
                        Ok(None) => {
                            rx.header_len = (have + take) as u8;
                            return;
                        }
                        Err(e) => Err(e),
                    }
                };
                match decoded {
                    Ok(Some((hdr, used))) => {
                        data = &data[used..];
                        if self.tapping() {
                            self.rx().tapped = Some(FrameInfo::incoming(&hdr));
                        }
                        if let Err(e) = self.begin_frame(hdr) {
                            return self.fail(e, now);
                        }
                    }
                    Ok(None) => {
                        let rx = self.rx();
                        rx.header[..data.len()].copy_from_slice(data);
                        // A partial header is shorter than MAX_HEADER_LEN.
                        rx.header_len = data.len() as u8;
                        return;
                    }
                    Err(e) => return self.fail(e, now),
                }
            } else if !data.is_empty() {
                let frame = self.frame().expect("frame in progress");
                let mut take = frame.remaining.min(data.len() as u64) as usize;
                // A streamed piece is at most STREAM_PIECE_MAX bytes, so its
                // buffer never grows past what the out-queue recycles.
                let room = self.stream_room();
                if let Some(room) = room {
                    take = take.min(room);
                }
                let (chunk, rest) = data.split_at(take);
                data = rest;
                if let Err(e) = self.frame_payload(chunk) {
                    return self.fail(e, now);
                }
                if room.is_some() && self.stream_room() == Some(0) {
                    self.hand_out_piece();
                }
            }
            match self.frame() {
                Some(f) if f.remaining == 0 => {
                    if let Err(e) = self.end_frame(now) {
                        return self.fail(e, now);
                    }
                }
                Some(_) if data.is_empty() => return,
                _ => {}
            }
        }
    }

    /// The echo fast path: the whole, small, final, uncompressed data frames
    /// at the start of `data` are echoed at once (unmasked, UTF-8 checked,
    /// copied into the output as our frame) with no event, no message
    /// buffer and no handler call each, while nothing else is pending: no
    /// event waiting (so output keeps input's order), no frame or message in
    /// progress, no knob, no deflate, no streamed echo open. Anything else (a control frame, a fragment, a text frame that
    /// is not UTF-8, whose 1007 the ordinary path gives) stops it there and
    /// the ordinary path goes on from that frame. Returns the bytes used.
    fn echo_whole_frames(&mut self, data: &[u8]) -> usize {
        const MAX: usize = 512;
        let idle_rx = self
            .rx
            .as_ref()
            .is_none_or(|r| r.header_len == 0 && r.frame.is_none() && r.message.is_none());
        let plain = self.ctl.as_ref().is_none_or(|c| {
            c.deflate.is_none() && c.knobs.is_none() && c.keys.is_none() && !c.hold_closes
        });
        if !matches!(self.state, State::Open { .. })
            || !idle_rx
            || !plain
            || !self.items.is_empty()
            || self.out.in_stream()
        {
            return 0;
        }
        // With the inspector's tap on, each message is recorded as the
        // ordinary path records it when its frame folds into it (the
        // preview holds the whole message, or `PREVIEW` bytes of it); one
        // that would not fold goes the ordinary way.
        let tapping = self.tapping();
        let preview = self.limits.tap.preview();
        let max = MAX.min(self.limits.max_message_size);
        let mut buf = [0u8; MAX];
        let (mut used, mut messages, mut bytes) = (0, 0, 0);
        while let Ok(Some((h, n))) = FrameHeader::decode(&data[used..]) {
            let len = h.payload_len as usize;
            let folds = !tapping || preview >= len.min(PREVIEW);
            let Some(key) = h
                .mask
                .filter(|_| h.fin && h.rsv == 0 && len <= max && folds)
            else {
                break;
            };
            let (kind, opcode) = match h.opcode {
                1 => (MessageKind::Text, OpCode::Text),
                2 => (MessageKind::Binary, OpCode::Binary),
                _ => break,
            };
            let Some(payload) = data.get(used + n..used + n + len) else {
                break;
            };
            let out = &mut buf[..len];
            out.copy_from_slice(payload);
            super::super::mask::apply_mask(out, key, 0);
            if kind == MessageKind::Text && std::str::from_utf8(out).is_err() {
                break;
            }
            if tapping {
                let content: Content = out[..len.min(preview)].into();
                self.record(What::Message(MessageInfo {
                    dir: Dir::In,
                    text: kind == MessageKind::Text,
                    len: len as u64,
                    wire_len: len as u64,
                    frames: 1,
                    compressed: false,
                    content,
                    folded: true,
                }));
                self.record_message_out(kind, out, len, false, None);
            }
            self.out
                .push_frame_copy(super::send::header(opcode, len, true, 0, None), out);
            used += n + len;
            messages += 1;
            bytes += len as u64;
        }
        if messages > 0 {
            self.count_frames_out(messages);
            let c = &self.limits.counters;
            bump_by(&c.frames_in, messages);
            bump_by(&c.echoed_messages, messages);
            bump_by(&c.echoed_bytes, bytes);
        }
        used
    }

    fn begin_frame(&mut self, hdr: FrameHeader) -> Result<(), ProtocolError> {
        // A proxy's leg (`hold_closes`) still takes the messages the peer
        // sent before it saw our close: they are the other side's due.
        let closing = matches!(self.state, State::Closing { .. })
            && !self.ctl.as_ref().is_some_and(|c| c.hold_closes);
        let opcode = OpCode::from_u8(hdr.opcode).ok_or(ProtocolError::ReservedOpcode(hdr.opcode));
        // §5.1: a client masks every frame, a server none.
        let key = match (self.is_client(), hdr.mask) {
            (false, Some(key)) => Ok(key),
            (false, None) => Err(ProtocolError::UnmaskedFrame),
            (true, None) => Ok([0; 4]),
            (true, Some(_)) => Err(ProtocolError::MaskedFrame),
        };
        let mut frame = Frame {
            opcode: opcode.unwrap_or(OpCode::Binary),
            fin: hdr.fin,
            key: key.unwrap_or([0; 4]),
            remaining: hdr.payload_len,
            offset: 0,
            discard: false,
        };
        if closing {
            // After our close only the peer's close matters; everything else is
            // read past without being buffered.
            frame.discard = frame.opcode != OpCode::Close || hdr.payload_len > 125;
            if !frame.discard {
                self.ctl.get_or_insert_with(Box::default).payload.clear();
            }
            self.rx().frame = Some(frame);
            return Ok(());
        }
        // RSV1 means "compressed" once permessage-deflate is agreed; RSV2 and
        // RSV3 mean nothing here.
        let rsv1 = hdr.rsv & 4 != 0;
        if hdr.rsv & 3 != 0 || (rsv1 && self.deflate().is_none()) {
            return Err(ProtocolError::ReservedBits);
        }
        let opcode = opcode?;
        key?;
        if rsv1 && !matches!(opcode, OpCode::Text | OpCode::Binary) {
            return Err(ProtocolError::CompressedControlOrContinuation);
        }
        if opcode.is_control() {
            if !hdr.fin {
                return Err(ProtocolError::FragmentedControlFrame);
            }
            if hdr.payload_len > 125 {
                return Err(ProtocolError::ControlFrameTooLong);
            }
            self.ctl.get_or_insert_with(Box::default).payload.clear();
        } else {
            let so_far = match (opcode, self.message()) {
                (OpCode::Continuation, None) => return Err(ProtocolError::UnexpectedContinuation),
                (OpCode::Continuation, Some(m)) => m.total_len(),
                (_, Some(_)) => return Err(ProtocolError::ExpectedContinuation),
                (_, None) => 0,
            };
            // A compressed message is checked on its inflated size, as it
            // inflates (`frame_payload`).
            let compressed = rsv1 || self.message().is_some_and(|m| m.is_compressed());
            if !compressed
                && so_far.saturating_add(hdr.payload_len) > self.limits.max_message_size as u64
            {
                return Err(ProtocolError::MessageTooBig);
            }
            if self.tapping() {
                let tally = self.rx().tally.get_or_insert_with(Tally::default);
                if opcode != OpCode::Continuation {
                    *tally = Tally {
                        compressed,
                        ..Tally::default()
                    };
                }
                tally.wire += hdr.payload_len;
                tally.frames += 1;
            }
            if self.message().is_none() {
                let kind = if opcode == OpCode::Text {
                    MessageKind::Text
                } else {
                    MessageKind::Binary
                };
                let buf = self.out.take_spare();
                self.rx().message = Some(if compressed {
                    MessageBuffer::new_compressed(kind, buf)
                } else {
                    MessageBuffer::new(kind, buf)
                });
            }
        }
        self.rx().frame = Some(frame);
        Ok(())
    }

    fn frame_payload(&mut self, chunk: &[u8]) -> Result<(), ProtocolError> {
        let rx = self.rx.as_mut().expect("frame in progress");
        let frame = rx.frame.as_mut().expect("frame in progress");
        let offset = usize::from(frame.offset);
        frame.offset = ((offset + chunk.len()) & 3) as u8;
        frame.remaining -= chunk.len() as u64;
        if let Some(t) = rx.tapped.as_mut() {
            if t.preview.len() < PREVIEW {
                let added = t.preview.extend(chunk, PREVIEW);
                super::super::mask::apply_mask(added, frame.key, offset);
            }
        }
        if frame.discard {
            return Ok(());
        }
        if frame.opcode.is_control() {
            let control = &mut self.ctl.as_mut().expect("control state").payload;
            super::super::mask::extend_unmasked(control, chunk, frame.key, offset);
            Ok(())
        } else {
            let msg = rx.message.as_mut().expect("message in progress");
            if !msg.is_compressed() {
                return msg.push(chunk, frame.key, offset);
            }
            let inflater = Deflate::of(&mut self.ctl).inflater();
            msg.inflate(
                chunk,
                frame.key,
                offset,
                inflater,
                self.limits.max_message_size,
            )
        }
    }

    fn end_frame(&mut self, now: Instant) -> Result<(), ProtocolError> {
        let rx = self.rx();
        let frame = rx.frame.take().expect("frame in progress");
        // A data frame that is a whole message may be folded into the
        // message's record: held until the message is recorded.
        let whole = frame.fin && matches!(frame.opcode, OpCode::Text | OpCode::Binary);
        let mut tapped = rx.tapped.take();
        if !whole || frame.discard {
            if let Some(t) = tapped.take() {
                self.record(What::Frame(t));
            }
        }
        bump(&self.limits.counters.frames_in);
        if frame.discard {
            return Ok(());
        }
        match frame.opcode {
            OpCode::Continuation | OpCode::Text | OpCode::Binary => {
                if frame.fin {
                    let mut msg = self.rx().message.take().expect("message in progress");
                    let finished = if msg.is_compressed() {
                        self.inflate_tail(&mut msg)
                    } else {
                        Ok(())
                    };
                    let streaming = msg.is_streaming();
                    let finished = finished.and_then(|()| msg.finish());
                    let (kind, data) = match finished {
                        Ok(m) => m,
                        Err(e) => {
                            if let Some(t) = tapped {
                                self.record(What::Frame(t));
                            }
                            return Err(e);
                        }
                    };
                    self.record_message_in(kind, &data, tapped);
                    let event = if streaming {
                        Event::Fragment {
                            data,
                            first: false,
                            fin: true,
                        }
                    } else {
                        Event::Message { kind, data }
                    };
                    self.items.push_back(Item::Event(event));
                    if self.mis().is_some_and(|m| m.counts_answers()) {
                        self.items.push_back(Item::Answered);
                    }
                }
            }
            OpCode::Ping => {
                let payload = self.take_control();
                self.items.push_back(Item::Pong(payload));
            }
            OpCode::Pong => {}
            OpCode::Close => self.receive_close(now)?,
        }
        Ok(())
    }

    /// The inspector's record of a message that arrived whole (its last
    /// piece is `data` if it was streamed).
    /// `frame`: the record of its last frame if it was its only one, folded
    /// into the message's record when it can be.
    fn record_message_in(&mut self, kind: MessageKind, data: &[u8], frame: Option<FrameInfo>) {
        let Some(t) = self.rx.as_mut().and_then(|r| r.tally.take()) else {
            if let Some(f) = frame {
                self.record(What::Frame(f));
            }
            return;
        };
        let preview = self.limits.tap.preview();
        let content: Content = if t.handed_out > 0 {
            t.head.into()
        } else {
            data[..data.len().min(preview)].into()
        };
        let mut info = MessageInfo {
            dir: Dir::In,
            text: kind == MessageKind::Text,
            len: t.handed_out + data.len() as u64,
            wire_len: t.wire,
            frames: t.frames,
            compressed: t.compressed,
            content,
            folded: false,
        };
        if let Some(f) = frame {
            info.folded = info.can_fold();
            if !info.folded {
                self.record(What::Frame(f));
            }
        }
        self.record(What::Message(info));
    }

    pub(super) fn take_control(&mut self) -> Vec<u8> {
        self.ctl
            .as_mut()
            .map(|c| std::mem::take(&mut c.payload))
            .unwrap_or_default()
    }
}
