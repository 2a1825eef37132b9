//! Fuzz target: open a damaged directory image of a store that log
//! retention has trimmed (`mqstore::fuzzing::run_plan_on` with
//! `BaseImage::Retained`): its consume queues begin with units whose
//! records are gone, and a group's committed offset lies below them. The
//! open may refuse with a typed error; once open, nothing served may
//! contradict what was sent, and damage to derived files alone must lose
//! none of the messages retention kept.
#![no_main]

use libfuzzer_sys::fuzz_target;
use mqstore::fuzzing::{run_plan_on, BaseImage, Plan};

fuzz_target!(|plan: Plan| {
    if let Ok(report) = run_plan_on(BaseImage::Retained, &plan) {
        assert!(report.violations.is_empty(), "{plan:?}: {:?}", report.violations);
        assert_eq!(report.lost, 0, "{plan:?}: derived-data damage lost messages");
    }
});
