//! The P2P frame decoder (`eliop2p_p2p::codec::decode`) on arbitrary bytes, under
//! the pre-handshake limits and the member limits: it never panics, never returns
//! a frame longer than the limits allow, consumes exactly the frame it returns, and
//! every frame it returns encodes back to the bytes it was read from.
#![no_main]

use bytes::BytesMut;
use eliop2p_p2p::codec::{Limits, decode};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    for limits in [Limits::HANDSHAKE, Limits::default()] {
        let mut buf = BytesMut::from(data);
        // Frames one after another, as a connection reads them.
        while let Ok(Some(frame)) = decode(&mut buf, &limits) {
            assert!(frame.chunk_id.len() <= limits.max_chunk_id);
            assert!(frame.data.len() <= limits.max_data);
            let mut again = BytesMut::new();
            frame.encode(&mut again);
            assert_eq!(again.len(), frame.encoded_len());
            let consumed = data.len() - buf.len();
            let start = consumed - again.len();
            assert_eq!(&data[start..consumed], &again[..], "a frame re-encodes to its own bytes");
        }
    }
});
