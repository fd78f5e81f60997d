//! The limits parser, as `rein run`/`set`, the API and annotations feed it: lines of
//! `name=value`. It must never panic, and whatever it accepts must print as flags that parse
//! back to the same limits.
#![no_main]

use controller::limits::Limits;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let pairs: Vec<(&str, &str)> = text.lines().filter_map(|l| l.split_once('=')).collect();
    if let Ok(limits) = Limits::from_named_pairs(pairs) {
        let shown = limits.to_pairs();
        let again = Limits::from_pairs(shown.iter().map(|(f, v)| (*f, v.as_str())))
            .unwrap_or_else(|e| panic!("{limits:?} printed as {shown:?}, which fails: {e}"));
        assert_eq!(again, limits, "round trip through {shown:?}");
    }
});
