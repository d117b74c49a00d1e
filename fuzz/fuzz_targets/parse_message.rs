//! Fuzz target: the input is one DHCPv6 message (no TCP prefix).
//!
//! Parsing must never panic; an accepted message must re-emit byte for byte into exactly
//! `buffer_len()` octets, parse again to an equal repr, agree with the raw views, and decode
//! everything nested in it (see `lqd_fuzz::check_message`).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    lqd_fuzz::check_message(data);
});
