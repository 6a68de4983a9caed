//! moto_server on a free loopback port: S3 with atomic conditional writes, and SSM.

use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A running moto_server, stopped when dropped.
pub struct Moto {
    child: Child,
    pub addr: SocketAddr,
}

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts moto_server for the tests of `what`; `None` (SKIPPED) if it is not installed and
/// `MAILHOOK_REQUIRE_MOTO` is not set.
pub async fn start(what: &str) -> Option<Moto> {
    let addr = super::closed_port();
    let child = match Command::new("moto_server")
        .args(["-H", "127.0.0.1", "-p", &addr.port().to_string()])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
    {
        Ok(child) => child,
        Err(e) if std::env::var_os("MAILHOOK_REQUIRE_MOTO").is_none() => {
            super::skipped(&format!(
                "{what} against moto: moto_server cannot be started ({e}); tests/all.sh installs it"
            ));
            return None;
        }
        Err(e) => panic!("moto_server cannot be started ({e}): run tests/all.sh, which installs it into .venv"),
    };
    let mut moto = Moto { child, addr };
    let started = Instant::now();
    while tokio::net::TcpStream::connect(addr).await.is_err() {
        assert!(started.elapsed() < Duration::from_secs(60), "moto_server did not start");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Another process may hold the port: then this moto_server exits, and the one answering is
    // not this test's.
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(matches!(moto.child.try_wait(), Ok(None)), "moto_server exited: port {} is taken", addr.port());
    Some(moto)
}
