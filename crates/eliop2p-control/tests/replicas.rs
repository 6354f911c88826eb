//! Control-plane replicas sharing their state through a real `redis-server`:
//! registrations, reports, locations and commands through either replica, one
//! planner at a time and a handover when it stops, 503 while Redis is down, and
//! state back when Redis returns (with its data, or empty).

mod common;

use std::time::Duration;

use common::*;
use eliop2p_control::{ControlConfig, ControlHandle};
use eliop2p_testkit::TestRedis;
use http::{Method, StatusCode};
use serde_json::{Value, json};

fn replica_cfg(redis: &TestRedis) -> ControlConfig {
    replica_on(store(redis.url()))
}

async fn holders(api: &Api, c: &str, asker: &str) -> Vec<String> {
    let r = api
        .call(
            Method::POST,
            "/api/v1/chunks/locations",
            Some(json!({"chunks": [c], "node_id": asker})),
        )
        .await;
    if r.status != StatusCode::OK {
        return Vec::new();
    }
    json_of(&r)["locations"][c]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| h["node_id"].as_str().unwrap().to_owned())
        .collect()
}

async fn commands(api: &Api, node: &str) -> Vec<Value> {
    let r = api.call(Method::GET, &format!("/api/v1/nodes/{node}/commands"), None).await;
    if r.status != StatusCode::OK {
        return Vec::new();
    }
    json_of(&r)["commands"].as_array().unwrap().clone()
}

async fn two_replicas(redis: &TestRedis) -> (ControlHandle, ControlHandle, Api, Api) {
    let a = start(replica_cfg(redis)).await;
    let b = start(replica_cfg(redis)).await;
    let (api_a, api_b) = (Api::new(&a), Api::new(&b));
    for api in [&api_a, &api_b] {
        eventually("a replica loaded the shared state", Duration::from_secs(10), async || {
            api.call(Method::GET, "/api/v1/nodes", None).await.status == StatusCode::OK
        })
        .await;
    }
    (a, b, api_a, api_b)
}

#[tokio::test]
async fn replicas_share_state_and_hand_planning_over() {
    let redis = TestRedis::start().await.unwrap();
    let (a, b, api_a, api_b) = two_replicas(&redis).await;
    // Registered at either, listed by both.
    register(&api_a, "n1", 9001, "z1").await;
    register(&api_b, "n2", 9002, "z2").await;
    register(&api_a, "n3", 9003, "z1").await;
    for api in [&api_a, &api_b] {
        eventually("three nodes at each replica", Duration::from_secs(5), async || {
            node_ids(api).await.len() == 3
        })
        .await;
    }
    // A report at b for a node registered at a; the location at a.
    let r = api_b
        .call(
            Method::POST,
            "/api/v1/nodes/n1/chunks",
            Some(json!({"added": [{"id": chunk(1), "len": 100}, {"id": chunk(2), "len": 100}]})),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
    eventually("a hands out b's report", Duration::from_secs(5), async || {
        holders(&api_a, &chunk(1), "n2").await == ["n1"]
    })
    .await;
    // Exactly one replica plans.
    eventually("one replica holds the planning lease", Duration::from_secs(5), async || {
        let (pa, pb) = (
            metric(&api_a, "eliop2p_control_planning").await,
            metric(&api_b, "eliop2p_control_planning").await,
        );
        matches!((pa, pb), (Some(1), Some(0)) | (Some(0), Some(1)))
    })
    .await;
    let a_plans = metric(&api_a, "eliop2p_control_planning").await == Some(1);
    // Demand at the replica that does not plan makes chunk 1 hot; the planner
    // issues a replicate command, which both replicas hand out.
    let (planner, other, other_api) = if a_plans { (a, b, api_b) } else { (b, a, api_a) };
    // Location queries for `chunk` at `api` (with heartbeats to keep the nodes
    // online); the commands about it that `api` hands out.
    let wanted = async |api: &Api, chunk: &str| {
        for _ in 0..3 {
            holders(api, chunk, "n2").await;
        }
        for n in ["n1", "n2", "n3"] {
            heartbeat(api, n).await;
        }
        let mut got = Vec::new();
        for n in ["n2", "n3"] {
            got.extend(commands(api, n).await.into_iter().filter(|c| c["chunk"] == chunk));
        }
        got
    };
    eventually("a replicate command for the hot chunk, seen at the other replica", Duration::from_secs(5), async || {
        wanted(&other_api, &chunk(1)).await.iter().any(|c| c["kind"] == "replicate")
    })
    .await;
    // The planner stops: the other takes the lease and plans chunk 2.
    planner.shutdown().await;
    eventually("the other replica plans within the lease", Duration::from_secs(3), async || {
        metric(&other_api, "eliop2p_control_planning").await == Some(1)
    })
    .await;
    eventually("a replicate command for chunk 2 after the handover", Duration::from_secs(5), async || {
        wanted(&other_api, &chunk(2)).await.iter().any(|c| c["kind"] == "replicate")
    })
    .await;
    // Command ids of the two planners do not collide.
    let mut ids: Vec<u64> = Vec::new();
    for n in ["n2", "n3"] {
        ids.extend(commands(&other_api, n).await.iter().map(|c| c["id"].as_u64().unwrap()));
    }
    let n = ids.len();
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), n, "distinct command ids: {ids:?}");
    other.shutdown().await;
}

