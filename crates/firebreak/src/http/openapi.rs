//! The OpenAPI document of the HTTP API, generated from the handlers.
//!
//! Each handler carries its `#[utoipa::path]` (path, parameters, body, answers with
//! their typed bodies), and `api::api()` / `ingest::api()` register every route from it,
//! so the router serves exactly the documented operations. What applies to every
//! authenticated operation is added here, from the code that enforces it: the scope of
//! each operation comes from [`auth::required_scope`], the only function the
//! authentication layer asks, and the 401/403/408/413/429 answers of that layer are
//! added to every operation it guards.
//!
//! `firebreak openapi` prints [`json`]; `crates/firebreak/openapi.json` is that output,
//! and a test fails when the two differ (regenerate with `make openapi`).

use axum::http::Method;
use utoipa::openapi::header::HeaderBuilder;
use utoipa::openapi::path::Operation;
use utoipa::openapi::security::{
    ApiKey, ApiKeyValue, HttpAuthScheme, HttpBuilder, SecurityRequirement, SecurityScheme,
};
use utoipa::openapi::{ContentBuilder, ObjectBuilder, Ref, RefOr, ResponseBuilder, Type};
use utoipa::{Modify, OpenApi};

use crate::http::{ErrorBody, api, auth, ingest};

/// The bearer-token security scheme's name.
pub const BEARER: &str = "bearer";
/// The HMAC scheme's three headers (all required together), by scheme name.
pub const HMAC: [(&str, &str); 3] = [
    ("hmac_tenant", "X-Firebreak-Tenant"),
    ("hmac_timestamp", "X-Firebreak-Timestamp"),
    ("hmac_signature", "X-Firebreak-Signature"),
];
/// The `?access_token=` scheme (only on [`auth::QUERY_TOKEN_PATH`]).
pub const QUERY_TOKEN: &str = "access_token";

const DESCRIPTION: &str = "\
HTTP API of `firebreak run`: push and pulled streams, escalations and their live feed, \
the policy and its audit log.

**Authentication.** `/`, `/healthz` and `/readyz` are open. Every other operation needs a \
credential holding the scope listed in its `security` (the same scope under every scheme \
of the operation): a bearer token, or an HMAC-signed request. Scopes: `ingest` (push and \
register streams), `read` (streams, escalations, events, policy; implies `metrics`), \
`operator` (acknowledge, resolve, the audit log; implies `read`), `admin` (policy changes, \
reload, every tenant's streams and incidents; implies `operator`), `metrics` (`/metrics` \
only). Missing or wrong credentials answer 401, a credential without the scope 403, a \
body over `server.max_body_bytes` 413, a body not received within \
`server.body_timeout_secs` 408; a tenant over its request rate, or an address with too \
many failed authentications, 429 with `Retry-After`.

**Tenants.** A stream belongs to the tenant of the credential that created it; its \
incidents, timeline and events are that tenant's. Other tenants get 404 for it; `admin` \
sees everything.

**Conventions.** Errors are `{\"error\": \"message\"}` (`ErrorBody`) unless an answer says \
otherwise. Times named `*_ms` are Unix milliseconds; `media_time`, `media_start` and \
`media_end` are stream media time in seconds. Regenerate this document with \
`make openapi` (`firebreak openapi > crates/firebreak/openapi.json`).";

/// The parts of the document no handler states: its info, tags, the security schemes
/// and the shared answers.
#[derive(OpenApi)]
#[openapi(
    info(
        title = "Firebreak daemon API",
        version = "1",
        description = DESCRIPTION,
        license(name = "Apache-2.0", identifier = "Apache-2.0"),
    ),
    tags(
        (name = "streams", description = "Pushed and pulled streams, their counters and risk timelines."),
        (name = "escalations", description = "Incidents, acknowledgement and resolution, and the live feed."),
        (name = "policy", description = "The escalation policy, reload and the audit log."),
        (name = "signals", description = "Labels of recorded streams, for replays of the signal log."),
        (name = "service", description = "Dashboard, health, readiness and metrics."),
    ),
    components(schemas(ErrorBody, crate::engine::StreamUpdate)),
    modifiers(&Shared),
)]
struct ApiDoc;

/// Adds the security schemes and the shared answers to the components.
struct Shared;

