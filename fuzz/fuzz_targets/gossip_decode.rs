//! The gossip message decoder (`eliop2p_cluster::Message::decode`) on any message
//! type and payload: it decodes or refuses without a panic, and a decoded message
//! encodes to a payload that decodes to the same message.
#![no_main]

use eliop2p_cluster::Message;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&t, payload)) = data.split_first() else { return };
    // The gossip types (0x20..=0x28) most of the time, any type now and then.
    let message_type = if t < 0xF0 { 0x20 + u32::from(t % 9) } else { u32::from(t) };
    if let Ok(m) = Message::decode(message_type, payload) {
        let again = Message::decode(m.message_type(), &m.payload()).expect("an encoded message decodes");
        assert_eq!(again, m);
    }
});
