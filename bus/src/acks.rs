//! Acknowledgements of one consumer's deliveries, sent as few `basic.ack` frames as the
//! rule "ack only what was handled" allows, and the broker's confirms of its replies.
//!
//! Handlers finish in any order. One task per consumer learns which deliveries arrived and
//! which finished, and after each wake-up acks with `multiple` everything below the oldest
//! delivery still being handled (one frame for a whole batch of heartbeats), and one by one
//! what finished above it (a long command never holds back the acks of later messages, so
//! they never fill the prefetch window).
//!
//! Replies are published with confirms, like every publish. The same task takes each
//! reply's confirm and looks at it on its wake-ups (the next delivery comes after it, as a
//! rule), without being woken by it: a confirm awaited on its own would cost a wake-up of
//! the consumer's thread per call. When confirms are still due and nothing else happens, it
//! looks again after [`REPLY_CONFIRM_LOOK_FIRST`], then twice as late each time, up to
//! [`REPLY_CONFIRM_LOOK_MAX`]. A reply the broker refused is logged and counted: the call it
//! answers fails at its deadline, and the caller's retry under the same operation id gets
//! the first result from the receiver's journal. The ack of the request does not wait for
//! the confirm: it is sent after the reply on the same channel, so a broker that has the
//! ack has routed the reply.

use futures::FutureExt;
use lapin::options::BasicAckOptions;
use lapin::{Channel, PublisherConfirm};
use std::collections::{BTreeSet, VecDeque};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;
use tokio::sync::mpsc;
use uuid::Uuid;

/// How long after its last wake-up the acker looks at reply confirms still due, when
/// nothing else wakes it; twice as long each time after, up to [`REPLY_CONFIRM_LOOK_MAX`].
pub(crate) const REPLY_CONFIRM_LOOK_FIRST: Duration = Duration::from_millis(5);
pub(crate) const REPLY_CONFIRM_LOOK_MAX: Duration = Duration::from_secs(1);

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

/// What a consumer and its handlers tell the acker.
pub(crate) enum Notice {
    Tag(Event),
    /// A reply was published; its confirm is due. The id is the call's, for the log.
    Replied(Uuid, PublisherConfirm),
}

impl From<Event> for Notice {
    fn from(event: Event) -> Notice {
        Notice::Tag(event)
    }
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

/// The confirms of published replies, oldest first (the broker confirms a channel's
/// publishes in order).
#[derive(Default)]
struct ReplyConfirms {
    due: VecDeque<(Uuid, PublisherConfirm)>,
}

impl ReplyConfirms {
    /// Takes every confirm that has come, without registering to be woken by the rest.
    /// Answers whether the channel is gone.
    fn look(&mut self, queue: &str, refused: &AtomicU64) -> bool {
        while let Some((id, confirm)) = self.due.front_mut() {
            let Some(confirmation) = confirm.now_or_never() else {
                return false;
            };
            let id = *id;
            self.due.pop_front();
            if !settled(queue, id, confirmation, refused) {
                self.due.clear();
                return true;
            }
        }
        false
    }

    /// Once the consumer is done: awaits the last confirms, so lapin is left holding none.
    async fn finish(self, queue: &str, refused: &AtomicU64) {
        for (id, confirm) in self.due {
            if !settled(queue, id, confirm.await, refused) {
                return;
            }
        }
    }
}

/// Counts and logs a reply the broker refused; answers false when the channel is gone.
fn settled(
    queue: &str,
    id: Uuid,
    confirmation: Result<lapin::Confirmation, lapin::Error>,
    refused: &AtomicU64,
) -> bool {
    match confirmation {
        Ok(confirmation) => {
            if confirmation.is_nack() {
                refused.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(queue, call = %id, "the broker refused a reply; the call fails at its deadline");
            }
            true
        }
        Err(error) => {
            tracing::warn!(queue, call = %id, %error, "a reply's confirm was lost with the channel");
            false
        }
    }
}

/// Starts the acker of `channel`'s consumer; it ends when every sender is dropped (the
/// consumer and all its handlers are done) or the channel fails, once it has sent the
/// last acks: the handle it returns resolves then. `refused_replies` counts the replies
/// the broker refused.
pub(crate) fn start(
    channel: Channel,
    queue: Arc<str>,
    refused_replies: Arc<AtomicU64>,
) -> (mpsc::UnboundedSender<Notice>, tokio::task::JoinHandle<()>) {
    let (notices, mut received) = mpsc::unbounded_channel();
    let acker = tokio::spawn(async move {
        let mut window = AckWindow::default();
        let mut replies = ReplyConfirms::default();
        let mut batch = Vec::with_capacity(256);
        let mut look_after = REPLY_CONFIRM_LOOK_FIRST;
        loop {
            let woken = if replies.due.is_empty() {
                received.recv_many(&mut batch, 4096).await
            } else {
                match tokio::time::timeout(look_after, received.recv_many(&mut batch, 4096)).await {
                    Ok(n) => n,
                    Err(_) => {
                        look_after = (look_after * 2).min(REPLY_CONFIRM_LOOK_MAX);
                        if replies.look(&queue, &refused_replies) {
                            return;
                        }
                        continue;
                    }
                }
            };
            if woken == 0 {
                break;
            }
            look_after = REPLY_CONFIRM_LOOK_FIRST;
            for notice in batch.drain(..) {
                match notice {
                    Notice::Tag(event) => window.apply(event),
                    Notice::Replied(id, confirm) => replies.due.push_back((id, confirm)),
                }
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
            if replies.look(&queue, &refused_replies) {
                return;
            }
        }
        // Every sender is gone.
        replies.finish(&queue, &refused_replies).await;
    });
    (notices, acker)
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
