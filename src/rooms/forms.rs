//! A room message in the forms its members take, each encoded once and
//! shared (`Rc<[u8]>`) by every member that takes it: the plain frame, the
//! frame compressed without context per window size (permessage-deflate
//! members without server context), and the Server-Sent Event (`id:`, the
//! text in `data:` lines, binary as `event: binary` with base64 data).
//! Encoded on first use: a room of plain members never compresses.

use std::rc::Rc;

use base64::engine::general_purpose::STANDARD;
use base64::Engine;

use crate::handler;
use crate::proto::connection::BroadcastForm;
use crate::proto::deflate::SharedCodec;
use crate::proto::{sse, MessageKind};

/// One message's encodings, made as members ask for them.
pub struct Forms<'a> {
    id: u64,
    kind: MessageKind,
    data: &'a [u8],
    plain: Option<Rc<[u8]>>,
    event: Option<Rc<[u8]>>,
    /// By window bits 9..=15.
    compressed: [Option<Rc<[u8]>>; 7],
}

impl<'a> Forms<'a> {
    pub fn new(id: u64, kind: MessageKind, data: &'a [u8]) -> Forms<'a> {
        Forms {
            id,
            kind,
            data,
            plain: None,
            event: None,
            compressed: Default::default(),
        }
    }

    /// The frame for a WebSocket member of this form; `None` for a member
    /// that compresses with its own context (it is sent the message).
    /// `scratch` is where frames are assembled before they become one `Rc`.
    pub fn frame(
        &mut self,
        form: BroadcastForm,
        scratch: &mut Vec<u8>,
        codec: &SharedCodec,
    ) -> Option<Rc<[u8]>> {
        let (kind, data) = (self.kind, self.data);
        match form {
            BroadcastForm::Plain => Some(
                self.plain
                    .get_or_insert_with(|| handler::encode_shared_with(kind, data, scratch))
                    .clone(),
            ),
            BroadcastForm::Compressed(bits) => Some(
                self.compressed[usize::from(bits.clamp(9, 15) - 9)]
                    .get_or_insert_with(|| {
                        let z = codec.compress(bits, data);
                        handler::encode_compressed_with(kind, &z, scratch)
                    })
                    .clone(),
            ),
            BroadcastForm::Own => None,
        }
    }

    /// The event for an event-stream subscriber.
    pub fn event(&mut self) -> Rc<[u8]> {
        let (id, kind, data) = (self.id, self.kind, self.data);
        self.event
            .get_or_insert_with(|| event(id, kind, data))
            .clone()
    }
}

/// One room message as an event: `id:` the message id, the text in `data:`
/// lines; binary as `event: binary` with base64 data.
pub fn event(id: u64, kind: MessageKind, data: &[u8]) -> Rc<[u8]> {
    let mut out = Vec::with_capacity(data.len() + 32);
    match kind {
        MessageKind::Text => {
            // Room text messages are valid UTF-8 (checked on the way in).
            sse::event(&mut out, Some(id), None, &String::from_utf8_lossy(data));
        }
        MessageKind::Binary => {
            sse::event(&mut out, Some(id), Some("binary"), &STANDARD.encode(data));
        }
    }
    out.into()
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

    #[test]
    fn each_form_is_encoded_once_and_shared() {
        let codec = SharedCodec::default();
        let mut scratch = Vec::new();
        let mut f = Forms::new(3, MessageKind::Text, b"hello hello hello");
        let a = f.frame(BroadcastForm::Plain, &mut scratch, &codec).unwrap();
        let b = f.frame(BroadcastForm::Plain, &mut scratch, &codec).unwrap();
        assert!(Rc::ptr_eq(&a, &b));
        assert_eq!(&a[..2], &[0x81, 17]);
        assert_eq!(&a[2..], b"hello hello hello");
        let z1 = f
            .frame(BroadcastForm::Compressed(15), &mut scratch, &codec)
            .unwrap();
        let z2 = f
            .frame(BroadcastForm::Compressed(15), &mut scratch, &codec)
            .unwrap();
        assert!(Rc::ptr_eq(&z1, &z2));
        assert_eq!(z1[0], 0xC1, "FIN, RSV1, text");
        let z9 = f
            .frame(BroadcastForm::Compressed(9), &mut scratch, &codec)
            .unwrap();
        assert!(!Rc::ptr_eq(&z1, &z9));
        assert!(f.frame(BroadcastForm::Own, &mut scratch, &codec).is_none());
        let e1 = f.event();
        assert!(Rc::ptr_eq(&e1, &f.event()));
        assert_eq!(&*e1, b"id: 3\ndata: hello hello hello\n\n");
    }
}
