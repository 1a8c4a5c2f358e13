//! Credentials and scopes for the HTTP API.
//!
//! Two ways to authenticate, per tenant:
//! - `Authorization: Bearer TOKEN`: the config holds only the token's sha256, so the
//!   config file is not a secret. `GET /v1/events` also takes `?access_token=TOKEN`
//!   (a browser's EventSource cannot set headers).
//! - HMAC-signed requests: `X-Firebreak-Tenant`, `X-Firebreak-Timestamp` (Unix seconds,
//!   within 300 s of ours) and `X-Firebreak-Signature` = lowercase hex
//!   HMAC-SHA256(secret, METHOD "\n" PATH?QUERY "\n" TIMESTAMP "\n" hex(sha256(BODY))).
//!   A signature is accepted once: a replay within the time window answers 401.
//!   A client that also sends `X-Firebreak-Content-SHA256: hex(sha256(BODY))` has its
//!   signature checked before its body is read (and the body checked against it
//!   after); without it the body is read first, within the in-flight body budget. A
//!   client that also sends `X-Firebreak-Content-SHA256: hex(sha256(BODY))` has its
//!   signature checked before its body is read (and the body checked against it after);
//!   without it the body is read first, within the in-flight body budget.
//!
//! Scopes: `ingest` (push and register streams), `operator` (acknowledge, resolve,
//! audit; implies `read`), `admin` (policy, reload, every tenant; implies `operator`),
//! `read` (streams, escalations, events, policy; implies `metrics`), `metrics`
//! (`/metrics` only, for a Prometheus scraper). Only `/`, `/healthz` and `/readyz` are
//! open (and `/metrics` on the internal metrics listener, when one is configured).
//! Missing or wrong credentials answer 401, a valid credential without the scope 403,
//! a body over the limit 413.
//!
//! Limits: a tenant beyond its request rate is answered 429 with `Retry-After`; a
//! client address with too many failed authentications in a minute is answered 429
//! without being checked, for the rest of that minute. Every denied request (401, 403,
//! the start of a throttle) is reported to the audit hook. Credentials can be replaced
//! while serving ([`Authenticator::reload`], on SIGHUP).

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use axum::extract::ConnectInfo;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::Response;
use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};

use crate::config::{AuthSettings, Scope};
use crate::http::limits::{FailureThrottle, TokenBuckets};
use crate::metrics::{AuthFailure, Metrics, ThrottleLimit};

/// Who made a request (for audit logs).
#[derive(Debug, Clone)]
pub struct Caller {
    /// The tenant.
    pub tenant: String,
    /// How it authenticated: `bearer` or `hmac`.
    pub method: &'static str,
    /// Which credential, as the audit log records it: `token:` and the first 8 hex
    /// digits of the bearer token's sha256, or `hmac:` and the key's tenant.
    pub credential: String,
    scopes: Vec<Scope>,
}

impl Caller {
    /// Whether the caller holds `scope` (admin implies operator, operator implies read,
    /// read implies metrics).
    pub fn has(&self, scope: Scope) -> bool {
        self.scopes.contains(&scope)
            || match scope {
                Scope::Metrics => self.has(Scope::Read),
                Scope::Read => self.has(Scope::Operator),
                Scope::Operator => self.has(Scope::Admin),
                Scope::Ingest | Scope::Admin => false,
            }
    }

    /// Whether the caller sees every tenant's streams and incidents (admin scope).
    pub fn is_admin(&self) -> bool {
        self.has(Scope::Admin)
    }

    /// The tenant whose things this caller may see: `None` for an admin (all).
    pub fn tenant_filter(&self) -> Option<&str> {
        (!self.is_admin()).then_some(self.tenant.as_str())
    }

    /// A caller (tests and internal actions).
    pub fn new(tenant: &str, method: &'static str, scopes: &[Scope]) -> Caller {
        Caller {
            tenant: tenant.to_owned(),
            method,
            credential: format!("{method}:{tenant}"),
            scopes: scopes.to_vec(),
        }
    }
}

/// The first 8 hex digits of a token's sha256: names the credential in the audit log
/// without revealing anything usable.
fn hex_prefix(sha256: &[u8; 32]) -> String {
    sha256[..4].iter().map(|b| format!("{b:02x}")).collect()
}

