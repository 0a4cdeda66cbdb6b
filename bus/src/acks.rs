//! Acknowledgements of one consumer's deliveries, sent as few `basic.ack` frames as the
//! rule "ack only what was handled" allows.
//!
//! Handlers finish in any order. One task per consumer learns which deliveries arrived and
//! which finished, and after each wake-up acks with `multiple` everything below the oldest
//! delivery still being handled (one frame for a whole batch of heartbeats), and one by one
//! what finished above it (a long command never holds back the acks of later messages, so
//! they never fill the prefetch window).

use lapin::Channel;
use lapin::options::BasicAckOptions;
use std::collections::BTreeSet;
use tokio::sync::mpsc;

/// What a consumer tells its acker about one delivery tag.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Event {
    /// The broker delivered it; a handler has it now.
    Delivered(u64),
    /// Handled: ack it.
    Handled(u64),
    /// Settled otherwise (rejected to the dead letters); the frame has been sent already.
    Settled(u64),
}

/// One `basic.ack` to send.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Ack {
    pub(crate) tag: u64,
    pub(crate) multiple: bool,
}

/// Which deliveries are being handled and which wait for their ack.
#[derive(Default)]
pub(crate) struct AckWindow {
    in_progress: BTreeSet<u64>,
    handled: Vec<u64>,
}

impl AckWindow {
    pub(crate) fn apply(&mut self, event: Event) {
        match event {
            Event::Delivered(tag) => {
                self.in_progress.insert(tag);
            }
            Event::Handled(tag) => {
                self.in_progress.remove(&tag);
                self.handled.push(tag);
            }
            Event::Settled(tag) => {
                self.in_progress.remove(&tag);
            }
        }
    }

    /// The acks that settle everything handled so far. A `multiple` ack on tag `t` settles
    /// every unsettled tag up to `t`; it is used only below the oldest delivery in progress,
    /// where every tag is handled or settled already, and always on a tag still unsettled.
    pub(crate) fn take_acks(&mut self) -> Vec<Ack> {
        if self.handled.is_empty() {
            return Vec::new();
        }
        self.handled.sort_unstable();
        let oldest_in_progress = self.in_progress.first().copied().unwrap_or(u64::MAX);
        let below = self
            .handled
            .partition_point(|&tag| tag < oldest_in_progress);
        let mut acks = Vec::with_capacity(1 + self.handled.len() - below);
        if below > 0 {
            acks.push(Ack {
                tag: self.handled[below - 1],
                multiple: true,
            });
        }
        acks.extend(self.handled[below..].iter().map(|&tag| Ack {
            tag,
            multiple: false,
        }));
        self.handled.clear();
        acks
    }
}

/// Starts the acker of `channel`'s consumer; it ends when every sender is dropped (the
/// consumer and all its handlers are done) or the channel fails.
pub(crate) fn start(channel: Channel, queue: std::sync::Arc<str>) -> mpsc::UnboundedSender<Event> {
    let (events, mut received) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        let mut window = AckWindow::default();
        let mut batch = Vec::with_capacity(256);
        while received.recv_many(&mut batch, 4096).await > 0 {
            for event in batch.drain(..) {
                window.apply(event);
            }
            // Each frame is queued in order at the first poll; they are sent together.
            let sent = futures::future::join_all(window.take_acks().into_iter().map(|ack| {
                channel.basic_ack(
                    ack.tag,
                    BasicAckOptions {
                        multiple: ack.multiple,
                    },
                )
            }))
            .await;
            if let Some(Err(error)) = sent.into_iter().find(Result::is_err) {
                tracing::warn!(queue = %queue, %error, "ack failed; unacknowledged messages will be redelivered");
                return;
            }
        }
    });
    events
}

#[cfg(test)]
mod tests {
    use super::*;

    fn window(events: &[Event]) -> AckWindow {
        let mut window = AckWindow::default();
        for &event in events {
            window.apply(event);
        }
        window
    }

    fn ack(tag: u64, multiple: bool) -> Ack {
        Ack { tag, multiple }
    }

    #[test]
    fn a_batch_handled_in_any_order_is_one_multiple_ack() {
        use Event::*;
        let mut w = window(&[
            Delivered(1),
            Delivered(2),
            Delivered(3),
            Handled(3),
            Handled(1),
            Handled(2),
        ]);
        assert_eq!(w.take_acks(), vec![ack(3, true)]);
        assert_eq!(w.take_acks(), vec![]);
    }

    #[test]
    fn a_long_handler_holds_back_no_later_ack() {
        use Event::*;
        let mut w = window(&[
            Delivered(1),
            Delivered(2),
            Delivered(3),
            Handled(2),
            Handled(3),
        ]);
        assert_eq!(w.take_acks(), vec![ack(2, false), ack(3, false)]);
        w.apply(Handled(1));
        // 2 and 3 are settled; the multiple ack on 1 settles only 1.
        assert_eq!(w.take_acks(), vec![ack(1, true)]);
    }

    #[test]
    fn rejected_tags_are_skipped_and_never_the_target_of_an_ack() {
        use Event::*;
        let mut w = window(&[
            Delivered(1),
            Delivered(2),
            Delivered(3),
            Handled(1),
            Settled(3),
            Handled(2),
        ]);
        assert_eq!(w.take_acks(), vec![ack(2, true)]);
        let mut w = window(&[Delivered(4), Delivered(5), Settled(5), Handled(4)]);
        assert_eq!(w.take_acks(), vec![ack(4, true)]);
    }

    #[test]
    fn acks_below_the_oldest_in_progress_coalesce_and_the_rest_go_one_by_one() {
        use Event::*;
        let mut w = window(&[
            Delivered(1),
            Delivered(2),
            Delivered(3),
            Delivered(4),
            Delivered(5),
            Handled(1),
            Handled(2),
            Handled(4),
            Handled(5),
        ]);
        assert_eq!(
            w.take_acks(),
            vec![ack(2, true), ack(4, false), ack(5, false)]
        );
    }
}
