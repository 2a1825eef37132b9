//! The message bodies and the raw baselines' record header: the criterion
//! benches' own definitions (`benches/common/plain.rs`, included into
//! `lib.rs`), so the inputs and the raw record layout are byte for byte
//! theirs.

pub use crate::plain::{raw_header, Bodies};
