//! Where the node's origin credentials come from, and keeping them fresh.
//!
//! Static keys are signed as configured. Every other source is one of reqsign's
//! maintained loaders (the AWS default chain and its members; Alibaba Cloud's
//! environment, default chain and ECS RAM role), run through a [`Credentials`]
//! cache that:
//! - answers from the cached credential while it is fresh, with no I/O;
//! - refreshes in the background once a credential enters its last third of life
//!   (at most the last 5 minutes), so in-flight and new fills keep signing with
//!   the still-valid credential and never wait on the metadata service;
//! - blocks a caller only when it holds no usable credential at all (the first
//!   request, or after an expiry the background refresh could not prevent), and
//!   then one caller loads for all;
//! - remembers a failed load for a short while, so a node without credentials
//!   does not ask the metadata service once per request.
//!
//! The loaders reach the metadata services and STS through [`HttpSend`], built on
//! the origin's own pooled client (so `origin.ca_file` applies to STS too), with a
//! short timeout, and with STS redirected to `origin.sts_endpoint` when set.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use http_body_util::BodyExt;
use reqsign_core::{Context, Env, FileRead, HttpSend, OsEnv};

use crate::client::{OriginError, OriginKind};

/// Which loader supplies the credentials (`origin.credentials`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum CredentialSource {
    /// `origin.access_key`, `origin.secret_key` and `origin.session_token`.
    #[default]
    Static,
    /// The provider's default chain: for S3 the AWS SDKs' order (environment,
    /// shared profile, web identity, container, IMDSv2); for OSS Alibaba Cloud's
    /// (environment, profile and config files, credentials URI, ECS RAM role,
    /// OIDC role).
    Default,
    /// `AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`, `AWS_SESSION_TOKEN` (OSS:
    /// `ALIBABA_CLOUD_ACCESS_KEY_ID`, `..._SECRET`, `ALIBABA_CLOUD_SECURITY_TOKEN`).
    Env,
    /// The shared config and credentials files (`origin.profile` or `AWS_PROFILE`).
    Profile,
    /// STS AssumeRoleWithWebIdentity with a token file (EKS IRSA): `origin.role_arn`
    /// or `AWS_ROLE_ARN`, `origin.web_identity_token_file` or
    /// `AWS_WEB_IDENTITY_TOKEN_FILE`.
    WebIdentity,
    /// The EC2 instance metadata service, version 2 (session token first).
    Imds,
    /// The ECS/EKS Pod Identity container credentials endpoint
    /// (`AWS_CONTAINER_CREDENTIALS_FULL_URI` or `..._RELATIVE_URI`, with
    /// `AWS_CONTAINER_AUTHORIZATION_TOKEN[_FILE]`).
    Container,
    /// Alibaba Cloud ECS RAM role (instance metadata at 100.100.100.200).
    EcsRamRole,
}

impl CredentialSource {
    pub const NAMES: &'static [&'static str] = &[
        "auto",
        "static",
        "default",
        "env",
        "profile",
        "web-identity",
        "imds",
        "container",
        "ecs-ram-role",
    ];

    /// Parses a config value; `auto` means static keys when an access key is set,
    /// the default chain otherwise.
    pub fn parse(value: &str, has_static_key: bool) -> Result<Self, String> {
        Ok(match value {
            "auto" if has_static_key => Self::Static,
            "auto" | "default" => Self::Default,
            "static" => Self::Static,
            "env" => Self::Env,
            "profile" => Self::Profile,
            "web-identity" => Self::WebIdentity,
            "imds" => Self::Imds,
            "container" => Self::Container,
            "ecs-ram-role" => Self::EcsRamRole,
            other => {
                return Err(format!(
                    "expected one of {}, got {other:?}",
                    Self::NAMES.join(", ")
                ));
            }
        })
    }

    pub fn name(self) -> &'static str {
        match self {
            Self::Static => "static",
            Self::Default => "default",
            Self::Env => "env",
            Self::Profile => "profile",
            Self::WebIdentity => "web-identity",
            Self::Imds => "imds",
            Self::Container => "container",
            Self::EcsRamRole => "ecs-ram-role",
        }
    }

    /// Whether this source exists for `kind`; the error says which do.
    pub fn check_kind(self, kind: OriginKind) -> Result<(), String> {
        let ok = match kind {
            OriginKind::Http => self == Self::Static,
            OriginKind::S3 => self != Self::EcsRamRole,
            OriginKind::Oss(_) => matches!(
                self,
                Self::Static | Self::Default | Self::Env | Self::EcsRamRole
            ),
        };
        if ok {
            return Ok(());
        }
        Err(match kind {
            OriginKind::Http => "plain HTTP origins are not signed".to_owned(),
            OriginKind::S3 => format!(
                "{} is an Alibaba Cloud source; S3 origins take static, default, env, profile, web-identity, imds or container",
                self.name()
            ),
            OriginKind::Oss(_) => format!(
                "{} is an AWS source; OSS origins take static, default, env or ecs-ram-role",
                self.name()
            ),
        })
    }
}

