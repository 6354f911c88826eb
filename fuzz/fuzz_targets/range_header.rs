//! The `Range` header parser: any header text against any object size either
//! fails cleanly or resolves to a non-empty range inside the object.
#![no_main]

use eliop2p_core::RangeRequest;
use eliop2p_core::range::RangeSpec;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if data.len() < 8 {
        return;
    }
    let size = u64::from_le_bytes(data[..8].try_into().expect("8 bytes")) >> (data[0] % 64);
    let Ok(header) = std::str::from_utf8(&data[8..]) else { return };
    if let Ok(RangeRequest::Single(spec)) = RangeRequest::parse(header) {
        if let Ok(r) = spec.resolve(size) {
            assert!(r.start < r.end, "{header:?} on {size}: empty range {r:?}");
            assert!(r.end <= size, "{header:?} on {size}: {r:?} beyond the object");
            if let RangeSpec::FromTo(a, _) | RangeSpec::From(a) = spec {
                assert_eq!(r.start, a);
            }
        }
    }
});
