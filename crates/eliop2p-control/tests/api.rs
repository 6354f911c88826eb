//! The control plane's API over real HTTP: registration, heartbeats, liveness,
//! chunk reports, locations, replication commands, auth, bad input, and state
//! kept across a restart.

mod common;

use std::time::Duration;

use common::*;
use http::{Method, StatusCode};
use serde_json::{Value, json};

#[tokio::test]
async fn registry_locations_and_liveness() {
    let cp = start(cfg(None)).await;
    let api = Api::new(&cp);
    register(&api, "a", 9001, "z1").await;
    register(&api, "b", 9002, "z2").await;
    register(&api, "c", 9003, "z1").await;

    // Reports: deltas, then a full resync replaces.
    let r = api
        .call(
            Method::POST,
            "/api/v1/nodes/a/chunks",
            Some(json!({"added": [{"id": chunk(1), "len": 100}, {"id": chunk(2), "len": 100}]})),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(json_of(&r)["chunks"], 2);
    for node in ["b", "c"] {
        let r = api
            .call(
                Method::POST,
                &format!("/api/v1/nodes/{node}/chunks"),
                Some(json!({"added": [{"id": chunk(1), "len": 100}]})),
            )
            .await;
        assert_eq!(r.status, StatusCode::OK);
    }
    let r = api
        .call(
            Method::POST,
            "/api/v1/nodes/a/chunks",
            Some(json!({"removed": [chunk(2)]})),
        )
        .await;
    assert_eq!(json_of(&r)["chunks"], 1);

    // Locations: the asker is left out, its zone comes first.
    let r = api
        .call(
            Method::POST,
            "/api/v1/chunks/locations",
            Some(json!({"chunks": [chunk(1), chunk(2)], "node_id": "c"})),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK);
    let l = json_of(&r);
    let holders: Vec<&str> = l["locations"][chunk(1)]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| h["node_id"].as_str().unwrap())
        .collect();
    assert_eq!(holders, ["a", "b"], "same zone (z1) first, asker left out");
    assert_eq!(l["locations"][chunk(2)], json!([]));

    // Liveness: only b heartbeats; a and c become suspect, then dead, and stop
    // being handed out.
    for _ in 0..12 {
        let r = api
            .call(
                Method::PUT,
                "/api/v1/nodes/b/heartbeat",
                Some(json!({"load": 1, "hit_ratio": 0.5, "chunks": 1})),
            )
            .await;
        assert_eq!(r.status, StatusCode::OK);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let r = api.call(Method::GET, "/api/v1/nodes", None).await;
    let nodes = json_of(&r);
    let status = |id: &str| {
        nodes["nodes"]
            .as_array()
            .unwrap()
            .iter()
            .find(|n| n["node_id"] == id)
            .unwrap()["status"]
            .clone()
    };
    assert_eq!(status("b"), "online");
    assert_eq!(status("a"), "dead");
    let r = api
        .call(
            Method::POST,
            "/api/v1/chunks/locations",
            Some(json!({"chunks": [chunk(1)]})),
        )
        .await;
    let l = json_of(&r);
    assert_eq!(l["locations"][chunk(1)].as_array().unwrap().len(), 1);
    assert_eq!(l["locations"][chunk(1)][0]["node_id"], "b");

    // Leave.
    let r = api.call(Method::DELETE, "/api/v1/nodes/b", None).await;
    assert_eq!(r.status, StatusCode::NO_CONTENT);
    let r = api.call(Method::GET, "/api/v1/nodes/b", None).await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    assert_eq!(json_of(&r)["code"], "UnknownNode");

    // Health, metrics and the OpenAPI document need no token.
    let r = api.raw(Method::GET, "/healthz", None, None).await;
    assert_eq!(r.status, StatusCode::OK);
    let r = api.raw(Method::GET, "/metrics", None, None).await;
    let text = String::from_utf8_lossy(&r.body);
    assert!(
        text.contains("eliop2p_control_nodes{status=\"dead\"} 2"),
        "{text}"
    );
    let r = api
        .raw(Method::GET, "/api/v1/openapi.json", None, None)
        .await;
    let doc = json_of(&r);
    for path in [
        "/api/v1/nodes",
        "/api/v1/nodes/{id}",
        "/api/v1/nodes/{id}/heartbeat",
        "/api/v1/nodes/{id}/chunks",
        "/api/v1/chunks/locations",
        "/api/v1/nodes/{id}/commands",
        "/api/v1/nodes/{id}/commands/{cmd}/ack",
    ] {
        assert!(
            doc["paths"].get(path).is_some(),
            "{path} missing from OpenAPI"
        );
    }
    cp.shutdown().await;
}

#[tokio::test]
async fn bad_requests_get_clear_errors() {
    let cp = start(cfg(None)).await;
    let api = Api::new(&cp);
    let body = Some(json!({"node_id": "a", "p2p_addr": "127.0.0.1:1"}).to_string());

    let r = api
        .raw(Method::POST, "/api/v1/nodes", body.clone(), None)
        .await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    assert_eq!(json_of(&r)["code"], "MissingToken");
    let r = api
        .raw(Method::POST, "/api/v1/nodes", body.clone(), Some("wrong"))
        .await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    assert_eq!(json_of(&r)["code"], "BadToken");

    let r = api
        .raw(
            Method::POST,
            "/api/v1/nodes",
            Some("{not json".into()),
            Some(TOKEN),
        )
        .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert_eq!(json_of(&r)["code"], "BadJson");
    let r = api
        .call(
            Method::POST,
            "/api/v1/nodes",
            Some(json!({"node_id": "a", "p2p_addr": "nowhere"})),
        )
        .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert!(
        json_of(&r)["message"]
            .as_str()
            .unwrap()
            .contains("p2p_addr"),
        "{:?}",
        r.body
    );
    let r = api
        .call(
            Method::POST,
            "/api/v1/nodes",
            Some(json!({"node_id": "a", "p2p_addr": "127.0.0.1:1", "surprise": 1})),
        )
        .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);

    let r = api
        .call(
            Method::PUT,
            "/api/v1/nodes/ghost/heartbeat",
            Some(json!({})),
        )
        .await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    assert_eq!(json_of(&r)["code"], "UnknownNode");
    let r = api
        .call(
            Method::POST,
            "/api/v1/nodes/ghost/chunks",
            Some(json!({"added": []})),
        )
        .await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);

    register(&api, "a", 9001, "").await;
    let r = api
        .call(
            Method::POST,
            "/api/v1/nodes/a/chunks",
            Some(json!({"removed": ["xyz"]})),
        )
        .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert_eq!(json_of(&r)["code"], "BadChunkId");

    let many: Vec<String> = (0..10_001).map(|i| format!("{i:064x}")).collect();
    let r = api
        .call(
            Method::POST,
            "/api/v1/chunks/locations",
            Some(json!({"chunks": many})),
        )
        .await;
    assert_eq!(r.status, StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(json_of(&r)["code"], "BatchTooLarge");

    let r = api
        .call(
            Method::POST,
            "/api/v1/nodes/a/commands/99/ack",
            Some(json!({"ok": true})),
        )
        .await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    assert_eq!(json_of(&r)["code"], "UnknownCommand");
    let r = api.call(Method::GET, "/api/v1/nope", None).await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    cp.shutdown().await;
}