/// The source and its settings; settings left `None` come from the usual
/// environment variables of that source.
#[derive(Clone, Debug, Default)]
pub struct CredentialSettings {
    pub source: CredentialSource,
    /// Shared-config profile (`AWS_PROFILE` otherwise, then `default`).
    pub profile: Option<String>,
    pub role_arn: Option<String>,
    pub web_identity_token_file: Option<PathBuf>,
    /// Where STS requests go instead of `sts[.region].amazonaws.com` (also
    /// `AWS_ENDPOINT_URL_STS`).
    pub sts_endpoint: Option<String>,
    /// The instance metadata service (EC2 IMDS or Alibaba ECS metadata) instead of
    /// the link-local default.
    pub metadata_endpoint: Option<String>,
    /// The container credentials URL instead of `AWS_CONTAINER_CREDENTIALS_FULL_URI`.
    pub container_uri: Option<String>,
    /// File holding the container endpoint's authorization token (EKS Pod
    /// Identity), instead of `AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE`.
    pub container_token_file: Option<PathBuf>,
    /// Signing region for the loaders that need one (STS).
    pub region: Option<String>,
}

/// One set of keys to sign with.
#[derive(Clone)]
pub struct Keys {
    pub access_key: String,
    pub secret_key: String,
    pub session_token: Option<String>,
    /// `None` for keys that do not expire.
    pub expires: Option<SystemTime>,
}

impl std::fmt::Debug for Keys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Keys")
            .field("access_key", &self.access_key)
            .field("secret_key", &"<redacted>")
            .field("session_token", &self.session_token.as_ref().map(|_| "<redacted>"))
            .field("expires", &self.expires)
            .finish()
    }
}

enum Loader {
    Aws(Box<dyn reqsign_core::ProvideCredentialDyn<Credential = reqsign_aws_core::Credential>>),
    Oss(Box<dyn reqsign_core::ProvideCredentialDyn<Credential = reqsign_aliyun_oss::Credential>>),
}

impl Loader {
    async fn load(&self, ctx: &Context) -> Result<Option<Keys>, reqsign_core::Error> {
        Ok(match self {
            Loader::Aws(p) => p.provide_credential_dyn(ctx).await?.map(|c| Keys {
                access_key: c.access_key_id,
                secret_key: c.secret_access_key,
                session_token: c.session_token.filter(|t| !t.is_empty()),
                expires: c.expires_in.map(|t| t.as_system_time()),
            }),
            Loader::Oss(p) => p.provide_credential_dyn(ctx).await?.map(|c| Keys {
                access_key: c.access_key_id,
                secret_key: c.access_key_secret,
                session_token: c.security_token.filter(|t| !t.is_empty()),
                expires: c.expires_in.map(|t| t.as_system_time()),
            }),
        })
    }
}

/// How long a failed load is remembered before the next caller tries again.
const FAILURE_MEMORY: Duration = Duration::from_secs(5);
/// Timeout of one request to a metadata service or STS.
const LOADER_REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
/// A credential this close to expiry is not used to sign.
const EXPIRY_MARGIN_MAX: Duration = Duration::from_secs(30);

struct Cached {
    keys: Arc<Keys>,
    /// When the background refresh starts.
    refresh_at: SystemTime,
    /// The last moment the credential may sign.
    usable_until: Option<SystemTime>,
}

struct Inner {
    source: CredentialSource,
    loader: Loader,
    ctx: Context,
    cached: Mutex<Option<Cached>>,
    /// Held by the one caller or task that loads.
    loading: tokio::sync::Mutex<()>,
    background: std::sync::atomic::AtomicBool,
    failed: Mutex<Option<(Instant, String)>>,
    loads: std::sync::atomic::AtomicU64,
}

