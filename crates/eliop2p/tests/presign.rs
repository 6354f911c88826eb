//! `eliop2p presign`, the real binary: a URL the origin accepts, signed with
//! static keys or with temporary keys from the environment, a profile or the
//! default chain (the process environment is the point, so these run the binary).

use std::process::Command;
use std::time::Duration;

use eliop2p_testkit::{ACCESS_KEY, SECRET_KEY, TestClient, TestOrigin, sha256_hex};

const BIN: &str = env!("CARGO_BIN_EXE_eliop2p");

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn presign_prints_a_url_the_origin_accepts() -> anyhow::Result<()> {
    let (origin, data) = TestOrigin::with_object("signed", "dir/obj name", 70_000, 31).await?;
    let out = Command::new(BIN)
        .args(["presign", "s3://signed/dir/obj name", "--expires", "10m"])
        .env("ELIOP2P_ORIGIN_ENDPOINT", &origin.endpoint)
        .env("ELIOP2P_ORIGIN_ACCESS_KEY", ACCESS_KEY)
        .env("ELIOP2P_ORIGIN_SECRET_KEY", SECRET_KEY)
        .output()?;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let url = String::from_utf8(out.stdout)?.trim().to_owned();
    assert!(url.contains("X-Amz-Signature="), "{url}");
    let r = TestClient::new().get(&url, &[]).await?;
    assert_eq!(r.status, 200);
    assert_eq!(sha256_hex(&r.body), sha256_hex(&data));
    let out = Command::new(BIN)
        .args(["presign", "not-a-url"])
        .env("ELIOP2P_ORIGIN_ENDPOINT", &origin.endpoint)
        .output()?;
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("s3://bucket/key"));
    origin.stop().await;
    Ok(())
}

/// The credential sources that live in the process environment (issue 18, item
/// 1): `env`, `profile`, and the default chain finding the environment or the
/// container endpoint, each giving temporary keys whose session token is in the
/// presigned URL the origin then serves. With nothing to find, the error names
/// `origin.credentials`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn presign_takes_temporary_keys_from_the_environment_a_profile_and_the_default_chain()
-> anyhow::Result<()> {
    let (origin, data) = TestOrigin::with_object("temp", "k", 50_000, 32).await?;
    let issuer = eliop2p_testkit::TestIssuer::new(Duration::from_secs(3600));
    origin.trust(&issuer);
    let server = eliop2p_testkit::CredentialServer::start(&issuer).await?;
    let home = tempfile::tempdir()?;
    let presign = |vars: &[(&str, String)]| {
        let mut c = Command::new(BIN);
        c.args(["presign", "s3://temp/k"]).env("ELIOP2P_ORIGIN_ENDPOINT", &origin.endpoint);
        // Nothing of this machine's own: no home files, no instance metadata.
        for k in ["AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE", "AWS_ROLE_ARN", "AWS_WEB_IDENTITY_TOKEN_FILE", "AWS_CONTAINER_CREDENTIALS_FULL_URI", "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI", "ELIOP2P_ORIGIN_ACCESS_KEY", "ELIOP2P_ORIGIN_SECRET_KEY"] {
            c.env_remove(k);
        }
        c.env("HOME", home.path()).env("AWS_EC2_METADATA_DISABLED", "true");
        c.env("AWS_CONFIG_FILE", home.path().join("no-config"));
        c.env("AWS_SHARED_CREDENTIALS_FILE", home.path().join("no-credentials"));
        for (k, v) in vars {
            c.env(k, v);
        }
        c.output()
    };
    let env_keys = |i: &eliop2p_testkit::creds::Issued| {
        vec![
            ("AWS_ACCESS_KEY_ID", i.access_key.clone()),
            ("AWS_SECRET_ACCESS_KEY", i.secret_key.clone()),
            ("AWS_SESSION_TOKEN", i.token.clone()),
        ]
    };
    let profile_file = home.path().join("credentials");
    let p = issuer.issue();
    std::fs::write(
        &profile_file,
        format!(
            "[default]\naws_access_key_id = wrong\naws_secret_access_key = wrong\n\n[node]\naws_access_key_id = {}\naws_secret_access_key = {}\naws_session_token = {}\n",
            p.access_key, p.secret_key, p.token
        ),
    )?;
    let (e1, e2) = (issuer.issue(), issuer.issue());
    let mut env_source = env_keys(&e1);
    env_source.push(("ELIOP2P_ORIGIN_CREDENTIALS", "env".into()));
    type Vars<'a> = Vec<(&'a str, String)>;
    let cases: Vec<(&str, Vars, String)> = vec![
        ("env", env_source, e1.access_key.clone()),
        (
            "profile",
            vec![
                ("ELIOP2P_ORIGIN_CREDENTIALS", "profile".into()),
                ("ELIOP2P_ORIGIN_PROFILE", "node".into()),
                ("AWS_SHARED_CREDENTIALS_FILE", profile_file.display().to_string()),
            ],
            p.access_key.clone(),
        ),
        // No static key, no origin.credentials: the default chain, which finds
        // the environment first.
        ("default, environment", env_keys(&e2), e2.access_key.clone()),
        (
            "default, container endpoint",
            vec![
                ("AWS_CONTAINER_CREDENTIALS_FULL_URI", server.container_uri.clone()),
                ("AWS_CONTAINER_AUTHORIZATION_TOKEN", server.container_token.clone()),
            ],
            "ASIATEST".into(),
        ),
    ];
    for (what, vars, key) in cases {
        let out = presign(&vars)?;
        assert!(out.status.success(), "{what}: {}", String::from_utf8_lossy(&out.stderr));
        let url = String::from_utf8(out.stdout)?.trim().to_owned();
        assert!(url.contains(&format!("X-Amz-Credential={key}")), "{what}: {url}");
        assert!(url.contains("X-Amz-Security-Token=session-token-"), "{what}: {url}");
        let r = TestClient::new().get(&url, &[]).await?;
        assert_eq!((r.status.as_u16(), sha256_hex(&r.body)), (200, sha256_hex(&data)), "{what}");
    }
    assert_eq!(server.served("container"), 1);
    let out = presign(&[])?;
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("origin.credentials = default") && err.contains("no credentials found"), "{err}");
    server.stop().await;
    origin.stop().await;
    Ok(())
}