struct Token {
    sha256: [u8; 32],
    tenant: String,
    scopes: Vec<Scope>,
}

#[derive(Clone)]
struct HmacKey {
    tenant: String,
    secret: Vec<u8>,
    scopes: Vec<Scope>,
}

/// The credentials in force (replaced whole on reload).
struct Credentials {
    tokens: Vec<Token>,
    hmac: Vec<HmacKey>,
}

/// A refused request, for the audit log.
#[derive(Debug, Clone)]
pub struct Denied {
    /// The client address.
    pub peer: IpAddr,
    /// The tenant, when the credential was valid (403) or claimed (HMAC).
    pub tenant: Option<String>,
    /// `METHOD /path`.
    pub request: String,
    /// Why.
    pub reason: AuthFailure,
}

/// Called for every denied request (the daemon appends it to the audit log, off the
/// runtime).
pub type DeniedHook = Arc<dyn Fn(Denied) + Send + Sync>;

/// The request limits the authenticator applies.
#[derive(Debug, Clone, Copy)]
pub struct RateLimits {
    /// Sustained requests per second per tenant.
    pub tenant_per_sec: f64,
    /// Burst per tenant.
    pub tenant_burst: u32,
    /// Failed authentications per minute per client address.
    pub auth_failures_per_minute: u32,
    /// Bytes of request bodies held in memory at once, over every request: a body is
    /// reserved at its `Content-Length` (the body limit when it has none) before it is
    /// read, and a request that does not fit is answered 503 `Retry-After: 1`.
    pub inflight_body_bytes: usize,
}

impl Default for RateLimits {
    fn default() -> Self {
        RateLimits {
            tenant_per_sec: 200.0,
            tenant_burst: 400,
            auth_failures_per_minute: 30,
            inflight_body_bytes: 256 << 20,
        }
    }
}

/// The credentials the daemon accepts, and the limits on using them.
pub struct Authenticator {
    credentials: ArcSwap<Credentials>,
    max_body: usize,
    metrics: Metrics,
    /// Signatures accepted within the time window, with their timestamps.
    seen: Mutex<std::collections::HashMap<Vec<u8>, u64>>,
    rate: Mutex<TokenBuckets<String>>,
    failures: Mutex<FailureThrottle<IpAddr>>,
    on_denied: OnceLock<DeniedHook>,
    /// Request bodies in memory at once, in KiB (see [`RateLimits::inflight_body_bytes`]).
    bodies: Arc<tokio::sync::Semaphore>,
}

impl std::fmt::Debug for Authenticator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let c = self.credentials.load();
        f.debug_struct("Authenticator")
            .field("tokens", &c.tokens.len())
            .field("hmac", &c.hmac.len())
            .finish_non_exhaustive()
    }
}

fn unhex(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok())
        .collect()
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Lowercase hex sha256 (for token hashes and HMAC body digests).
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex(&Sha256::digest(bytes))
}

/// The one route that also takes the bearer token as `?access_token=` (a browser's
/// `EventSource` cannot set headers).
pub const QUERY_TOKEN_PATH: &str = "/v1/events";

/// Which scope a request needs; `None` = open. `path` is the request's path, or a
/// route's template (`/v1/streams/{id}`): the OpenAPI document takes each operation's
/// scope from here.
pub fn required_scope(method: &Method, path: &str) -> Option<Scope> {
    if matches!(path, "/" | "/healthz" | "/readyz") {
        return None;
    }
    if path == "/metrics" {
        return Some(Scope::Metrics);
    }
    let segs: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    Some(match (method, segs.as_slice()) {
        (&Method::PUT, ["v1", "streams", _, "segments", _])
        | (&Method::POST, ["v1", "streams", _, "end"])
        | (&Method::POST, ["v1", "streams"])
        | (&Method::DELETE, ["v1", "streams", _]) => Scope::Ingest,
        (&Method::GET | &Method::HEAD, _) if segs != ["v1", "audit"] => Scope::Read,
        // Policy and banks are the whole service's: platform administrators only.
        (&Method::PUT, ["v1", "policy"])
        | (&Method::PATCH, ["v1", "policy", "rules", _])
        | (&Method::POST, ["v1", "policy", "rollback"])
        | (&Method::POST, ["v1", "reload"])
        // The coordinator: a confirmation made fleet-wide.
        | (&Method::POST, ["v1", "incidents", _, "promote"]) => Scope::Admin,
        _ => Scope::Operator,
    })
}

