//! Stand-ins for the services that hand out temporary credentials, as small HTTP
//! servers on loopback: the EC2 instance metadata service (IMDSv2: session token
//! first), the ECS/EKS Pod Identity container credentials endpoint, STS
//! answering AssumeRoleWithWebIdentity, and Alibaba Cloud's ECS metadata with a
//! RAM role (token first, as with IMDSv1 disabled). All three hand out credentials from one
//! [`TestIssuer`], which the test origin trusts ([`crate::TestOrigin::trust`]):
//! the origin accepts a temporary key only with its session token, and not after
//! its expiry or revocation.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use http::{Method, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// One set of temporary credentials.
#[derive(Clone, Debug)]
pub struct Issued {
    pub access_key: String,
    pub secret_key: String,
    pub token: String,
    /// Whole seconds, as the services write it.
    pub expires: SystemTime,
    pub revoked: bool,
}

impl Issued {
    /// `Expiration` as the services write it (RFC 3339, UTC).
    pub fn expiration(&self) -> String {
        let secs = self.expires.duration_since(SystemTime::UNIX_EPOCH).unwrap().as_secs();
        reqsign_core::time::Timestamp::from_second(secs as i64)
            .expect("a time after 1970")
            .format_rfc3339_zulu()
    }
}

/// Why the origin refuses a temporary key.
#[derive(Debug, PartialEq, Eq)]
pub enum Refusal {
    /// Not a key this issuer made: the static keys apply.
    NotIssued,
    /// The request's session token is missing or not this key's.
    InvalidToken,
    /// Past its expiry.
    Expired,
    Revoked,
}

#[derive(Default)]
struct IssuerState {
    issued: HashMap<String, Issued>,
    lifetime: Duration,
    seq: u64,
}

/// Makes temporary credentials and remembers them, as STS does.
#[derive(Clone)]
pub struct TestIssuer(Arc<Mutex<IssuerState>>);

impl TestIssuer {
    /// Credentials that live `lifetime` (rounded up to whole seconds).
    pub fn new(lifetime: Duration) -> Self {
        Self(Arc::new(Mutex::new(IssuerState {
            lifetime,
            ..Default::default()
        })))
    }

    pub fn set_lifetime(&self, lifetime: Duration) {
        self.0.lock().unwrap().lifetime = lifetime;
    }

    pub fn issue(&self) -> Issued {
        let mut s = self.0.lock().unwrap();
        s.seq += 1;
        let n = s.seq;
        let now = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap();
        let expires = SystemTime::UNIX_EPOCH
            + Duration::from_secs((now + s.lifetime).as_secs_f64().ceil() as u64);
        let issued = Issued {
            access_key: format!("ASIATEST{n:08}"),
            secret_key: format!("temporary-secret-{n}-{}", now.as_nanos()),
            token: format!("session-token-{n}-{}", now.as_nanos() % 1_000_003),
            expires,
            revoked: false,
        };
        s.issued.insert(issued.access_key.clone(), issued.clone());
        issued
    }

    /// How many credentials were handed out.
    pub fn issued_count(&self) -> usize {
        self.0.lock().unwrap().issued.len()
    }

    /// Revokes every credential handed out so far.
    pub fn revoke_all(&self) {
        for i in self.0.lock().unwrap().issued.values_mut() {
            i.revoked = true;
        }
    }

    /// The secret of an issued key (for the origin's signature check).
    pub fn secret_of(&self, access_key: &str) -> Option<String> {
        self.0.lock().unwrap().issued.get(access_key).map(|i| i.secret_key.clone())
    }

    /// Whether a request with `access_key` and `token` may pass.
    pub fn check(&self, access_key: &str, token: Option<&str>) -> Result<(), Refusal> {
        let s = self.0.lock().unwrap();
        let Some(i) = s.issued.get(access_key) else {
            return Err(Refusal::NotIssued);
        };
        if token != Some(i.token.as_str()) {
            return Err(Refusal::InvalidToken);
        }
        if i.revoked {
            return Err(Refusal::Revoked);
        }
        if SystemTime::now() >= i.expires {
            return Err(Refusal::Expired);
        }
        Ok(())
    }
}

/// The requests each stand-in answered, by name (`imds-token`, `imds`,
/// `container`, `sts`, `ecs-token`, `ecs-ram-role`), and those it refused.
#[derive(Default)]
struct Counts {
    served: HashMap<&'static str, usize>,
    refused: usize,
}

/// IMDSv2, the container endpoint, STS and Alibaba's ECS metadata on one
/// loopback port.
pub struct CredentialServer {
    pub addr: SocketAddr,
    /// `http://127.0.0.1:port`: the IMDS endpoint (`origin.metadata_endpoint`) and
    /// the STS endpoint (`origin.sts_endpoint`).
    pub endpoint: String,
    /// The container credentials URL (`origin.container_credentials_uri`).
    pub container_uri: String,
    /// The `Authorization` the container endpoint wants
    /// (`AWS_CONTAINER_AUTHORIZATION_TOKEN`).
    pub container_token: String,
    /// The web identity token STS accepts, and the role it may be exchanged for.
    pub web_identity_token: String,
    pub role_arn: String,
    pub role_name: &'static str,
    counts: Arc<Mutex<Counts>>,
    cancel: CancellationToken,
    tracker: TaskTracker,
}