/// Labels are bounded (issue 15): a registration is refused with 400 when it has
/// too many labels, or a label key or value longer than the limits, so a node with
/// the token cannot make the control plane keep, persist and hand to every `GET
/// /nodes` megabytes of labels (the request body alone allows 8 MiB). Labels within
/// the limits are kept as sent.
#[tokio::test]
async fn node_labels_are_bounded() {
    let cp = start(cfg(None)).await;
    let api = Api::new(&cp);
    let labels = |n: usize, key_len: usize, value_len: usize| -> Value {
        let m: serde_json::Map<String, Value> = (0..n)
            .map(|i| (format!("{i:0>key_len$}"), Value::String("v".repeat(value_len))))
            .collect();
        Value::Object(m)
    };
    let mut refused = 0;
    for (what, l) in [
        ("too many labels", labels(eliop2p_cluster::api::MAX_LABELS + 1, 4, 1)),
        ("a long key", labels(1, eliop2p_cluster::api::MAX_LABEL_KEY + 1, 1)),
        ("a long value", labels(1, 4, eliop2p_cluster::api::MAX_LABEL_VALUE + 1)),
        ("half a megabyte of value", labels(1, 4, 512 << 10)),
        ("an empty key", json!({"": "x"})),
    ] {
        let r = api
            .call(Method::POST, "/api/v1/nodes", Some(json!({"node_id": "big", "p2p_addr": "127.0.0.1:1", "labels": l})))
            .await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{what}: {:?}", r.body);
        assert!(json_of(&r)["message"].as_str().unwrap().contains("label"), "{what}: {:?}", r.body);
        refused += 1;
    }
    let r = api.call(Method::GET, "/api/v1/nodes/big", None).await;
    assert_eq!(r.status, StatusCode::NOT_FOUND, "a refused registration keeps nothing");
    let ok = labels(
        eliop2p_cluster::api::MAX_LABELS,
        eliop2p_cluster::api::MAX_LABEL_KEY,
        eliop2p_cluster::api::MAX_LABEL_VALUE,
    );
    let r = api
        .call(Method::POST, "/api/v1/nodes", Some(json!({"node_id": "big", "p2p_addr": "127.0.0.1:1", "labels": ok})))
        .await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
    let r = api.call(Method::GET, "/api/v1/nodes/big", None).await;
    assert_eq!(json_of(&r)["labels"], ok);
    println!("refused registrations: {refused}; labels at the limits kept");
    cp.shutdown().await;
}

