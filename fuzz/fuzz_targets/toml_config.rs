#![no_main]
use libfuzzer_sys::fuzz_target;
fuzz_target!(|data: &[u8]| rmirror::fuzzing::toml_config(data));
