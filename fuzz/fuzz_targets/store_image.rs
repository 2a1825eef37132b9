//! Fuzz target: open a damaged directory image
//! (`mqstore::fuzzing::run_plan`). The open may refuse with a typed error;
//! once open, nothing served may contradict what was sent, and damage to
//! derived files alone must lose nothing.
#![no_main]

use libfuzzer_sys::fuzz_target;
use mqstore::fuzzing::{run_plan, Plan};

fuzz_target!(|plan: Plan| {
    if let Ok(report) = run_plan(&plan) {
        assert!(report.violations.is_empty(), "{plan:?}: {:?}", report.violations);
        assert_eq!(report.lost, 0, "{plan:?}: derived-data damage lost messages");
    }
});
