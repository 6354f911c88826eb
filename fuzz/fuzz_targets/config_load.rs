//! The config loader (`eliop2p::config::Effective::load`) on any file text, and on
//! any value of one environment variable: it loads or fails with an error naming
//! the file or a key, never a panic; a loaded config builds the node's config or
//! says why not.
#![no_main]

use eliop2p::config::Effective;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    match Effective::load(Some(("fuzz.toml", text)), &[], &[]) {
        Ok(e) => {
            let _ = e.node_config();
            let _ = e.proxy_listen();
            let _ = e.to_toml();
        }
        Err(e) => {
            let msg = format!("{e:#}");
            assert!(msg.contains("fuzz.toml") || msg.contains("config key") || msg.contains("unknown"), "{msg}");
        }
    }
    // The same bytes as the value of a real key's environment variable.
    if text.len() <= 256 {
        let env = [("ELIOP2P_CACHE_MEMORY_SIZE".to_owned(), text.to_owned())];
        if let Err(e) = Effective::load(None, &env, &[]) {
            assert!(format!("{e:#}").contains("cache.memory_size"), "{e:#}");
        }
    }
});
