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

use std::io;
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// A loopback TCP proxy that a test can cut and restore: the fault of a broker that
/// becomes unreachable (every open connection reset, new ones refused) and comes back
/// with its state intact. Forwards `listen` to `target`; stops when dropped.
#[derive(Debug)]
pub struct CutProxy {
    /// Where clients connect.
    pub listen: SocketAddr,
    shared: Arc<Shared>,
    accept: Option<std::thread::JoinHandle<()>>,
}

#[derive(Debug)]
struct Shared {
    target: SocketAddr,
    listener: Mutex<Option<TcpListener>>,
    conns: Mutex<Vec<TcpStream>>,
    stop: AtomicBool,
}

fn bind(addr: SocketAddr) -> io::Result<TcpListener> {
    // Rust's listener sets SO_REUSEADDR, so the port can be bound again after a cut
    // even while closed connections linger in TIME_WAIT.
    let l = TcpListener::bind(addr)?;
    l.set_nonblocking(true)?;
    Ok(l)
}

fn pipe(mut from: TcpStream, mut to: TcpStream) {
    let _ = io::copy(&mut from, &mut to);
    let _ = to.shutdown(Shutdown::Write);
}

impl CutProxy {
    /// Starts forwarding `listen` (a loopback address; port 0 = a free one) to `target`.
    pub fn start(listen: SocketAddr, target: SocketAddr) -> io::Result<CutProxy> {
        let l = bind(listen)?;
        let listen = l.local_addr()?;
        let shared = Arc::new(Shared {
            target,
            listener: Mutex::new(Some(l)),
            conns: Mutex::new(Vec::new()),
            stop: AtomicBool::new(false),
        });
        let s = shared.clone();
        let accept = std::thread::spawn(move || {
            while !s.stop.load(Ordering::Acquire) {
                let got = s.listener.lock().unwrap().as_ref().map(|l| l.accept());
                match got {
                    Some(Ok((client, _))) => {
                        let Ok(server) = TcpStream::connect(s.target) else {
                            continue;
                        };
                        let _ = client.set_nonblocking(false);
                        let _ = client.set_nodelay(true);
                        let _ = server.set_nodelay(true);
                        let (c2, s2) = (client.try_clone().unwrap(), server.try_clone().unwrap());
                        s.conns
                            .lock()
                            .unwrap()
                            .extend([client.try_clone().unwrap(), server.try_clone().unwrap()]);
                        std::thread::spawn(move || pipe(client, server));
                        std::thread::spawn(move || pipe(s2, c2));
                    }
                    Some(Err(e)) if e.kind() != io::ErrorKind::WouldBlock => {}
                    _ => std::thread::sleep(Duration::from_millis(5)),
                }
            }
        });
        Ok(CutProxy {
            listen,
            shared,
            accept: Some(accept),
        })
    }

    /// Cuts: closes the listening socket (new connections are refused) and resets
    /// every open connection.
    pub fn cut(&self) {
        self.shared.listener.lock().unwrap().take();
        for c in self.shared.conns.lock().unwrap().drain(..) {
            let _ = c.shutdown(Shutdown::Both);
        }
    }

    /// Listens again on the same address.
    pub fn restore(&self) -> io::Result<()> {
        let mut l = self.shared.listener.lock().unwrap();
        if l.is_none() {
            *l = Some(bind(self.listen)?);
        }
        Ok(())
    }
}

impl Drop for CutProxy {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::Release);
        self.cut();
        if let Some(t) = self.accept.take() {
            let _ = t.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};

    fn echo() -> SocketAddr {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        std::thread::spawn(move || {
            for mut c in l.incoming().flatten() {
                std::thread::spawn(move || {
                    let mut buf = [0u8; 64];
                    while let Ok(n) = c.read(&mut buf) {
                        if n == 0 || c.write_all(&buf[..n]).is_err() {
                            break;
                        }
                    }
                });
            }
        });
        addr
    }

    fn round_trip(addr: SocketAddr, msg: &[u8]) -> io::Result<Vec<u8>> {
        let mut c = TcpStream::connect(addr)?;
        c.set_read_timeout(Some(Duration::from_secs(5)))?;
        c.write_all(msg)?;
        let mut got = vec![0u8; msg.len()];
        c.read_exact(&mut got)?;
        Ok(got)
    }

    #[test]
    fn forwards_refuses_while_cut_and_forwards_again_after_restore() {
        let p = CutProxy::start("127.0.0.1:0".parse().unwrap(), echo()).unwrap();
        let mut open = TcpStream::connect(p.listen).unwrap();
        open.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        assert_eq!(round_trip(p.listen, b"before").unwrap(), b"before");
        open.write_all(b"x").unwrap();
        let mut one = [0u8; 1];
        open.read_exact(&mut one).unwrap();
        p.cut();
        // The open connection is closed, a new one refused.
        assert_eq!(open.read(&mut one).unwrap_or(0), 0);
        assert_eq!(
            TcpStream::connect(p.listen).unwrap_err().kind(),
            io::ErrorKind::ConnectionRefused
        );
        p.restore().unwrap();
        assert_eq!(round_trip(p.listen, b"after").unwrap(), b"after");
    }
}
