//! What the server does with a complete message. Handlers decide what to send;
//! they do no I/O.

use crate::proto::{Connection, MessageKind};

/// The echo handler: every message goes back to its sender as one message of
/// the same type. The payload buffer is moved into the output queue, not copied.
pub fn echo(conn: &mut Connection, kind: MessageKind, data: Vec<u8>) {
    conn.send(kind, data);
}
