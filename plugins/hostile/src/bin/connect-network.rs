//! Attack: reach the network: a TCP connection to a port the test listens on (parameter
//! `port`), a UDP datagram to it, a name lookup, and a listening socket. A stage gets no
//! network at all.
//!
//! Parameters: `port` (string): a TCP and UDP port on 127.0.0.1 the test watches.

use hostile::{Attempts, param};
use std::net::{TcpListener, TcpStream, ToSocketAddrs, UdpSocket};
use std::time::Duration;

fn main() {
    let mut a = Attempts::new();
    let port = param("port").unwrap_or_else(|| "9".into());
    let addr = format!("127.0.0.1:{port}");
    a.expect_refused(
        &format!("tcp connect {addr}"),
        addr.parse()
            .map_err(|e| std::io::Error::other(format!("{e}")))
            .and_then(|sa| TcpStream::connect_timeout(&sa, Duration::from_millis(500))),
    );
    a.expect_refused(
        &format!("tcp connect {addr} (plain)"),
        TcpStream::connect(&addr),
    );
    a.expect_refused(
        &format!("udp send to {addr}"),
        UdpSocket::bind("0.0.0.0:0").and_then(|s| s.send_to(b"PWNED", &addr)),
    );
    a.expect_refused(
        "resolve localhost",
        ("localhost", 80).to_socket_addrs().map(|i| i.count()),
    );
    a.expect_refused(
        "resolve example.com",
        ("example.com", 80).to_socket_addrs().map(|i| i.count()),
    );
    a.expect_refused("listen on 127.0.0.1:0", TcpListener::bind("127.0.0.1:0"));
    a.finish()
}