impl Modify for Shared {
    fn modify(&self, doc: &mut utoipa::openapi::OpenApi) {
        let components = doc.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            BEARER,
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .description(Some(
                        "`Authorization: Bearer TOKEN`. The config holds only the token's \
                         sha256 (`[[auth.tokens]]`), with the token's tenant and scopes.",
                    ))
                    .build(),
            ),
        );
        let hmac_note = "An HMAC-signed request sends all three `X-Firebreak-*` headers. \
            `X-Firebreak-Timestamp` is Unix seconds, within 300 s of the server's clock. \
            `X-Firebreak-Signature` is lowercase hex HMAC-SHA256(secret, METHOD + \"\\n\" + \
            PATH?QUERY + \"\\n\" + TIMESTAMP + \"\\n\" + lowercase hex SHA-256(BODY)), with \
            the tenant's secret (`[[auth.hmac]]`, from an environment variable), the path and \
            query exactly as sent and the exact body bytes. A signature is accepted once: a \
            replay answers 401.";
        for (name, header) in HMAC {
            components.add_security_scheme(
                name,
                SecurityScheme::ApiKey(ApiKey::Header(ApiKeyValue::with_description(
                    header, hmac_note,
                ))),
            );
        }
        components.add_security_scheme(
            QUERY_TOKEN,
            SecurityScheme::ApiKey(ApiKey::Query(ApiKeyValue::with_description(
                "access_token",
                "The bearer token as a query parameter, accepted on `GET /v1/events` only \
                 (a browser's `EventSource` cannot set headers).",
            ))),
        );
        let error = |description: &str| {
            ResponseBuilder::new().description(description).content(
                "application/json",
                ContentBuilder::new()
                    .schema(Some(Ref::from_schema_name("ErrorBody")))
                    .build(),
            )
        };
        let seconds = || {
            HeaderBuilder::new()
                .schema(Some(
                    ObjectBuilder::new()
                        .schema_type(Type::Integer)
                        .minimum(Some(1)),
                ))
                .description(Some("Seconds to wait before trying again."))
                .build()
        };
        let shared = [
            (
                "Unauthorized",
                error(
                    "Missing or wrong credentials (also a stale timestamp or a replayed \
                     signature).",
                )
                .header(
                    "WWW-Authenticate",
                    HeaderBuilder::new()
                        .schema(Some(ObjectBuilder::new().schema_type(Type::String)))
                        .description(Some("`Bearer realm=\"firebreak\"`"))
                        .build(),
                )
                .build(),
            ),
            (
                "Forbidden",
                error("The credential lacks the operation's scope.").build(),
            ),
            (
                "RequestTimeout",
                error(
                    "The body was not received within `server.body_timeout_secs`; the \
                     connection is closed.",
                )
                .build(),
            ),
            (
                "PayloadTooLarge",
                error("The body is over `server.max_body_bytes`.").build(),
            ),
            (
                "TooManyRequests",
                error(
                    "The tenant is over its request rate (`server.tenant_requests_per_sec`, \
                     `tenant_request_burst`), or this address failed authentication too \
                     often (`server.auth_failures_per_minute`).",
                )
                .header("Retry-After", seconds())
                .build(),
            ),
        ];
        for (name, response) in shared {
            components
                .responses
                .insert(name.to_owned(), response.into());
        }
    }
}

/// Every operation of a path item, with its method.
fn operations(item: &mut utoipa::openapi::PathItem) -> Vec<(Method, &mut Operation)> {
    [
        (Method::GET, item.get.as_mut()),
        (Method::PUT, item.put.as_mut()),
        (Method::POST, item.post.as_mut()),
        (Method::DELETE, item.delete.as_mut()),
        (Method::PATCH, item.patch.as_mut()),
        (Method::HEAD, item.head.as_mut()),
        (Method::OPTIONS, item.options.as_mut()),
        (Method::TRACE, item.trace.as_mut()),
    ]
    .into_iter()
    .filter_map(|(m, op)| op.map(|op| (m, op)))
    .collect()
}