/// The node's credentials for one origin.
#[derive(Clone)]
pub struct Credentials(Kind);

#[derive(Clone)]
enum Kind {
    Fixed(Arc<Keys>),
    Loaded(Arc<Inner>),
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.0 {
            Kind::Fixed(k) => f.debug_tuple("Credentials::Static").field(k).finish(),
            Kind::Loaded(i) => write!(f, "Credentials::{}", i.source.name()),
        }
    }
}

impl Credentials {
    /// Static keys, signed as given.
    pub fn fixed(keys: Keys) -> Self {
        Self(Kind::Fixed(Arc::new(keys)))
    }

    /// The loader `settings` name for an origin of `kind`, reaching services
    /// through `http`.
    pub(crate) fn new(
        settings: &CredentialSettings,
        kind: OriginKind,
        fixed: Keys,
        http: LoaderHttp,
    ) -> Result<Self, OriginError> {
        if settings.source == CredentialSource::Static {
            return Ok(Self::fixed(fixed));
        }
        settings
            .source
            .check_kind(kind)
            .map_err(|e| OriginError::InvalidRequest(format!("origin.credentials: {e}")))?;
        let mut overlay = HashMap::new();
        let mut set = |k: &str, v: &Option<String>| {
            if let Some(v) = v.as_ref().filter(|v| !v.is_empty()) {
                overlay.insert(k.to_owned(), v.clone());
            }
        };
        set("AWS_PROFILE", &settings.profile);
        set("AWS_ROLE_ARN", &settings.role_arn);
        let path = |p: &Option<PathBuf>| p.as_ref().map(|p| p.display().to_string());
        set("AWS_WEB_IDENTITY_TOKEN_FILE", &path(&settings.web_identity_token_file));
        set("AWS_EC2_METADATA_SERVICE_ENDPOINT", &settings.metadata_endpoint);
        set("ALIBABA_CLOUD_ECS_METADATA_SERVICE_ENDPOINT", &settings.metadata_endpoint);
        set("AWS_CONTAINER_CREDENTIALS_FULL_URI", &settings.container_uri);
        set("AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE", &path(&settings.container_token_file));
        set("AWS_REGION", &settings.region);
        let sts = settings
            .sts_endpoint
            .clone()
            .or_else(|| std::env::var("AWS_ENDPOINT_URL_STS").ok())
            .filter(|s| !s.is_empty());
        let sts = match sts {
            None => None,
            Some(s) => {
                let uri: http::Uri = s.parse().map_err(|e| {
                    OriginError::InvalidRequest(format!("origin.sts_endpoint {s:?}: {e}"))
                })?;
                match (uri.scheme().cloned(), uri.authority().cloned()) {
                    (Some(scheme), Some(auth)) => Some((scheme, auth)),
                    _ => {
                        return Err(OriginError::InvalidRequest(format!(
                            "origin.sts_endpoint {s:?}: needs a scheme and a host, e.g. https://sts.example.com"
                        )));
                    }
                }
            }
        };
        let loader = loader_for(settings.source, kind);
        let ctx = Context::new()
            .with_http_send(LoaderSend { http, sts })
            .with_file_read(TokioFileRead)
            .with_env(OverlayEnv { overlay });
        Ok(Self(Kind::Loaded(Arc::new(Inner {
            source: settings.source,
            loader,
            ctx,
            cached: Mutex::new(None),
            loading: tokio::sync::Mutex::new(()),
            background: Default::default(),
            failed: Mutex::new(None),
            loads: Default::default(),
        }))))
    }

    /// The source's name, for logs and errors.
    pub fn source(&self) -> CredentialSource {
        match &self.0 {
            Kind::Fixed(_) => CredentialSource::Static,
            Kind::Loaded(i) => i.source,
        }
    }

    /// How many times the loader ran (successfully or not): the first load plus
    /// refreshes.
    pub fn loads(&self) -> u64 {
        match &self.0 {
            Kind::Fixed(_) => 0,
            Kind::Loaded(i) => i.loads.load(std::sync::atomic::Ordering::Relaxed),
        }
    }

