//! A full disk under the directory archive: 500, and no partial file left behind. Mounts a
//! 16 KiB tmpfs, which needs root, as the test machines and CI run; as any other user the test
//! says why it cannot run and passes without proving anything.

use crate::support;

use std::process::Command;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use mailhook::archive::DirArchive;
use mailhook::http::router;
use support::*;

struct Tmpfs(tempfile::TempDir);

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(self.0.path()).stderr(std::process::Stdio::null()).status();
    }
}

#[tokio::test]
async fn a_full_disk_is_500_and_leaves_no_partial_file() {
    let mount = Tmpfs(tempfile::tempdir().unwrap());
    let status = Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=16k", "tmpfs"])
        .arg(mount.0.path())
        .stderr(std::process::Stdio::null())
        .status();
    if !status.as_ref().is_ok_and(|s| s.success()) {
        support::skipped(&format!(
            "a_full_disk_is_500_and_leaves_no_partial_file: mounting a 16 KiB tmpfs failed ({status:?}); it needs root"
        ));
        return;
    }
    let app = router(state(DirArchive::open(mount.0.path()).unwrap(), ""));

    let snippet = "x".repeat(64 * 1024);
    let body = format!(r#"{{"mailbox":"a@example.com","uid":1,"event":"new","snippet":"{snippet}"}}"#);
    let reply = call(&app, Request::post("/").header("x-webhook-token", TOKEN).body(Body::from(body)).unwrap()).await;
    assert_eq!(reply.status, StatusCode::INTERNAL_SERVER_ERROR);
    assert_eq!(reply.json()["error"], "Failed to store the event");
    let left: Vec<_> = files(mount.0.path()).into_iter().map(|(name, _)| name).collect();
    assert_eq!(left, [".mailhook.lock"], "no segment, hidden or not");

    // A small event still fits: the archive works again once space is there.
    let small = r#"{"mailbox":"a@example.com","uid":2,"event":"new"}"#;
    let reply = call(&app, Request::post("/").header("x-webhook-token", TOKEN).body(Body::from(small)).unwrap()).await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(stored(mount.0.path()).len(), 1);
}