/// Adds to each operation the authentication layer's part: its scope under every
/// scheme, and the answers the layer gives.
fn add_authentication(doc: &mut utoipa::openapi::OpenApi) {
    for (path, item) in doc.paths.paths.iter_mut() {
        for (method, op) in operations(item) {
            let Some(scope) = auth::required_scope(&method, path).map(|s| s.as_str()) else {
                continue;
            };
            let mut schemes = vec![SecurityRequirement::new(BEARER, [scope])];
            let mut hmac = SecurityRequirement::default();
            for (name, _) in HMAC {
                hmac = hmac.add(name, [scope]);
            }
            schemes.push(hmac);
            if path == auth::QUERY_TOKEN_PATH {
                schemes.push(SecurityRequirement::new(QUERY_TOKEN, [scope]));
            }
            op.security = Some(schemes);
            let responses = &mut op.responses.responses;
            let mut shared = vec![
                ("401", "Unauthorized"),
                ("403", "Forbidden"),
                ("429", "TooManyRequests"),
            ];
            if op.request_body.is_some() {
                shared.extend([("408", "RequestTimeout"), ("413", "PayloadTooLarge")]);
            }
            for (status, name) in shared {
                match responses.get_mut(status) {
                    None => {
                        responses
                            .insert(status.to_owned(), RefOr::Ref(Ref::from_response_name(name)));
                    }
                    // The operation's own 429 (stream limits): the layer's too.
                    Some(RefOr::T(own)) => {
                        own.description.push_str(
                            " Also the tenant's request rate or this address's failed \
                             authentications, as `TooManyRequests`.",
                        );
                    }
                    Some(RefOr::Ref(_)) => {}
                }
            }
        }
    }
}

/// The whole document.
pub fn document() -> utoipa::openapi::OpenApi {
    let mut doc = ApiDoc::openapi();
    doc.merge(ingest::api().into_openapi());
    doc.merge(api::api().into_openapi());
    add_authentication(&mut doc);
    doc
}

/// [`document`] as pretty JSON with a final newline: the content of
/// `crates/firebreak/openapi.json`.
pub fn json() -> String {
    let mut text = document()
        .to_pretty_json()
        .expect("the OpenAPI document is JSON");
    text.push('\n');
    text
}

/// Every `(METHOD, path template)` the document describes, sorted.
pub fn operations_of(doc: &utoipa::openapi::OpenApi) -> Vec<(String, String)> {
    let mut doc = doc.clone();
    let mut out: Vec<(String, String)> = doc
        .paths
        .paths
        .iter_mut()
        .flat_map(|(path, item)| {
            operations(item)
                .into_iter()
                .map(|(m, _)| (m.to_string(), path.clone()))
                .collect::<Vec<_>>()
        })
        .collect();
    out.sort();
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_authenticated_operation_lists_its_scope_under_every_scheme() {
        let doc: serde_json::Value = serde_json::from_str(&json()).unwrap();
        let mut checked = 0;
        for (path, item) in doc["paths"].as_object().unwrap() {
            for (method, op) in item.as_object().unwrap() {
                let m: Method = method.to_uppercase().parse().unwrap();
                let security = &op["security"];
                match auth::required_scope(&m, path).map(|s| s.as_str()) {
                    None => assert!(security.is_null(), "{method} {path} is open"),
                    Some(scope) => {
                        let reqs = security.as_array().expect("security");
                        let expected = if path == auth::QUERY_TOKEN_PATH { 3 } else { 2 };
                        assert_eq!(reqs.len(), expected, "{method} {path}");
                        for req in reqs {
                            for (_, scopes) in req.as_object().unwrap() {
                                assert_eq!(scopes, &serde_json::json!([scope]), "{method} {path}");
                            }
                        }
                        for status in ["401", "403", "429"] {
                            assert!(
                                !op["responses"][status].is_null(),
                                "{method} {path} {status}"
                            );
                        }
                        checked += 1;
                    }
                }
            }
        }
        // 26 operations, 3 of them open.
        assert_eq!(checked, 23);
    }

    /// The router and the document are made from one list only if every route goes
    /// through `utoipa_axum::routes!` (which needs the handler's `#[utoipa::path]`): a
    /// route added any other way would be served undocumented.
    #[test]
    fn routes_are_registered_only_with_their_documentation() {
        let sources = [
            ("http/mod.rs", include_str!("mod.rs")),
            ("http/api.rs", include_str!("api.rs")),
            ("http/ingest.rs", include_str!("ingest.rs")),
            (
                "http/policy_versions.rs",
                include_str!("policy_versions.rs"),
            ),
        ];
        for (file, src) in sources {
            for call in [
                ".route(",
                ".route_service(",
                ".nest(",
                ".nest_service(",
                ".fallback(",
                ".fallback_service(",
            ] {
                assert!(
                    !src.contains(call),
                    "{file} registers a route with `{call}`: use routes! with a \
                     #[utoipa::path] handler"
                );
            }
        }
    }
}
