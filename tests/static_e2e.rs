//! The page server of a worker listener (`static_dir`): files with validators (a reload gets a
//! 304, not the file again), the WebSocket upgrade on `/` still going to the engine, and no
//! path — `..`, or a symlink — that leads outside the directory.

mod common;

use std::time::Duration;

use common::EngineProc;

/// The page is served with validators: a reload revalidates (304) instead of downloading it
/// again, types are right, and the WebSocket upgrade on `/` still goes to the engine.
#[actix::test]
async fn static_files_are_revalidated_not_downloaded_again() {
    let dir = tempfile::tempdir().unwrap();
    let site = dir.path().join("site");
    std::fs::create_dir(&site).unwrap();
    std::fs::write(site.join("index.html"), "<h1>home</h1>").unwrap();
    std::fs::write(site.join("app.js"), "console.log(1)").unwrap();
    let config = format!(
        "workers:\n  - name: iii-worker-manager\n    config:\n      host: 127.0.0.1\n      port: 0\n      static_dir: {}\n",
        site.display()
    );
    let engine = EngineProc::start(&config);
    let base = engine.url(0).replace("ws://", "http://");
    let client = awc::Client::new();
    let first = client.get(format!("{base}/")).send().await.unwrap();
    assert_eq!(first.status().as_u16(), 200);
    let etag = first.headers().get("etag").expect("an ETag").clone();
    assert!(first.headers().get("last-modified").is_some());
    assert_eq!(first.headers().get("cache-control").unwrap(), "no-cache");
    let again = client
        .get(format!("{base}/"))
        .insert_header(("if-none-match", etag))
        .send()
        .await
        .unwrap();
    assert_eq!(again.status().as_u16(), 304);
    let js = client.get(format!("{base}/app.js")).send().await.unwrap();
    assert!(js
        .headers()
        .get("content-type")
        .unwrap()
        .to_str()
        .unwrap()
        .contains("javascript"));
    let mut ws = common::RawWs::connect(&engine.url(0)).await;
    assert!(
        matches!(ws.next(Duration::from_secs(5)).await, Some(common::RawEvent::Json(v)) if v["type"] == "workerregistered")
    );
}

/// The page server does not follow symlinks out of its directory.
#[actix::test]
async fn static_files_never_leave_their_directory() {
    let dir = tempfile::tempdir().unwrap();
    let site = dir.path().join("site");
    std::fs::create_dir(&site).unwrap();
    std::fs::write(site.join("index.html"), "<h1>home</h1>").unwrap();
    std::fs::write(dir.path().join("outside.txt"), "secret").unwrap();
    std::os::unix::fs::symlink("/etc", site.join("etc")).unwrap();
    std::os::unix::fs::symlink(dir.path().join("outside.txt"), site.join("leak.txt")).unwrap();
    let config = format!(
        "workers:\n  - name: iii-worker-manager\n    config:\n      host: 127.0.0.1\n      port: 0\n      static_dir: {}\n      rbac: {{}}\n",
        site.display()
    );
    let engine = EngineProc::start(&config);
    let base = engine.url(0).replace("ws://", "http://");
    let get = |path: &str| {
        let url = format!("{base}{path}");
        async move {
            let mut resp = awc::Client::new().get(url).send().await.unwrap();
            let body = resp.body().await.unwrap();
            (
                resp.status().as_u16(),
                String::from_utf8_lossy(&body).to_string(),
            )
        }
    };
    assert_eq!(get("/").await, (200, "<h1>home</h1>".to_string()));
    for path in ["/etc/hostname", "/etc/passwd", "/leak.txt"] {
        let (status, body) = get(path).await;
        assert_eq!(status, 404, "{path}: {body}");
    }
}
