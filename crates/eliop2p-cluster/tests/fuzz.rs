//! Fuzzing of the gossip decoder and state machine (proptest; bounded cases,
//! every test run).

use eliop2p_cluster::{Gossip, GossipConfig, Message, NodeInfo};
use proptest::prelude::*;

// Any payload of any message type decodes to a message or an error, and a
// decoded message handled by a node never panics.
proptest! {
    #![proptest_config(ProptestConfig { cases: 4096, ..ProptestConfig::default() })]
    #[test]
    fn fuzz_gossip_decode(t in 0x20u32..0x29, payload in prop::collection::vec(any::<u8>(), 0..600), json in "\\{\"from\":\"[a-z0-9-]{0,8}\",\"(members|chunks)\":\\[.{0,120}\\](,\"reply\":(true|false))?\\}") {
        let me = NodeInfo { id: "me".into(), p2p: "10.0.0.1:9000".parse().unwrap(), proxy: None, zone: String::new(), owner: true };
        let mut g = Gossip::new(me, 1, vec![], GossipConfig::default());
        for p in [&payload[..], json.as_bytes()] {
            if let Ok(m) = Message::decode(t, p) {
                let _ = g.handle_from(1, Some("x"), m.clone());
                let _ = g.handle(1, m);
            }
        }
    }
}

// Probe messages with well-formed JSON and any values: handled without a panic,
// and the node's own incarnation stays within the bound.
proptest! {
    #![proptest_config(ProptestConfig { cases: 2048, ..ProptestConfig::default() })]
    #[test]
    fn fuzz_probe_messages(t in 0x25u32..0x29, json in "\\{\"from\":\\{\"node\":\\{\"id\":\"(me|x|y)\",\"p2p\":\"10\\.0\\.0\\.[1-3]:9000\"\\},\"generation\":[0-9]{1,19},\"incarnation\":[0-9]{1,19},\"status\":\"(alive|suspect|dead|left)\"\\},\"seq\":[0-9]{1,3}(,\"target\":\\{\"id\":\"(me|x|y)\",\"p2p\":\"10\\.0\\.0\\.[1-3]:9000\"\\})?,\"updates\":\\[\\]\\}") {
        let me = NodeInfo { id: "me".into(), p2p: "10.0.0.1:9000".parse().unwrap(), proxy: None, zone: String::new(), owner: true };
        let mut g = Gossip::new(me, 1, vec![], GossipConfig::default());
        if let Ok(m) = Message::decode(t, json.as_bytes()) {
            for now in [1, 2_000, 20_000] {
                let _ = g.handle_from(now, Some("x"), m.clone());
                let _ = g.handle(now, m.clone());
                let _ = g.tick(now);
            }
        }
        prop_assert!(g.incarnation() <= eliop2p_cluster::gossip::MAX_INCARNATION + 1);
    }
}
