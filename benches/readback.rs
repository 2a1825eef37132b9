//! Read-back benchmark (being written).
fn main() {}