fn refuse(status: StatusCode, message: &str) -> Response {
    let mut r = crate::http::error(status, message);
    if status == StatusCode::UNAUTHORIZED {
        r.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            header::HeaderValue::from_static("Bearer realm=\"firebreak\""),
        );
    }
    r
}

/// Reads the credentials of `config`; HMAC secrets come from their environment
/// variables (a missing one is an error naming it).
fn credentials(config: &AuthSettings) -> Result<Credentials, String> {
    let tokens = config
        .tokens
        .iter()
        .map(|t| Token {
            sha256: t.sha256,
            tenant: t.tenant.clone(),
            scopes: t.scopes.clone(),
        })
        .collect();
    let mut hmac = Vec::new();
    for h in &config.hmac {
        let secret = std::env::var(&h.secret_env).map_err(|_| {
            format!(
                "auth.hmac for {}: environment variable {} is not set",
                h.tenant, h.secret_env
            )
        })?;
        hmac.push(HmacKey {
            tenant: h.tenant.clone(),
            secret: secret.into_bytes(),
            scopes: h.scopes.clone(),
        });
    }
    Ok(Credentials { tokens, hmac })
}

impl Authenticator {
    /// Grants `share` (0 to 1) of the tenants' request rate and burst from now on
    /// (fleet mode: one over the workers alive).
    pub fn set_rate_share(&self, share: f64) {
        self.rate
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .set_share(share);
    }

    /// From the config (see [`Authenticator::reload`] for the credentials).
    pub fn new(
        config: &AuthSettings,
        max_body: usize,
        limits: RateLimits,
        metrics: Metrics,
    ) -> Result<Self, String> {
        Ok(Authenticator {
            credentials: ArcSwap::from_pointee(credentials(config)?),
            max_body,
            metrics,
            seen: Default::default(),
            rate: Mutex::new(TokenBuckets::new(
                limits.tenant_per_sec,
                limits.tenant_burst,
            )),
            failures: Mutex::new(FailureThrottle::new(
                limits.auth_failures_per_minute,
                Duration::from_secs(60),
            )),
            on_denied: OnceLock::new(),
            bodies: Arc::new(tokio::sync::Semaphore::new(
                kib(limits.inflight_body_bytes).min(tokio::sync::Semaphore::MAX_PERMITS),
            )),
        })
    }

    /// Replaces the credentials (tokens and HMAC keys) at once; on an error the old
    /// ones stay. Requests in flight finish with the credentials they were checked with.
    pub fn reload(&self, config: &AuthSettings) -> Result<(), String> {
        self.credentials.store(Arc::new(credentials(config)?));
        Ok(())
    }

    /// Sets the hook told about every denied request (once).
    pub fn on_denied(&self, hook: DeniedHook) {
        let _ = self.on_denied.set(hook);
    }

    fn bearer(&self, token: &str) -> Option<Caller> {
        let digest: [u8; 32] = Sha256::digest(token.as_bytes()).into();
        // Comparing digests, not tokens: timing reveals nothing about a valid token.
        self.credentials
            .load()
            .tokens
            .iter()
            .find(|t| t.sha256 == digest)
            .map(|t| Caller {
                tenant: t.tenant.clone(),
                method: "bearer",
                credential: format!("token:{}", hex_prefix(&t.sha256)),
                scopes: t.scopes.clone(),
            })
    }

    /// Refuses a request: counted, reported to the audit hook, and (for a 401) counted
    /// against the client address.
    fn fail(
        &self,
        ctx: &Ctx,
        tenant: Option<&str>,
        reason: AuthFailure,
        status: StatusCode,
        message: &str,
    ) -> Response {
        self.metrics.auth_failure(reason);
        self.deny(ctx, tenant, reason);
        if status == StatusCode::UNAUTHORIZED {
            let reached = self
                .failures
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .fail(&ctx.peer, Instant::now());
            if reached {
                tracing::warn!(peer = %ctx.peer, "too many failed authentications: throttled");
                self.deny(ctx, None, AuthFailure::Throttled);
            }
        }
        refuse(status, message)
    }