    /// Keys to sign a request with now (shared: nothing is copied per request).
    pub async fn keys(&self) -> Result<Arc<Keys>, OriginError> {
        let inner = match &self.0 {
            Kind::Fixed(k) => return Ok(k.clone()),
            Kind::Loaded(i) => i,
        };
        let now = SystemTime::now();
        if let Some(keys) = inner.current(now, true) {
            return Ok(keys);
        }
        // No usable credential: load, one caller for all.
        let _guard = inner.loading.lock().await;
        if let Some(keys) = inner.current(SystemTime::now(), false) {
            return Ok(keys);
        }
        if let Some((at, why)) = inner.failed.lock().unwrap().as_ref()
            && at.elapsed() < FAILURE_MEMORY
        {
            return Err(OriginError::Signing(why.clone()));
        }
        inner.load().await
    }

    /// Forgets the cached credential (the origin refused it): the next request
    /// loads a new one.
    pub fn invalidate(&self) {
        if let Kind::Loaded(i) = &self.0 {
            *i.cached.lock().unwrap() = None;
        }
    }
}

impl Inner {
    /// The cached keys if usable at `now`; past the refresh point, starts one
    /// background refresh (when `refresh`) and still answers with them.
    fn current(self: &Arc<Self>, now: SystemTime, refresh: bool) -> Option<Arc<Keys>> {
        let cached = self.cached.lock().unwrap();
        let c = cached.as_ref()?;
        if c.usable_until.is_some_and(|u| now >= u) {
            return None;
        }
        if refresh
            && now >= c.refresh_at
            && !self.background.swap(true, std::sync::atomic::Ordering::AcqRel)
        {
            let me = self.clone();
            tokio::spawn(async move {
                {
                    let _guard = me.loading.lock().await;
                    let due = me
                        .cached
                        .lock()
                        .unwrap()
                        .as_ref()
                        .is_none_or(|c| SystemTime::now() >= c.refresh_at);
                    let failed_lately = me
                        .failed
                        .lock()
                        .unwrap()
                        .as_ref()
                        .is_some_and(|(at, _)| at.elapsed() < FAILURE_MEMORY);
                    if due && !failed_lately && let Err(e) = me.load().await {
                        tracing::warn!(source = me.source.name(), error = %e, "refreshing origin credentials failed; signing with the current ones until they expire");
                    }
                }
                me.background.store(false, std::sync::atomic::Ordering::Release);
            });
        }
        Some(c.keys.clone())
    }

    /// Runs the loader once and caches what it gives.
    async fn load(&self) -> Result<Arc<Keys>, OriginError> {
        self.loads.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let result = tokio::time::timeout(
            LOADER_REQUEST_TIMEOUT * 3,
            self.loader.load(&self.ctx),
        )
        .await;
        let why = match result {
            Ok(Ok(Some(keys))) => {
                let now = SystemTime::now();
                let (refresh_at, usable_until) = schedule(now, keys.expires);
                if usable_until.is_some_and(|u| u <= now) {
                    format!(
                        "origin.credentials = {}: the credentials it gave have expired or expire within seconds",
                        self.source.name()
                    )
                } else {
                    tracing::debug!(source = self.source.name(), expires = ?keys.expires, "loaded origin credentials");
                    let keys = Arc::new(keys);
                    *self.cached.lock().unwrap() = Some(Cached {
                        keys: keys.clone(),
                        refresh_at,
                        usable_until,
                    });
                    *self.failed.lock().unwrap() = None;
                    return Ok(keys);
                }
            }
            Ok(Ok(None)) => format!(
                "origin.credentials = {}: no credentials found ({})",
                self.source.name(),
                where_looked(self.source)
            ),
            Ok(Err(e)) => format!(
                "origin.credentials = {}: loading credentials failed: {e}",
                self.source.name()
            ),
            Err(_) => format!(
                "origin.credentials = {}: loading credentials took over {:?}",
                self.source.name(),
                LOADER_REQUEST_TIMEOUT * 3
            ),
        };
        *self.failed.lock().unwrap() = Some((Instant::now(), why.clone()));
        Err(OriginError::Signing(why))
    }
}

