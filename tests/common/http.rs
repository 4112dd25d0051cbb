//! HTTP helpers of the e2e tests: a client with a generous timeout, and a request's status,
//! headers and whole body.
#![allow(dead_code)]

use std::time::Duration;

use serde_json::Value;

pub fn client() -> awc::Client {
    awc::Client::builder()
        .timeout(Duration::from_secs(20))
        .finish()
}

/// Status, headers and the whole body of a response.
pub struct Got {
    pub status: u16,
    pub headers: awc::http::header::HeaderMap,
    pub body: Vec<u8>,
}

impl Got {
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(&self.body)))
    }
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
}

pub async fn send(req: awc::ClientRequest, body: Option<(&str, Vec<u8>)>) -> Got {
    let resp = match body {
        Some((ct, bytes)) => {
            req.insert_header(("content-type", ct))
                .send_body(bytes)
                .await
        }
        None => req.send().await,
    };
    let mut resp = resp.expect("request");
    let body = resp.body().limit(64 << 20).await.expect("body").to_vec();
    Got {
        status: resp.status().as_u16(),
        headers: resp.headers().clone(),
        body,
    }
}
