//! Messages: the user-facing [`Message`], its stored form [`MessageExt`],
//! the RocketMQ properties encoding ([`properties`]) and both message ids.
//!
//! A message's tag, keys, delay level and unique id travel as properties in
//! its commit-log record, so the record format needs no fields for them; the
//! [`properties`] module names them with RocketMQ's spellings.

mod ext;
mod id;
// The file is named after its main type, as the other modules' files are.
#[allow(clippy::module_inception)]
mod message;
mod message_id;
mod msgref;
pub mod properties;
mod topic_name;

pub use ext::{MessageExt, DEFAULT_STORE_HOST, DEFAULT_STORE_PORT};
pub use id::{
    decode_offset_msg_id, encode_offset_msg_id, parse_unique_id, MessageIdGenerator, UniqueIdParts, ID_LEN,
    UNIQUE_ID_HEX_LEN,
};
pub use message::{Message, MessageLimits, DEFAULT_MAX_BODY, DEFAULT_MAX_DELAY_LEVEL, DEFAULT_MAX_PROPERTIES};
pub use message_id::MessageId;
pub use msgref::MessageRef;
pub use properties::{decode_properties, encode_properties};
pub use topic_name::TopicName;