#[tokio::test]
async fn hot_chunks_get_replicated_across_zones_and_state_survives_restart() {
    let dir = tempfile::tempdir().unwrap();
    let cp = start(cfg(Some(dir.path()))).await;
    let api = Api::new(&cp);
    register(&api, "a", 9001, "z1").await;
    register(&api, "b", 9002, "z1").await;
    register(&api, "c", 9003, "z2").await;
    let r = api
        .call(
            Method::POST,
            "/api/v1/nodes/a/chunks",
            Some(json!({"added": [{"id": chunk(7), "len": 4096}]})),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK);
    // Demand: the chunk is asked for repeatedly.
    for _ in 0..4 {
        api.call(
            Method::POST,
            "/api/v1/chunks/locations",
            Some(json!({"chunks": [chunk(7)], "node_id": "b"})),
        )
        .await;
    }
    // The next pass commands one more replica, in the zone without a copy (c, z2).
    let mut cmds = Value::Null;
    for _ in 0..20 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let r = api
            .call(Method::GET, "/api/v1/nodes/c/commands", None)
            .await;
        cmds = json_of(&r);
        if !cmds["commands"].as_array().unwrap().is_empty() {
            break;
        }
    }
    let cmd = cmds["commands"][0].clone();
    assert_eq!(cmd["kind"], "replicate");
    assert_eq!(cmd["chunk"], chunk(7));
    assert_eq!(cmd["len"], 4096);
    let r = api
        .call(Method::GET, "/api/v1/nodes/b/commands", None)
        .await;
    assert_eq!(
        json_of(&r)["commands"],
        json!([]),
        "min_replicas is 2: one command"
    );

    // Restart before the ack: registrations, holdings and the command come back.
    cp.shutdown().await;
    let cp = start(cfg(Some(dir.path()))).await;
    let api = Api::new(&cp);
    let r = api.call(Method::GET, "/api/v1/nodes", None).await;
    assert_eq!(json_of(&r)["nodes"].as_array().unwrap().len(), 3);
    let r = api
        .call(
            Method::POST,
            "/api/v1/chunks/locations",
            Some(json!({"chunks": [chunk(7)]})),
        )
        .await;
    assert_eq!(json_of(&r)["locations"][chunk(7)][0]["node_id"], "a");
    let r = api
        .call(Method::GET, "/api/v1/nodes/c/commands", None)
        .await;
    assert_eq!(json_of(&r)["commands"][0], cmd);
    let id = cmd["id"].as_u64().unwrap();
    let r = api
        .call(
            Method::POST,
            &format!("/api/v1/nodes/c/commands/{id}/ack"),
            Some(json!({"ok": true})),
        )
        .await;
    assert_eq!(r.status, StatusCode::NO_CONTENT);
    let r = api
        .call(Method::GET, "/api/v1/nodes/c/commands", None)
        .await;
    assert_eq!(json_of(&r)["commands"], json!([]));
    cp.shutdown().await;
}

