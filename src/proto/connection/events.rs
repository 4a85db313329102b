//! The event queue: events for the application and the replies the core
//! makes itself (pongs, our close), in the order their causes arrived.

use std::collections::VecDeque;

use super::{Connection, Event};

#[derive(Debug)]
pub(super) enum Item {
    Event(Event),
    Pong(Vec<u8>),
    Close(Vec<u8>),
    /// The application answered the message before this (see the `close`
    /// and `drop` knobs).
    Answered,
}

/// The item queue behind a box that exists once something was queued (an idle
/// connection holds 8 bytes for it).
/// (Boxed on purpose: 8 bytes inline instead of a 32-byte `VecDeque`.)
#[derive(Debug, Default)]
#[allow(clippy::box_collection)]
pub(super) struct Items(Option<Box<VecDeque<Item>>>);

impl Items {
    pub(super) fn push_back(&mut self, item: Item) {
        self.0.get_or_insert_with(Box::default).push_back(item);
    }

    fn pop_front(&mut self) -> Option<Item> {
        self.0.as_mut()?.pop_front()
    }

    pub(super) fn is_empty(&self) -> bool {
        self.0.as_ref().is_none_or(|q| q.is_empty())
    }

    /// Frees the storage if empty.
    pub(super) fn release(&mut self) {
        if self.is_empty() {
            self.0 = None;
        }
    }

    /// Heap bytes held by queued items and the queue itself.
    pub(super) fn memory(&self) -> usize {
        self.0.as_ref().map_or(0, |q| {
            let data: usize = q
                .iter()
                .map(|item| match item {
                    Item::Event(Event::Message { data, .. } | Event::Fragment { data, .. })
                    | Item::Pong(data)
                    | Item::Event(Event::Body(Ok(data)))
                    | Item::Close(data) => data.capacity(),
                    Item::Event(_) | Item::Answered => 0,
                })
                .sum();
            data + q.capacity() * std::mem::size_of::<Item>()
        })
    }

    /// Drops the pieces of the message still arriving that the application
    /// has not taken yet (the items after the last complete message), so a
    /// failing message is not echoed further. Replies queued among them stay.
    pub(super) fn drop_unfinished_pieces(&mut self) {
        let Some(q) = self.0.as_mut() else { return };
        let start = q
            .iter()
            .rposition(|item| {
                matches!(
                    item,
                    Item::Event(Event::Message { .. } | Event::Fragment { fin: true, .. })
                )
            })
            .map_or(0, |i| i + 1);
        let mut i = 0;
        q.retain(|item| {
            i += 1;
            i <= start || !matches!(item, Item::Event(Event::Fragment { .. }))
        });
    }

    /// Whether the last piece of a streamed message is waiting to be taken.
    pub(super) fn has_final_piece(&self) -> bool {
        self.0.as_ref().is_some_and(|q| {
            q.iter()
                .any(|item| matches!(item, Item::Event(Event::Fragment { fin: true, .. })))
        })
    }

    /// Drops every data message and piece not yet taken (replies stay).
    pub(super) fn drop_data(&mut self) {
        if let Some(q) = self.0.as_mut() {
            q.retain(|item| {
                !matches!(
                    item,
                    Item::Event(Event::Message { .. } | Event::Fragment { .. })
                )
            });
        }
    }
}

impl Connection {
    /// The next event for the application.
    ///
    /// Poll until `None`: the pongs and the close frame that follow received
    /// messages are queued as they come due, after the application had its chance
    /// to answer the messages before them.
    pub fn poll_event(&mut self) -> Option<Event> {
        loop {
            match self.items.pop_front()? {
                Item::Event(e) => return Some(e),
                Item::Pong(payload) => self.queue_pong(payload),
                Item::Close(body) => self.emit_close(body),
                Item::Answered => self.answered(),
            }
        }
    }
}