    fn deny(&self, ctx: &Ctx, tenant: Option<&str>, reason: AuthFailure) {
        tracing::warn!(target: "audit", peer = %ctx.peer, tenant, request = %ctx.request, reason = reason.as_str(), "request denied");
        if let Some(hook) = self.on_denied.get() {
            hook(Denied {
                peer: ctx.peer,
                tenant: tenant.map(str::to_owned),
                request: ctx.request.clone(),
                reason,
            });
        }
    }
}

/// Bytes in KiB, rounded up.
fn kib(bytes: usize) -> usize {
    bytes.div_ceil(1024)
}

/// A reservation of body memory, counted in `firebreak_inflight_body_bytes`.
struct BodyReservation {
    _permit: Option<tokio::sync::OwnedSemaphorePermit>,
    bytes: i64,
    metrics: Metrics,
}

impl Drop for BodyReservation {
    fn drop(&mut self) {
        self.metrics.inflight_body_bytes.sub(self.bytes);
    }
}

impl Authenticator {
    /// Reserves memory for the request's body before it is read: its `Content-Length`,
    /// or the body limit for a body of unknown length (nothing for a request without
    /// a body). `Err` is the 503 to answer.
    fn reserve_body(&self, headers: &header::HeaderMap) -> Result<BodyReservation, Box<Response>> {
        let declared = headers
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<usize>().ok());
        let bytes = match declared {
            Some(n) => n.min(self.max_body),
            None if headers.contains_key(header::TRANSFER_ENCODING) => self.max_body,
            None => 0,
        };
        let permit = if bytes == 0 {
            None
        } else {
            let n = u32::try_from(kib(bytes)).unwrap_or(u32::MAX);
            match self.bodies.clone().try_acquire_many_owned(n) {
                Ok(p) => Some(p),
                Err(_) => {
                    self.metrics.throttled(ThrottleLimit::InflightBodies);
                    let mut r = refuse(
                        StatusCode::SERVICE_UNAVAILABLE,
                        "too many request bodies in flight; retry",
                    );
                    r.headers_mut()
                        .insert(header::RETRY_AFTER, header::HeaderValue::from_static("1"));
                    return Err(Box::new(r));
                }
            }
        };
        let bytes = i64::try_from(bytes).unwrap_or(i64::MAX);
        self.metrics.inflight_body_bytes.add(bytes);
        Ok(BodyReservation {
            _permit: permit,
            bytes,
            metrics: self.metrics.clone(),
        })
    }
}

/// What the refusals of one request say about it.
struct Ctx {
    peer: IpAddr,
    request: String,
}

/// 429 with `Retry-After`.
fn throttled(seconds: u64, message: &str) -> Response {
    let mut r = refuse(StatusCode::TOO_MANY_REQUESTS, message);
    if let Ok(v) = header::HeaderValue::from_str(&seconds.to_string()) {
        r.headers_mut().insert(header::RETRY_AFTER, v);
    }
    r
}