impl CredentialServer {
    pub async fn start(issuer: &TestIssuer) -> anyhow::Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let endpoint = format!("http://{addr}");
        let container_token = "container-auth-token-0123".to_owned();
        let web_identity_token = "eyJ.web-identity.token".to_owned();
        let role_arn = "arn:aws:iam::123456789012:role/eliop2p-node".to_owned();
        let counts = Arc::new(Mutex::new(Counts::default()));
        let cancel = CancellationToken::new();
        let tracker = TaskTracker::new();
        let state = Arc::new(Server {
            issuer: issuer.clone(),
            container_token: container_token.clone(),
            web_identity_token: web_identity_token.clone(),
            role_arn: role_arn.clone(),
            imds_tokens: Mutex::new(Vec::new()),
            counts: counts.clone(),
        });
        {
            let (cancel, conns) = (cancel.clone(), tracker.clone());
            tracker.spawn(async move {
                loop {
                    let stream = tokio::select! {
                        _ = cancel.cancelled() => break,
                        r = listener.accept() => match r { Ok((s, _)) => s, Err(_) => continue },
                    };
                    let state = state.clone();
                    let cancel = cancel.clone();
                    conns.spawn(async move {
                        let svc = service_fn(move |req: http::Request<hyper::body::Incoming>| {
                            let state = state.clone();
                            async move {
                                let (parts, body) = req.into_parts();
                                let body = body.collect().await.map(|b| b.to_bytes()).unwrap_or_default();
                                let (status, text) = state.answer(&parts, &body);
                                let mut resp = http::Response::new(Full::new(Bytes::from(text)));
                                *resp.status_mut() = status;
                                Ok::<_, std::convert::Infallible>(resp)
                            }
                        });
                        tokio::select! {
                            _ = hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(stream), svc) => {}
                            _ = cancel.cancelled() => {}
                        }
                    });
                }
            });
        }
        Ok(Self {
            addr,
            container_uri: format!("{endpoint}/v2/credentials/task-0001"),
            endpoint,
            container_token,
            web_identity_token,
            role_arn,
            role_name: ROLE_NAME,
            counts,
            cancel,
            tracker,
        })
    }

    /// Requests answered by one stand-in: `imds-token`, `imds`, `container`, `sts`,
    /// `ecs-token`, `ecs-ram-role`.
    pub fn served(&self, what: &str) -> usize {
        self.counts.lock().unwrap().served.get(what).copied().unwrap_or(0)
    }

    /// Requests refused (missing session token, wrong authorization, bad web
    /// identity token).
    pub fn refused(&self) -> usize {
        self.counts.lock().unwrap().refused
    }

    pub async fn stop(self) {
        self.cancel.cancel();
        self.tracker.close();
        self.tracker.wait().await;
    }
}

const ROLE_NAME: &str = "eliop2p-node-role";

/// An instance metadata service: AWS's IMDSv2 or Alibaba Cloud's ECS metadata.
struct Metadata {
    name: &'static str,
    token_counter: &'static str,
    ttl_header: &'static str,
    token_header: &'static str,
    prefix: &'static str,
}

const IMDS: Metadata = Metadata {
    name: "imds",
    token_counter: "imds-token",
    ttl_header: "x-aws-ec2-metadata-token-ttl-seconds",
    token_header: "x-aws-ec2-metadata-token",
    prefix: "/latest/meta-data/iam/security-credentials/",
};

const ECS: Metadata = Metadata {
    name: "ecs-ram-role",
    token_counter: "ecs-token",
    ttl_header: "x-aliyun-ecs-metadata-token-ttl-seconds",
    token_header: "x-aliyun-ecs-metadata-token",
    prefix: "/latest/meta-data/ram/security-credentials/",
};

struct Server {
    issuer: TestIssuer,
    container_token: String,
    web_identity_token: String,
    role_arn: String,
    imds_tokens: Mutex<Vec<String>>,
    counts: Arc<Mutex<Counts>>,
}

