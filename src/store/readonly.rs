//! [`StoreView`]: read-only access to a store directory that takes no lock
//! and changes nothing, so it works beside a live writer.

/// Read-only view of a store directory.
#[derive(Debug)]
pub struct StoreView {}
