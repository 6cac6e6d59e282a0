//! Free loopback ports. A port is found by binding `127.0.0.1:0` and releasing it; a
//! process-wide set makes sure that two clusters in the same test binary never get the same
//! port even if the kernel hands it out again before the first one is listening.

use std::{
    collections::HashSet,
    net::TcpListener,
    sync::{Mutex, OnceLock},
};

fn handed_out() -> &'static Mutex<HashSet<u16>> {
    static PORTS: OnceLock<Mutex<HashSet<u16>>> = OnceLock::new();
    PORTS.get_or_init(|| Mutex::new(HashSet::new()))
}

/// A `127.0.0.1` port that nothing listens on now and that this process has not handed out
/// before.
///
/// # Panics
/// When no port can be bound after many tries (the machine is out of ports).
pub fn free_port() -> u16 {
    for _ in 0..1000 {
        let listener = TcpListener::bind("127.0.0.1:0").expect("binding 127.0.0.1:0");
        let port = listener.local_addr().expect("local_addr").port();
        drop(listener);
        let mut set = handed_out().lock().unwrap_or_else(|e| e.into_inner());
        if set.insert(port) {
            return port;
        }
    }
    panic!("no free 127.0.0.1 port found after 1000 tries")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ports_are_distinct_and_bindable() {
        let ports: Vec<u16> = (0..50).map(|_| free_port()).collect();
        let set: HashSet<u16> = ports.iter().copied().collect();
        assert_eq!(set.len(), ports.len());
        for p in ports.iter().take(5) {
            TcpListener::bind(("127.0.0.1", *p)).expect("port should be free");
        }
    }
}
