//! Loopback ports.

/// A loopback port nothing listens on right now (the OS picks it; a test binds it
/// shortly after, so a clash with another process is possible but unlikely).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}
