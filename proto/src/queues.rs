//! Queue names. On the topic exchange, the routing key of a message is its queue's name.

use uuid::Uuid;

/// The taskmanagers' shared work queue.
pub const TASKMANAGER: &str = "taskmanager";
/// The conductors' shared work queue: everything guests report.
pub const CONDUCTOR: &str = "conductor";
/// RabbitMQ's direct reply-to pseudo-queue.
pub const DIRECT_REPLY_TO: &str = "amq.rabbitmq.reply-to";

/// The queue of one instance's guest agent.
pub fn guest(instance_id: Uuid) -> String {
    format!("guestagent.{instance_id}")
}