#[tokio::test]
async fn redis_down_answers_503_and_state_returns_with_it() {
    let mut redis = TestRedis::start().await.unwrap();
    let (a, b, api_a, api_b) = two_replicas(&redis).await;
    register(&api_a, "n1", 9001, "z1").await;
    eventually("n1 at b", Duration::from_secs(5), async || node_ids(&api_b).await == ["n1"]).await;
    let r = api_b
        .call(Method::POST, "/api/v1/preheat", Some(json!({"bucket": "b", "key": "k"})))
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{:?}", r.body);
    let job = json_of(&r)["id"].as_u64().unwrap();
    let cmd = json_of(&r)["targets"][0]["command"].as_u64().unwrap();

    redis.kill();
    for api in [&api_a, &api_b] {
        eventually("503 StoreUnavailable while redis is down", Duration::from_secs(5), async || {
            let r = heartbeat(api, "n1").await;
            r.status == StatusCode::SERVICE_UNAVAILABLE && json_of(&r)["code"] == "StoreUnavailable"
        })
        .await;
        // Health and metrics still answer.
        assert_eq!(api.raw(Method::GET, "/healthz", None, None).await.status, StatusCode::OK);
        assert_eq!(metric(api, "eliop2p_control_store_available").await, Some(0));
    }

    // Back with its data: the job and its command are there; the ack at a
    // finishes the job for b.
    redis.restart(true).await.unwrap();
    for api in [&api_a, &api_b] {
        eventually("serving again after redis returned", Duration::from_secs(10), async || {
            heartbeat(api, "n1").await.status == StatusCode::OK
        })
        .await;
    }
    assert_eq!(commands(&api_a, "n1").await.len(), 1, "the preheat command survived");
    let r = api_a
        .call(
            Method::POST,
            &format!("/api/v1/nodes/n1/commands/{cmd}/ack"),
            Some(json!({"ok": true})),
        )
        .await;
    assert_eq!(r.status, StatusCode::NO_CONTENT, "{:?}", r.body);
    eventually("the job succeeded, seen at b", Duration::from_secs(5), async || {
        let r = api_b.call(Method::GET, &format!("/api/v1/preheat/{job}"), None).await;
        r.status == StatusCode::OK && json_of(&r)["state"] == "succeeded"
    })
    .await;

    // Back empty: the replicas forget, and a node's heartbeat gets 404 (it then
    // registers afresh with a full report).
    redis.restart(false).await.unwrap();
    for api in [&api_a, &api_b] {
        eventually("unknown node after redis came back empty", Duration::from_secs(10), async || {
            heartbeat(api, "n1").await.status == StatusCode::NOT_FOUND
        })
        .await;
    }
    register(&api_b, "n1", 9001, "z1").await;
    eventually("re-registered, seen at a", Duration::from_secs(5), async || {
        heartbeat(&api_a, "n1").await.status == StatusCode::OK
    })
    .await;
    a.shutdown().await;
    b.shutdown().await;
}
