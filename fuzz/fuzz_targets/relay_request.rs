#![no_main]

use std::time::Instant;

use libfuzzer_sys::fuzz_target;

// The relay machine only records `now`, so any reading will do.
fuzz_target!(|data: &[u8]| relay_core::fuzzing::relay_request(Instant::now(), data));