/// A node refreshes its members at every heartbeat. The list carries a tag of
/// the membership; asked again with it, the control plane answers 304 and no
/// body until a node joins, leaves or changes status, not when a member only
/// heartbeats. Before, every refresh sent the whole list (about 600 bytes a
/// node to each node: 18 MB in 15 s from the control plane of a 32-node bed).
#[tokio::test]
async fn the_node_list_is_sent_again_only_when_membership_changed() {
    let cp = start(cfg(None)).await;
    let api = Api::new(&cp);
    register(&api, "a", 9001, "z1").await;
    register(&api, "b", 9002, "z1").await;
    let list = |tag: Option<String>| {
        let api = &api;
        async move {
            let auth = format!("Bearer {TOKEN}");
            let mut headers = vec![("authorization", auth.as_str())];
            if let Some(t) = &tag {
                headers.push(("if-none-match", t.as_str()));
            }
            let url = format!("{}/api/v1/nodes", api.base);
            let r = api.client.request(Method::GET, &url, &headers, bytes::Bytes::new()).await.unwrap();
            let etag = r.headers.get("etag").map(|v| v.to_str().unwrap().to_owned());
            (r, etag)
        }
    };
    let (r, tag) = list(None).await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(json_of(&r)["nodes"].as_array().unwrap().len(), 2);
    let tag = tag.expect("an ETag on the node list");
    assert!(tag.starts_with("W/\""), "a weak tag: {tag}");

    // Nothing changed, then a heartbeat: 304, no body, the same tag.
    for _ in 0..2 {
        let (r, again) = list(Some(tag.clone())).await;
        assert_eq!(r.status, StatusCode::NOT_MODIFIED);
        assert!(r.body.is_empty());
        assert_eq!(again.as_deref(), Some(tag.as_str()));
        assert_eq!(heartbeat(&api, "a").await.status, StatusCode::OK);
    }
    // A stale or foreign tag gets the list.
    let (r, _) = list(Some("W/\"m0\"".into())).await;
    assert_eq!(r.status, StatusCode::OK);

    // A node joins: the list again, under a new tag.
    register(&api, "c", 9003, "z2").await;
    let (r, joined) = list(Some(tag.clone())).await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(json_of(&r)["nodes"].as_array().unwrap().len(), 3);
    let joined = joined.unwrap();
    assert_ne!(joined, tag);

    // A node goes quiet: suspect, then dead, each a change.
    let mut seen = vec![joined.clone()];
    eventually("b dead", Duration::from_secs(5), async || {
        heartbeat(&api, "a").await;
        heartbeat(&api, "c").await;
        let (r, t) = list(Some(seen.last().unwrap().clone())).await;
        if r.status == StatusCode::OK {
            seen.push(t.unwrap());
        }
        node_status(&api, "b").await == "dead"
    })
    .await;
    assert!(seen.len() >= 2, "b's status changes changed the tag: {seen:?}");
    cp.shutdown().await;
}

async fn node_status(api: &Api, id: &str) -> String {
    let r = api.call(Method::GET, &format!("/api/v1/nodes/{id}"), None).await;
    json_of(&r)["status"].as_str().unwrap().to_owned()
}