/// When to refresh a credential loaded at `now` that expires at `expires`, and
/// the last moment it may sign: refresh in the last third of its life (at most
/// the last 5 minutes), stop signing in the last tenth (at most 30 s).
fn schedule(now: SystemTime, expires: Option<SystemTime>) -> (SystemTime, Option<SystemTime>) {
    let Some(expires) = expires else {
        // Keys that do not expire (env, profile): read again hourly, so a rotated
        // file is picked up.
        return (now + Duration::from_secs(3600), None);
    };
    let life = expires.duration_since(now).unwrap_or_default();
    let refresh_before = (life / 3).min(Duration::from_secs(300));
    let margin = (life / 10).min(EXPIRY_MARGIN_MAX);
    (expires - refresh_before, Some(expires - margin))
}

fn where_looked(source: CredentialSource) -> &'static str {
    match source {
        CredentialSource::Default => {
            "looked in the environment, the shared config and credentials files, web identity, the container endpoint and instance metadata"
        }
        CredentialSource::Env => "AWS_ACCESS_KEY_ID / ALIBABA_CLOUD_ACCESS_KEY_ID and their secrets are not set",
        CredentialSource::Profile => "the profile is not in ~/.aws/credentials or ~/.aws/config",
        CredentialSource::WebIdentity => {
            "origin.role_arn (AWS_ROLE_ARN) and origin.web_identity_token_file (AWS_WEB_IDENTITY_TOKEN_FILE) are needed"
        }
        CredentialSource::Container => {
            "origin.container_credentials_uri or AWS_CONTAINER_CREDENTIALS_FULL_URI / _RELATIVE_URI is needed"
        }
        CredentialSource::Imds | CredentialSource::EcsRamRole => "the instance metadata service gave none",
        CredentialSource::Static => "origin.access_key is empty",
    }
}

fn loader_for(source: CredentialSource, kind: OriginKind) -> Loader {
    use reqsign_aws_core as aws;
    if let OriginKind::Oss(_) = kind {
        use reqsign_aliyun_oss as oss;
        return Loader::Oss(match source {
            CredentialSource::Env => Box::new(oss::EnvCredentialProvider::new()),
            CredentialSource::EcsRamRole => Box::new(oss::EcsRamRoleCredentialProvider::new()),
            _ => Box::new(oss::DefaultCredentialProvider::new()),
        });
    }
    Loader::Aws(match source {
        CredentialSource::Env => Box::new(aws::EnvCredentialProvider::new()),
        CredentialSource::Profile => Box::new(aws::ProfileCredentialProvider::new()),
        CredentialSource::WebIdentity => {
            Box::new(aws::AssumeRoleWithWebIdentityCredentialProvider::new())
        }
        CredentialSource::Imds => Box::new(aws::IMDSv2CredentialProvider::new()),
        CredentialSource::Container => Box::new(aws::ECSCredentialProvider::new()),
        _ => Box::new(aws::DefaultCredentialProvider::new()),
    })
}

/// The HTTP client the loaders use: the origin's pooled client.
pub(crate) type LoaderHttp = hyper_util::client::legacy::Client<
    hyper_rustls::HttpsConnector<hyper_util::client::legacy::connect::HttpConnector>,
    crate::OriginBody,
>;

struct LoaderSend {
    http: LoaderHttp,
    /// Scheme and authority STS requests go to instead of AWS's.
    sts: Option<(http::uri::Scheme, http::uri::Authority)>,
}

impl std::fmt::Debug for LoaderSend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LoaderSend").field("sts", &self.sts).finish()
    }
}

fn is_aws_sts(host: &str) -> bool {
    host.starts_with("sts.") && (host.ends_with(".amazonaws.com") || host.ends_with(".amazonaws.com.cn"))
}

