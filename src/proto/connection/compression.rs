//! permessage-deflate glue (RFC 7692): a connection's agreed parameters, its
//! inflater and compressor (or the loop-wide ones), and what they weigh.

use std::rc::Rc;

use super::super::deflate::{self, Agreed, SharedCodec};
use super::{BroadcastForm, Connection, Control};

/// Bytes of zlib state counted for an inflater (its struct and a 32 KiB
/// window) and a compressor (zlib's `(1 << (bits + 2)) + (1 << (memLevel + 9))`
/// for 15 bits and memLevel 8), for [`Connection::memory`].
const INFLATER_BYTES: usize = 7 * 1024 + 32 * 1024;
const COMPRESSOR_BYTES: usize = 256 * 1024 + 6 * 1024;

/// permessage-deflate on one connection.
pub(super) struct Deflate {
    pub(super) agreed: Agreed,
    pub(super) threshold: usize,
    /// The loop-wide compressors (shared mode, and any message compressed
    /// without context).
    pub(super) shared: Rc<SharedCodec>,
    /// Inflates the client's messages: exists while a compressed message is
    /// being received, and between messages only if the client keeps its
    /// context (no `client_no_context_takeover`).
    pub(super) inflater: Option<Box<flate2::Decompress>>,
    /// Our own compressor, only with server context takeover (dedicated mode).
    compressor: Option<Box<flate2::Compress>>,
}

impl std::fmt::Debug for Deflate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Deflate")
            .field("agreed", &self.agreed)
            .finish()
    }
}

impl Deflate {
    pub(super) fn new(agreed: Agreed, threshold: usize, shared: Rc<SharedCodec>) -> Deflate {
        Deflate {
            agreed,
            threshold,
            shared,
            inflater: None,
            compressor: None,
        }
    }

    /// The deflate state of a connection receiving a compressed message
    /// (there is one: RSV1 is refused without it).
    pub(super) fn of(ctl: &mut Option<Box<Control>>) -> &mut Deflate {
        ctl.as_mut()
            .and_then(|c| c.deflate.as_mut())
            .expect("compressed only with deflate")
    }

    /// The inflater for the message being received (from the loop-wide pool
    /// when this connection keeps none).
    pub(super) fn inflater(&mut self) -> &mut flate2::Decompress {
        let shared = &self.shared;
        self.inflater.get_or_insert_with(|| shared.take_inflater())
    }

    pub(super) fn memory(&self) -> usize {
        self.inflater.as_ref().map_or(0, |_| INFLATER_BYTES)
            + self.compressor.as_ref().map_or(0, |_| COMPRESSOR_BYTES)
    }

    /// Compresses a message we send (RSV1 set on its frame).
    pub(super) fn compress(&mut self, data: &[u8]) -> Vec<u8> {
        let bits = self.agreed.server_max_window_bits;
        if self.agreed.server_no_context_takeover {
            return self.shared.compress(bits, data);
        }
        let c = self
            .compressor
            .get_or_insert_with(|| Box::new(deflate::new_compressor(bits)));
        deflate::compress_message(c, data, false)
    }
}

impl Connection {
    /// The parameters of permessage-deflate, if agreed.
    pub fn deflate(&self) -> Option<Agreed> {
        self.ctl.as_ref()?.deflate.as_ref().map(|d| d.agreed)
    }

    pub(super) fn deflate_mut(&mut self) -> Option<&mut Deflate> {
        self.ctl.as_mut()?.deflate.as_mut()
    }

    /// How room messages are to reach this connection: plain, as frames
    /// compressed without context (shared among members with the same
    /// window; a message under the threshold stays plain), or each message
    /// on its own ([`Connection::send`]): compressed with this connection's
    /// own context, or cut into the frames it asked for with `fragment`.
    pub fn broadcast_form(&self) -> BroadcastForm {
        if self.fragment_size().is_some() {
            return BroadcastForm::Own;
        }
        match self.ctl.as_ref().and_then(|c| c.deflate.as_ref()) {
            Some(d) if d.agreed.server_no_context_takeover => {
                BroadcastForm::Compressed(d.agreed.server_max_window_bits)
            }
            Some(_) => BroadcastForm::Own,
            None => BroadcastForm::Plain,
        }
    }

    /// Ends a compressed message: the `00 00 ff ff` the sender stripped
    /// (RFC 7692 §7.2.2) goes through the inflater; without client context
    /// takeover the inflater goes back to the loop-wide pool.
    pub(super) fn inflate_tail(
        &mut self,
        msg: &mut super::super::message::MessageBuffer,
    ) -> Result<(), super::super::error::ProtocolError> {
        let max = self.limits.max_message_size;
        let d = Deflate::of(&mut self.ctl);
        msg.inflate_plain(&deflate::TAIL, d.inflater(), max)?;
        if d.agreed.client_no_context_takeover {
            if let Some(i) = d.inflater.take() {
                d.shared.give_inflater(i);
            }
        }
        Ok(())
    }
}
