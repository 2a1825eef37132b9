//! Fuzz target: `mqstore::fuzzing::metadata` (see its docs). Any `Err` is a
//! fine outcome; a panic, hang or unbounded allocation is a bug.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = mqstore::fuzzing::metadata(data);
});
