//! Control-plane replicas on a Redis that is reached over TLS (`rediss://`, a
//! private CA, client certificates) and on Redis Sentinel, through a failover of
//! the master: real `redis-server` processes, in TLS, replica and sentinel modes.

mod common;

use std::time::Duration;

use common::*;
use eliop2p_control::RedisConfig;
use eliop2p_testkit::{TestCa, TestRedis};
use http::{Method, StatusCode};
use serde_json::json;

fn read(p: &std::path::Path) -> Vec<u8> {
    std::fs::read(p).unwrap()
}

#[tokio::test]
async fn replicas_share_state_over_tls_with_client_certificates() {
    let ca = TestCa::new().unwrap();
    let redis = TestRedis::start_tls(&ca).await.unwrap();
    let client = ca.node_cert("control-plane", false).unwrap();
    let tls = RedisConfig {
        ca: Some(read(&ca.ca_pem)),
        client_cert: Some((read(&client.cert), read(&client.key))),
        ..store(redis.url())
    };
    assert!(tls.url.starts_with("rediss://"));
    let a = start(replica_on(tls.clone())).await;
    let b = start(replica_on(tls)).await;
    let (api_a, api_b) = (Api::new(&a), Api::new(&b));
    for api in [&api_a, &api_b] {
        eventually("a replica loaded the state over TLS", Duration::from_secs(10), async || serving(api).await).await;
    }
    register(&api_a, "n1", 9001, "z1").await;
    eventually("n1, registered at a, listed by b", Duration::from_secs(5), async || {
        node_ids(&api_b).await == ["n1"]
    })
    .await;

    // Replicas that cannot talk to this server never serve: without a client
    // certificate (the server requires one), trusting another CA, or in plain
    // text to the TLS port.
    let other = TestCa::new().unwrap();
    let wrong = [
        RedisConfig { ca: Some(read(&ca.ca_pem)), ..store(redis.url()) },
        RedisConfig {
            ca: Some(read(&other.ca_pem)),
            client_cert: Some((read(&client.cert), read(&client.key))),
            ..store(redis.url())
        },
        store(redis.url().replace("rediss://", "redis://")),
    ];
    let mut refused = Vec::new();
    for w in wrong {
        refused.push(start(replica_on(w)).await);
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    for h in &refused {
        let api = Api::new(h);
        let r = heartbeat(&api, "n1").await;
        assert_eq!(r.status, StatusCode::SERVICE_UNAVAILABLE, "{:?}", r.body);
        assert_eq!(json_of(&r)["code"], "StoreUnavailable");
        assert_eq!(metric(&api, "eliop2p_control_store_available").await, Some(0));
    }
    // The good replicas were not disturbed.
    assert_eq!(heartbeat(&api_b, "n1").await.status, StatusCode::OK);
    for h in refused {
        h.shutdown().await;
    }
    a.shutdown().await;
    b.shutdown().await;
}

#[tokio::test]
async fn replicas_follow_a_sentinel_failover_without_losing_state() {
    let mut master = TestRedis::start().await.unwrap();
    let replica = TestRedis::start_replica_of(&master).await.unwrap();
    let sentinel = TestRedis::start_sentinel("cp", &master, Duration::from_millis(1000)).await.unwrap();
    // The sentinel learns of the replica from the master's INFO; a failover
    // needs it.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while sentinel.command("SENTINEL replicas cp").await.unwrap() != "*1" {
        assert!(tokio::time::Instant::now() < deadline, "the sentinel did not find the replica");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // The URL's host is the master's name; the first sentinel listed is down,
    // so the replicas must walk the list.
    let dead = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
    let on_sentinels = RedisConfig {
        sentinels: vec![dead.to_string(), sentinel.addr()],
        ..store("redis://cp/0".into())
    };
    let a = start(replica_on(on_sentinels.clone())).await;
    let b = start(replica_on(on_sentinels)).await;
    let (api_a, api_b) = (Api::new(&a), Api::new(&b));
    for api in [&api_a, &api_b] {
        eventually("a replica found the master through the sentinels", Duration::from_secs(10), async || {
            serving(api).await
        })
        .await;
    }
    register(&api_a, "n1", 9001, "z1").await;
    register(&api_b, "n2", 9002, "z2").await;
    let r = api_b
        .call(Method::POST, "/api/v1/preheat", Some(json!({"bucket": "b", "key": "k"})))
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{:?}", r.body);
    let job = json_of(&r)["id"].as_u64().unwrap();
    for api in [&api_a, &api_b] {
        eventually("both nodes at each replica", Duration::from_secs(5), async || node_ids(api).await.len() == 2).await;
    }
    // Replication is asynchronous: what the master acknowledged but had not sent
    // is lost in a failover. The test waits for the replica to hold it all:
    // WAIT answers ":1" once it does (each WAIT within `command`'s 5 s; the
    // replica's first sync can take longer on a loaded machine).
    let mut acked = String::new();
    for _ in 0..10 {
        acked = master.command("WAIT 1 2000").await.unwrap();
        if acked == ":1" {
            break;
        }
    }
    assert_eq!(acked, ":1", "the replica never acknowledged the writes");

    master.kill();
    for (api, node) in [(&api_a, "n1"), (&api_b, "n2")] {
        eventually("serving on the promoted replica", Duration::from_secs(30), async || {
            heartbeat(api, node).await.status == StatusCode::OK
        })
        .await;
    }
    // ROLE of a master is a 3-element array (a replica's has 5).
    assert_eq!(replica.command("ROLE").await.unwrap(), "*3", "the sentinel promoted the replica");
    for api in [&api_a, &api_b] {
        let mut ids = node_ids(api).await;
        ids.sort();
        assert_eq!(ids, ["n1", "n2"]);
        let r = api.call(Method::GET, &format!("/api/v1/preheat/{job}"), None).await;
        assert_eq!(r.status, StatusCode::OK, "the preheat job survived the failover: {:?}", r.body);
    }
    // Writes go to the new master and reach the other replica.
    register(&api_a, "n3", 9003, "z1").await;
    eventually("n3, registered at a after the failover, listed by b", Duration::from_secs(5), async || {
        node_ids(&api_b).await.len() == 3
    })
    .await;
    a.shutdown().await;
    b.shutdown().await;
}
