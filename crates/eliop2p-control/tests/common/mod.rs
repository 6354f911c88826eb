//! Helpers shared by the control plane's API tests.
#![allow(dead_code)]

use std::time::Duration;

use bytes::Bytes;
use eliop2p_control::{ControlConfig, ControlHandle, RedisConfig, spawn_control_plane};
use eliop2p_testkit::{TestClient, TestResponse};
use http::{Method, StatusCode};
use serde_json::{Value, json};

pub const TOKEN: &str = "cp-test-token";

pub fn cfg(dir: Option<&std::path::Path>) -> ControlConfig {
    let mut c = ControlConfig {
        token: Some(TOKEN.to_owned()),
        data_dir: dir.map(|d| d.to_path_buf()),
        ..ControlConfig::default()
    };
    c.timing.suspect_after = Duration::from_millis(400);
    c.timing.dead_after = Duration::from_millis(900);
    c.replication_interval = Duration::from_millis(100);
    c.replication.hot_threshold = 2;
    c
}

pub async fn start(c: ControlConfig) -> ControlHandle {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    spawn_control_plane(c, l).await.unwrap()
}

pub struct Api {
    pub base: String,
    pub client: TestClient,
}

impl Api {
    pub fn new(h: &ControlHandle) -> Self {
        Self {
            base: format!("http://{}", h.addr),
            client: TestClient::new(),
        }
    }

    pub async fn call(&self, method: Method, path: &str, body: Option<Value>) -> TestResponse {
        self.raw(method, path, body.map(|b| b.to_string()), Some(TOKEN))
            .await
    }

    pub async fn raw(
        &self,
        method: Method,
        path: &str,
        body: Option<String>,
        token: Option<&str>,
    ) -> TestResponse {
        let auth = token.map(|t| format!("Bearer {t}"));
        let mut headers = vec![("content-type", "application/json")];
        if let Some(a) = &auth {
            headers.push(("authorization", a.as_str()));
        }
        self.client
            .request(
                method,
                &format!("{}{path}", self.base),
                &headers,
                Bytes::from(body.unwrap_or_default()),
            )
            .await
            .unwrap()
    }
}

pub fn json_of(r: &TestResponse) -> Value {
    serde_json::from_slice(&r.body).unwrap_or_else(|e| panic!("not JSON ({e}): {:?}", r.body))
}

pub fn chunk(i: u8) -> String {
    hex_of([i; 32])
}

pub fn hex_of(b: [u8; 32]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

pub async fn register(api: &Api, id: &str, port: u16, zone: &str) {
    let r = api
        .call(
            Method::POST,
            "/api/v1/nodes",
            Some(json!({
                "node_id": id,
                "p2p_addr": format!("127.0.0.1:{port}"),
                "capacity": {"memory_bytes": 1 << 30},
                "labels": {"zone": zone},
            })),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
    assert_eq!(json_of(&r)["node_id"], id);
}

pub async fn eventually<F: AsyncFnMut() -> bool>(what: &str, within: Duration, mut f: F) {
    let deadline = tokio::time::Instant::now() + within;
    while !f().await {
        assert!(tokio::time::Instant::now() < deadline, "not within {within:?}: {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

pub async fn node_ids(api: &Api) -> Vec<String> {
    let r = api.call(Method::GET, "/api/v1/nodes", None).await;
    if r.status != StatusCode::OK {
        return Vec::new();
    }
    json_of(&r)["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n["node_id"].as_str().unwrap().to_owned())
        .collect()
}

pub async fn metric(api: &Api, name: &str) -> Option<u64> {
    let r = api.raw(Method::GET, "/metrics", None, None).await;
    let text = String::from_utf8_lossy(&r.body).into_owned();
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
}

pub async fn heartbeat(api: &Api, node: &str) -> TestResponse {
    api.call(Method::PUT, &format!("/api/v1/nodes/{node}/heartbeat"), Some(json!({})))
        .await
}

/// A shared store at `url` with the tests' prefix and a short lease.
pub fn store(url: String) -> RedisConfig {
    RedisConfig {
        url,
        prefix: "test:".into(),
        lease: Duration::from_millis(900),
        ..RedisConfig::default()
    }
}

/// A replica's configuration on `store`.
pub fn replica_on(store: RedisConfig) -> ControlConfig {
    let mut c = cfg(None);
    c.redis = Some(store);
    c.timing.suspect_after = Duration::from_secs(3);
    c.timing.dead_after = Duration::from_secs(6);
    c
}

/// Whether a replica serves its API (its store is reachable and loaded).
pub async fn serving(api: &Api) -> bool {
    api.call(Method::GET, "/api/v1/nodes", None).await.status == StatusCode::OK
}