/// The middleware: authenticates, checks the scope, limits the body.
pub async fn layer(State(auth): State<Arc<Authenticator>>, req: Request, next: Next) -> Response {
    let path = req.uri().path().to_owned();
    let Some(scope) = required_scope(req.method(), &path) else {
        return next.run(req).await;
    };
    let ctx = Ctx {
        peer: req
            .extensions()
            .get::<ConnectInfo<SocketAddr>>()
            .map_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED), |c| c.0.ip()),
        request: format!("{} {path}", req.method()),
    };
    let blocked = auth
        .failures
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .blocked(&ctx.peer, Instant::now());
    if let Some(secs) = blocked {
        auth.metrics.throttled(ThrottleLimit::AuthFailures);
        return throttled(secs, "too many failed authentications from this address");
    }
    let (mut parts, body) = req.into_parts();
    if let Some(len) = parts
        .headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok())
        && len > auth.max_body
    {
        return refuse(StatusCode::PAYLOAD_TOO_LARGE, "request body too large");
    }
    let header_str = |name: &str| {
        parts
            .headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    };
    let caller;
    let mut reserved = None;
    let body = if let Some(sig) = header_str("x-firebreak-signature") {
        // Everything that needs no body is checked before the body is read, so an
        // unauthenticated caller cannot make the server buffer and hash it.
        let (Some(tenant), Some(ts)) = (
            header_str("x-firebreak-tenant"),
            header_str("x-firebreak-timestamp").and_then(|t| t.parse::<u64>().ok()),
        ) else {
            return auth.fail(
                &ctx,
                None,
                AuthFailure::Malformed,
                StatusCode::UNAUTHORIZED,
                "signed requests need X-Firebreak-Tenant and X-Firebreak-Timestamp",
            );
        };
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        if now.abs_diff(ts) > 300 {
            return auth.fail(
                &ctx,
                Some(&tenant),
                AuthFailure::Stale,
                StatusCode::UNAUTHORIZED,
                "request timestamp is more than 300 s off",
            );
        }
        let creds = auth.credentials.load_full();
        if unhex(&sig).is_none_or(|s| s.len() != 32)
            || !creds.hmac.iter().any(|k| k.tenant == tenant)
        {
            return auth.fail(
                &ctx,
                Some(&tenant),
                AuthFailure::BadSignature,
                StatusCode::UNAUTHORIZED,
                "bad signature",
            );
        }
        let pq = parts
            .uri
            .path_and_query()
            .map_or(path.as_str(), |p| p.as_str())
            .to_owned();
        let method = parts.method.clone();
        let key_for = |digest: &str| {
            creds
                .hmac
                .iter()
                .filter(|k| k.tenant == tenant)
                .find(|k| {
                    let mut mac =
                        Hmac::<Sha256>::new_from_slice(&k.secret).expect("any key length");
                    mac.update(format!("{method}\n{pq}\n{ts}\n{digest}").as_bytes());
                    unhex(&sig).is_some_and(|s| mac.verify_slice(&s).is_ok())
                })
                .cloned()
        };
        // With the body's digest in a header the signature is verified before the body
        // is read; without it the body must be read (within the in-flight budget) to
        // know what was signed.
        let declared = header_str("x-firebreak-content-sha256").map(|d| d.to_ascii_lowercase());
        if declared
            .as_deref()
            .is_some_and(|d| unhex(d).is_none_or(|b| b.len() != 32))
        {
            return auth.fail(
                &ctx,
                Some(&tenant),
                AuthFailure::Malformed,
                StatusCode::UNAUTHORIZED,
                "X-Firebreak-Content-SHA256 must be 64 hex digits",
            );
        }
        let early = match &declared {
            Some(d) => match key_for(d) {
                Some(k) => Some(k),
                None => {
                    return auth.fail(
                        &ctx,
                        Some(&tenant),
                        AuthFailure::BadSignature,
                        StatusCode::UNAUTHORIZED,
                        "bad signature",
                    );
                }
            },
            None => None,
        };
        let reservation = match auth.reserve_body(&parts.headers) {
            Ok(r) => r,
            Err(busy) => return *busy,
        };
        reserved = Some(reservation);
        let bytes = match axum::body::to_bytes(body, auth.max_body).await {
            Ok(b) => b,
            Err(_) => return refuse(StatusCode::PAYLOAD_TOO_LARGE, "request body too large"),
        };
        let digest = sha256_hex(&bytes);
        let found = match (early, &declared) {
            (Some(k), Some(d)) => {
                if *d != digest {
                    return auth.fail(
                        &ctx,
                        Some(&tenant),
                        AuthFailure::DigestMismatch,
                        StatusCode::UNAUTHORIZED,
                        "the body does not match X-Firebreak-Content-SHA256",
                    );
                }
                Some(k)
            }
            _ => key_for(&digest),
        };
        let Some(key) = found else {
            return auth.fail(
                &ctx,
                Some(&tenant),
                AuthFailure::BadSignature,
                StatusCode::UNAUTHORIZED,
                "bad signature",
            );
        };
        {
            let mut seen = auth.seen.lock().unwrap_or_else(|e| e.into_inner());
            seen.retain(|_, at| now.abs_diff(*at) <= 300);
            let sig = unhex(&sig).unwrap_or_default();
            if seen.insert(sig, ts).is_some() {
                drop(seen);
                return auth.fail(
                    &ctx,
                    Some(&tenant),
                    AuthFailure::Replay,
                    StatusCode::UNAUTHORIZED,
                    "replayed request",
                );
            }
        }
        caller = Caller {
            tenant: key.tenant.clone(),
            method: "hmac",
            credential: format!("hmac:{}", key.tenant),
            scopes: key.scopes.clone(),
        };
        Body::from(bytes)
    } else {
        let token = header_str("authorization")
            .and_then(|v| v.strip_prefix("Bearer ").map(str::to_owned))
            .or_else(|| {
                (path == QUERY_TOKEN_PATH)
                    .then(|| {
                        parts.uri.query().and_then(|q| {
                            q.split('&')
                                .find_map(|kv| kv.strip_prefix("access_token=").map(str::to_owned))
                        })
                    })
                    .flatten()
            });
        let Some(token) = token else {
            return auth.fail(
                &ctx,
                None,
                AuthFailure::Missing,
                StatusCode::UNAUTHORIZED,
                "credentials required",
            );
        };
        let Some(c) = auth.bearer(token.trim()) else {
            return auth.fail(
                &ctx,
                None,
                AuthFailure::BadToken,
                StatusCode::UNAUTHORIZED,
                "unknown token",
            );
        };
        caller = c;
        body
    };
    let limited = auth
        .rate
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .take(&caller.tenant, Instant::now());
    if let Err(secs) = limited {
        auth.metrics.throttled(ThrottleLimit::TenantRate);
        return throttled(secs, "request rate limit reached for this tenant");
    }
    if !caller.has(scope) {
        return auth.fail(
            &ctx,
            Some(&caller.tenant),
            AuthFailure::Scope,
            StatusCode::FORBIDDEN,
            &format!("this credential lacks the {scope} scope"),
        );
    }
    if reserved.is_none() {
        match auth.reserve_body(&parts.headers) {
            Ok(r) => reserved = Some(r),
            Err(busy) => return *busy,
        }
    }
    parts.extensions.insert(caller);
    let response = next.run(Request::from_parts(parts, body)).await;
    // The handler has read (or dropped) the body.
    drop(reserved);
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scopes_by_route() {
        assert_eq!(required_scope(&Method::GET, "/healthz"), None);
        assert_eq!(
            required_scope(&Method::GET, "/metrics"),
            Some(Scope::Metrics)
        );
        assert!(Caller::new("a", "bearer", &[Scope::Read]).has(Scope::Metrics));
        assert!(!Caller::new("a", "bearer", &[Scope::Metrics]).has(Scope::Read));
        assert_eq!(
            required_scope(&Method::PUT, "/v1/streams/a/segments/3"),
            Some(Scope::Ingest)
        );
        assert_eq!(
            required_scope(&Method::GET, "/v1/streams"),
            Some(Scope::Read)
        );
        assert_eq!(
            required_scope(&Method::GET, "/v1/audit"),
            Some(Scope::Operator)
        );
        assert_eq!(
            required_scope(&Method::POST, "/v1/escalations/x/ack"),
            Some(Scope::Operator)
        );
        assert_eq!(
            required_scope(&Method::PUT, "/v1/policy"),
            Some(Scope::Admin)
        );
        assert_eq!(
            required_scope(&Method::PATCH, "/v1/policy/rules/r"),
            Some(Scope::Admin)
        );
        assert_eq!(
            required_scope(&Method::POST, "/v1/incidents/x/confirm"),
            Some(Scope::Operator)
        );
        assert_eq!(
            required_scope(&Method::POST, "/v1/incidents/x/promote"),
            Some(Scope::Admin)
        );
        assert_eq!(
            required_scope(&Method::POST, "/v1/reload"),
            Some(Scope::Admin)
        );
        assert_eq!(
            required_scope(&Method::GET, "/v1/policy"),
            Some(Scope::Read)
        );
        let admin = Caller::new("ops", "bearer", &[Scope::Admin]);
        assert!(admin.has(Scope::Operator) && admin.has(Scope::Read) && !admin.has(Scope::Ingest));
        assert_eq!(
            required_scope(&Method::POST, "/v1/policy/rollback"),
            Some(Scope::Admin)
        );
        assert_eq!(admin.tenant_filter(), None);
        let op = Caller::new("a", "bearer", &[Scope::Operator]);
        assert!(op.has(Scope::Read) && !op.has(Scope::Admin));
        assert_eq!(op.tenant_filter(), Some("a"));
    }
}
