//! A run of room messages in the forms its members take, each encoded once
//! and shared (`Rc<[u8]>`) by every member that takes it: the plain frames,
//! the frames compressed without context per window size
//! (permessage-deflate members without server context; a message under
//! `--deflate-threshold` stays plain), and the Server-Sent Events (`id:`,
//! the text in `data:` lines, binary as `event: binary` with base64 data).
//! Each form is the run's messages one after the other, so a member is
//! sent the whole run as one chunk. Encoded on first use: a room of plain
//! members never compresses.

use std::rc::Rc;

use base64::engine::general_purpose::STANDARD;
use base64::Engine;

use super::run::Run;
use crate::proto::connection::BroadcastForm;
use crate::proto::deflate::SharedCodec;
use crate::proto::{sse, FrameHeader, MessageKind};

/// One run's encodings, made as members ask for them.
pub struct Forms<'a, M> {
    run: &'a Run<M>,
    plain: Option<Rc<[u8]>>,
    events: Option<Rc<[u8]>>,
    /// By window bits 9..=15.
    compressed: [Option<Rc<[u8]>>; 7],
}

impl<'a, M: Copy> Forms<'a, M> {
    pub fn new(run: &'a Run<M>) -> Forms<'a, M> {
        Forms {
            run,
            plain: None,
            events: None,
            compressed: Default::default(),
        }
    }

    /// The frames for a WebSocket member of this form; `None` for a member
    /// that is sent each message on its own (its own compression context,
    /// or `fragment`). `threshold`: messages shorter stay uncompressed.
    pub fn frames(
        &mut self,
        form: BroadcastForm,
        threshold: usize,
        codec: &SharedCodec,
    ) -> Option<Rc<[u8]>> {
        let run = self.run;
        match form {
            BroadcastForm::Plain => Some(
                self.plain
                    .get_or_insert_with(|| Rc::from(run.frames()))
                    .clone(),
            ),
            BroadcastForm::Compressed(bits) => Some(
                self.compressed[usize::from(bits.clamp(9, 15) - 9)]
                    .get_or_insert_with(|| compressed(run, bits, threshold, codec))
                    .clone(),
            ),
            BroadcastForm::Own => None,
        }
    }

    /// The events for an event-stream subscriber.
    pub fn events(&mut self) -> Rc<[u8]> {
        let run = self.run;
        self.events
            .get_or_insert_with(|| {
                let mut out = Vec::with_capacity(run.payload_bytes() + 32 * run.len());
                for (e, data) in run.messages() {
                    event_into(&mut out, e.id, e.kind, data);
                }
                out.into()
            })
            .clone()
    }
}

/// The run's frames compressed without context with a `bits` window (RSV1
/// set, RFC 7692 §6), the messages under `threshold` as they are.
fn compressed<M: Copy>(run: &Run<M>, bits: u8, threshold: usize, codec: &SharedCodec) -> Rc<[u8]> {
    let mut out = Vec::with_capacity(run.frames().len());
    for (e, data) in run.messages() {
        let z;
        let (rsv, payload) = if data.len() >= threshold {
            z = codec.compress(bits, data);
            (4, &z[..])
        } else {
            (0, data)
        };
        let mut header = FrameHeader::server(e.kind.opcode(), payload.len());
        header.rsv = rsv;
        let (h, n) = header.encode();
        out.extend_from_slice(&h[..n]);
        out.extend_from_slice(payload);
    }
    out.into()
}

/// One room message as an event: `id:` the message id, the text in `data:`
/// lines; binary as `event: binary` with base64 data.
pub fn event(id: u64, kind: MessageKind, data: &[u8]) -> Rc<[u8]> {
    let mut out = Vec::with_capacity(data.len() + 32);
    event_into(&mut out, id, kind, data);
    out.into()
}

fn event_into(out: &mut Vec<u8>, id: u64, kind: MessageKind, data: &[u8]) {
    match kind {
        MessageKind::Text => {
            // Room text messages are valid UTF-8 (checked on the way in).
            sse::event(out, Some(id), None, &String::from_utf8_lossy(data));
        }
        MessageKind::Binary => {
            sse::event(out, Some(id), Some("binary"), &STANDARD.encode(data));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn binary_events_are_base64() {
        let e = event(7, MessageKind::Binary, &[0, 1, 2, 255]);
        assert_eq!(&*e, b"id: 7\nevent: binary\ndata: AAEC/w==\n\n");
        let e = event(8, MessageKind::Text, b"a\nb");
        assert_eq!(&*e, b"id: 8\ndata: a\ndata: b\n\n");
    }

    fn run_of(messages: &[(MessageKind, &[u8])]) -> Run<u32> {
        let mut run = Run::default();
        let room = crate::rooms::RoomId::from_key(std::num::NonZeroU32::MIN);
        for (i, (kind, data)) in messages.iter().enumerate() {
            run.push((room, 1, &[1, 2]), 0, 3 + i as u64, *kind, data);
        }
        run
    }

    #[test]
    fn each_form_is_the_whole_run_encoded_once_and_shared() {
        let codec = SharedCodec::default();
        let long = b"hello hello hello hello hello";
        let run = run_of(&[
            (MessageKind::Text, long),
            (MessageKind::Binary, b"\x01\x02"),
        ]);
        let mut f = Forms::new(&run);
        let a = f.frames(BroadcastForm::Plain, 10, &codec).unwrap();
        let b = f.frames(BroadcastForm::Plain, 10, &codec).unwrap();
        assert!(Rc::ptr_eq(&a, &b));
        let mut want = vec![0x81, long.len() as u8];
        want.extend_from_slice(long);
        want.extend_from_slice(&[0x82, 2, 1, 2]);
        assert_eq!(&a[..], &want[..], "both frames, in order");
        let z1 = f.frames(BroadcastForm::Compressed(15), 10, &codec).unwrap();
        let z2 = f.frames(BroadcastForm::Compressed(15), 10, &codec).unwrap();
        assert!(Rc::ptr_eq(&z1, &z2));
        assert_eq!(z1[0], 0xC1, "FIN, RSV1, text: over the threshold");
        let (h, n) = FrameHeader::decode(&z1).unwrap().unwrap();
        let second = n + h.payload_len as usize;
        assert_eq!(&z1[second..], &[0x82, 2, 1, 2], "under it: plain");
        let mut payload = z1[n..second].to_vec();
        payload.extend_from_slice(&crate::proto::deflate::TAIL);
        let mut text = Vec::with_capacity(1024);
        crate::proto::deflate::new_inflater()
            .decompress_vec(&payload, &mut text, flate2::FlushDecompress::Sync)
            .unwrap();
        assert_eq!(&text[..], long);
        let z9 = f.frames(BroadcastForm::Compressed(9), 10, &codec).unwrap();
        assert!(!Rc::ptr_eq(&z1, &z9));
        assert!(f.frames(BroadcastForm::Own, 10, &codec).is_none());
        let e1 = f.events();
        assert!(Rc::ptr_eq(&e1, &f.events()));
        assert_eq!(
            &*e1,
            b"id: 3\ndata: hello hello hello hello hello\n\nid: 4\nevent: binary\ndata: AQI=\n\n"
        );
    }
}