impl Server {
    fn answer(&self, parts: &http::request::Parts, body: &[u8]) -> (StatusCode, String) {
        let header = |n: &str| parts.headers.get(n).and_then(|v| v.to_str().ok()).map(str::to_owned);
        let path = parts.uri.path();
        let served = |what: &'static str| *self.counts.lock().unwrap().served.entry(what).or_default() += 1;
        let refuse = |status: StatusCode, why: &str| {
            self.counts.lock().unwrap().refused += 1;
            (status, why.to_owned())
        };
        match (&parts.method, path) {
            (&Method::PUT, "/latest/api/token") => {
                let Some(kind) = [&IMDS, &ECS].into_iter().find(|k| header(k.ttl_header).is_some()) else {
                    return refuse(StatusCode::BAD_REQUEST, "no token TTL header");
                };
                let token = format!("{}-session-{}", kind.name, self.imds_tokens.lock().unwrap().len() + 1);
                self.imds_tokens.lock().unwrap().push(token.clone());
                served(kind.token_counter);
                (StatusCode::OK, token)
            }
            (&Method::GET, p) if let Some(kind) = [&IMDS, &ECS].into_iter().find(|k| p.starts_with(k.prefix)) => {
                // Tokens only (IMDSv2; Alibaba's hardened mode): every metadata
                // read carries a session token.
                let ok = header(kind.token_header)
                    .is_some_and(|t| self.imds_tokens.lock().unwrap().contains(&t));
                if !ok {
                    return refuse(StatusCode::UNAUTHORIZED, "");
                }
                let role = &p[kind.prefix.len()..];
                if role.is_empty() {
                    served(kind.name);
                    return (StatusCode::OK, ROLE_NAME.to_owned());
                }
                if role != ROLE_NAME {
                    return refuse(StatusCode::NOT_FOUND, "");
                }
                served(kind.name);
                let i = self.issuer.issue();
                let e = i.expiration();
                let (ak, sk, tok) = (&i.access_key, &i.secret_key, &i.token);
                let body = match kind.name {
                    "imds" => format!(
                        r#"{{"Code":"Success","LastUpdated":"{e}","Type":"AWS-HMAC","AccessKeyId":"{ak}","SecretAccessKey":"{sk}","Token":"{tok}","Expiration":"{e}"}}"#
                    ),
                    _ => format!(
                        r#"{{"Code":"Success","LastUpdated":"{e}","AccessKeyId":"{ak}","AccessKeySecret":"{sk}","SecurityToken":"{tok}","Expiration":"{e}"}}"#
                    ),
                };
                (StatusCode::OK, body)
            }
            (&Method::GET, "/v2/credentials/task-0001") => {
                if header("authorization").as_deref() != Some(self.container_token.as_str()) {
                    return refuse(StatusCode::FORBIDDEN, r#"{"code":"AccessDenied"}"#);
                }
                served("container");
                let i = self.issuer.issue();
                (
                    StatusCode::OK,
                    format!(
                        r#"{{"AccessKeyId":"{}","SecretAccessKey":"{}","Token":"{}","Expiration":"{}","RoleArn":"{}"}}"#,
                        i.access_key,
                        i.secret_key,
                        i.token,
                        i.expiration(),
                        self.role_arn
                    ),
                )
            }
            (&Method::POST, "/") => {
                let form: HashMap<String, String> = form_pairs(body);
                let get = |k: &str| form.get(k).map(String::as_str);
                if get("Action") != Some("AssumeRoleWithWebIdentity")
                    || get("RoleArn") != Some(self.role_arn.as_str())
                    || get("WebIdentityToken") != Some(self.web_identity_token.as_str())
                {
                    return refuse(
                        StatusCode::FORBIDDEN,
                        "<ErrorResponse><Error><Type>Sender</Type><Code>AccessDenied</Code><Message>Not authorized to perform sts:AssumeRoleWithWebIdentity</Message></Error></ErrorResponse>",
                    );
                }
                served("sts");
                let i = self.issuer.issue();
                (
                    StatusCode::OK,
                    format!(
                        "<AssumeRoleWithWebIdentityResponse xmlns=\"https://sts.amazonaws.com/doc/2011-06-15/\"><AssumeRoleWithWebIdentityResult><Credentials><AccessKeyId>{}</AccessKeyId><SecretAccessKey>{}</SecretAccessKey><SessionToken>{}</SessionToken><Expiration>{}</Expiration></Credentials></AssumeRoleWithWebIdentityResult></AssumeRoleWithWebIdentityResponse>",
                        i.access_key,
                        i.secret_key,
                        i.token,
                        i.expiration()
                    ),
                )
            }
            _ => refuse(StatusCode::NOT_FOUND, ""),
        }
    }
}

fn form_pairs(body: &[u8]) -> HashMap<String, String> {
    String::from_utf8_lossy(body)
        .split('&')
        .filter_map(|kv| kv.split_once('='))
        .map(|(k, v)| (decode_form(k), decode_form(v)))
        .collect()
}

fn decode_form(s: &str) -> String {
    percent_encoding::percent_decode_str(&s.replace('+', " "))
        .decode_utf8_lossy()
        .into_owned()
}

/// The access key a SigV4 request names: the `Credential=` of its
/// `Authorization` header, or its presigned `X-Amz-Credential`.
pub(crate) fn signing_access_key(parts_headers: &http::HeaderMap, query: Option<&str>) -> Option<String> {
    if let Some(auth) = parts_headers.get(http::header::AUTHORIZATION).and_then(|v| v.to_str().ok()) {
        let cred = auth.split("Credential=").nth(1)?;
        return cred.split('/').next().map(str::to_owned);
    }
    let q = query?;
    let cred = q.split('&').find_map(|kv| kv.strip_prefix("X-Amz-Credential="))?;
    let cred = percent_encoding::percent_decode_str(cred).decode_utf8_lossy().into_owned();
    cred.split('/').next().map(str::to_owned)
}