impl HttpSend for LoaderSend {
    async fn http_send(&self, req: http::Request<Bytes>) -> reqsign_core::Result<http::Response<Bytes>> {
        let (mut parts, body) = req.into_parts();
        if let Some((scheme, authority)) = &self.sts
            && parts.uri.host().is_some_and(is_aws_sts)
        {
            let mut p = parts.uri.clone().into_parts();
            p.scheme = Some(scheme.clone());
            p.authority = Some(authority.clone());
            parts.uri = http::Uri::from_parts(p).map_err(|e| {
                reqsign_core::Error::request_invalid("rewriting the STS endpoint").with_source(e)
            })?;
            if let Ok(v) = http::HeaderValue::from_str(authority.as_str()) {
                parts.headers.insert(http::header::HOST, v);
            }
        }
        let uri = parts.uri.to_string();
        let req = http::Request::from_parts(parts, crate::full_body(body));
        let send = async {
            let resp = self.http.request(req).await.map_err(|e| {
                reqsign_core::Error::unexpected(format!("request to {uri} failed"))
                    .with_source(e)
                    .set_retryable(true)
            })?;
            let (parts, body) = resp.into_parts();
            let body = body.collect().await.map_err(|e| {
                reqsign_core::Error::unexpected(format!("reading the answer of {uri}"))
                    .with_source(e)
            })?;
            Ok(http::Response::from_parts(parts, body.to_bytes()))
        };
        match tokio::time::timeout(LOADER_REQUEST_TIMEOUT, send).await {
            Ok(r) => r,
            Err(_) => Err(reqsign_core::Error::unexpected(format!(
                "{uri} did not answer within {LOADER_REQUEST_TIMEOUT:?}"
            ))
            .set_retryable(true)),
        }
    }
}

#[derive(Debug)]
struct TokioFileRead;

impl FileRead for TokioFileRead {
    async fn file_read(&self, path: &str) -> reqsign_core::Result<Vec<u8>> {
        tokio::fs::read(path).await.map_err(|e| {
            reqsign_core::Error::unexpected(format!("reading {path}")).with_source(e)
        })
    }
}

/// The process environment with the node's settings on top.
#[derive(Debug)]
struct OverlayEnv {
    overlay: HashMap<String, String>,
}

impl Env for OverlayEnv {
    fn var(&self, key: &str) -> Option<String> {
        self.overlay.get(key).cloned().or_else(|| OsEnv.var(key))
    }

    fn vars(&self) -> HashMap<String, String> {
        let mut all = OsEnv.vars();
        all.extend(self.overlay.iter().map(|(k, v)| (k.clone(), v.clone())));
        all
    }

    fn home_dir(&self) -> Option<PathBuf> {
        OsEnv.home_dir()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refresh_starts_in_the_last_third_and_signing_stops_in_the_last_tenth() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000);
        let (refresh, usable) = schedule(now, Some(now + Duration::from_secs(9)));
        assert_eq!(refresh, now + Duration::from_secs(6));
        assert_eq!(usable, Some(now + Duration::from_millis(8100)));
        // Six hours (IMDS): refresh 5 minutes before, stop 30 s before.
        let six_h = now + Duration::from_secs(6 * 3600);
        let (refresh, usable) = schedule(now, Some(six_h));
        assert_eq!(refresh, six_h - Duration::from_secs(300));
        assert_eq!(usable, Some(six_h - Duration::from_secs(30)));
        let (refresh, usable) = schedule(now, None);
        assert_eq!(refresh, now + Duration::from_secs(3600));
        assert_eq!(usable, None);
    }

    #[test]
    fn sources_parse_and_are_checked_against_the_origin_kind() {
        assert_eq!(CredentialSource::parse("auto", true), Ok(CredentialSource::Static));
        assert_eq!(CredentialSource::parse("auto", false), Ok(CredentialSource::Default));
        assert_eq!(CredentialSource::parse("web-identity", false), Ok(CredentialSource::WebIdentity));
        assert!(CredentialSource::parse("instance", false).unwrap_err().contains("imds"));
        for name in CredentialSource::NAMES.iter().filter(|n| **n != "auto") {
            let s = CredentialSource::parse(name, false).unwrap();
            assert_eq!(s.name(), *name);
        }
        let oss = OriginKind::Oss(crate::OssSignature::V4);
        assert!(CredentialSource::Imds.check_kind(oss).unwrap_err().contains("AWS source"));
        assert!(CredentialSource::EcsRamRole.check_kind(OriginKind::S3).unwrap_err().contains("Alibaba"));
        assert!(CredentialSource::EcsRamRole.check_kind(oss).is_ok());
        assert!(CredentialSource::Container.check_kind(OriginKind::S3).is_ok());
    }

    #[test]
    fn only_aws_sts_hosts_are_redirected() {
        assert!(is_aws_sts("sts.amazonaws.com"));
        assert!(is_aws_sts("sts.eu-west-1.amazonaws.com"));
        assert!(is_aws_sts("sts.cn-north-1.amazonaws.com.cn"));
        assert!(!is_aws_sts("169.254.169.254"));
        assert!(!is_aws_sts("sts.amazonaws.com.evil.example"));
    }
}
