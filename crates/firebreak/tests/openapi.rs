//! The OpenAPI document (`crates/firebreak/openapi.json`) against the code: it is what
//! `firebreak openapi` generates from the handlers, every operation it lists is served
//! by the real router and nothing else on those paths is, each operation needs exactly
//! the scope it lists, and the rule-patch fields it lists are those the daemon takes.
//!
//! The daemon is built in-process (`Daemon::build`) and called through its router.

use std::collections::BTreeSet;
use std::path::Path;
use std::process::Command;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use firebreak::config::ServiceConfig;
use firebreak::daemon::Daemon;
use serde_json::{Value, json};
use tower::ServiceExt;

/// The command that regenerates the committed document (also `make openapi`).
const REGENERATE: &str =
    "cargo run -q -p firebreak -- openapi > crates/firebreak/openapi.json   (or: make openapi)";

/// The scopes, and a token holding only that one.
const SCOPED: [(&str, &str); 5] = [
    ("ingest", "only-ingest"),
    ("read", "only-read"),
    ("operator", "only-operator"),
    ("admin", "only-admin"),
    ("metrics", "only-metrics"),
];
/// A token with every scope.
const ALL: &str = "every-scope";

fn committed() -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("openapi.json");
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn document() -> Value {
    serde_json::from_str(&committed()).expect("openapi.json is JSON")
}

/// Whether a credential with `held` may do what needs `needed`, as the README states
/// it: admin implies operator, operator implies read, read implies metrics; ingest
/// implies nothing and is implied by nothing.
fn implies(held: &str, needed: &str) -> bool {
    const CHAIN: [&str; 4] = ["admin", "operator", "read", "metrics"];
    let rank = |s: &str| CHAIN.iter().position(|c| *c == s);
    held == needed || matches!((rank(held), rank(needed)), (Some(h), Some(n)) if h <= n)
}

/// `(METHOD, path template, scope)` of every operation in `doc` (scope `None`: open).
fn operations(doc: &Value) -> Vec<(String, String, Option<String>)> {
    let mut out = Vec::new();
    for (path, item) in doc["paths"].as_object().expect("paths") {
        for (method, op) in item.as_object().expect("path item") {
            let scope = op["security"].as_array().map(|reqs| {
                // Every scheme of an operation lists the same one scope.
                let scopes: BTreeSet<String> = reqs
                    .iter()
                    .flat_map(|r| r.as_object().unwrap().values())
                    .map(|s| s.to_string())
                    .collect();
                assert_eq!(scopes.len(), 1, "{method} {path}: {scopes:?}");
                let only: Value = serde_json::from_str(scopes.first().unwrap()).unwrap();
                assert_eq!(only.as_array().unwrap().len(), 1, "{method} {path}");
                only[0].as_str().unwrap().to_owned()
            });
            out.push((method.to_uppercase(), path.clone(), scope));
        }
    }
    out
}

/// A path template with its parameters filled in.
fn concrete(template: &str) -> String {
    template
        .replace("{id}", "nope")
        .replace("{seq}", "0")
        .replace("{name}", "nope")
}

struct Harness {
    daemon: Daemon,
    _dir: tempfile::TempDir,
}

fn daemon() -> Harness {
    let dir = tempfile::tempdir().unwrap();
    let mut text = format!(
        "data_dir = \"{}\"\nworker_id = \"openapi-test\"\n[server]\nauth_failures_per_minute = 10000\n",
        dir.path().join("data").display()
    );
    let hash = |t: &str| firebreak_testkit::sha256_hex(t.as_bytes());
    for (scope, token) in SCOPED {
        text.push_str(&format!(
            "[[auth.tokens]]\ntenant = \"{scope}-tenant\"\ntoken_sha256 = \"{}\"\nscopes = [\"{scope}\"]\n",
            hash(token)
        ));
    }
    text.push_str(&format!(
        "[[auth.tokens]]\ntenant = \"all\"\ntoken_sha256 = \"{}\"\nscopes = [\"ingest\", \"read\", \"operator\", \"admin\", \"metrics\"]\n",
        hash(ALL)
    ));
    let config = ServiceConfig::parse(&text, dir.path()).unwrap();
    Harness {
        daemon: Daemon::build(config).unwrap(),
        _dir: dir,
    }
}

impl Harness {
    /// Calls the router; the body is read only when `read_body` (an event stream never
    /// ends).
    async fn call(
        &self,
        method: &str,
        path: &str,
        token: Option<&str>,
        body: &str,
        read_body: bool,
    ) -> (StatusCode, Vec<u8>) {
        let mut req = Request::builder()
            .method(method)
            .uri(path)
            .header("content-type", "application/json");
        if let Some(t) = token {
            req = req.header("authorization", format!("Bearer {t}"));
        }
        let req = req.body(Body::from(body.to_owned())).unwrap();
        let resp = self.daemon.router().oneshot(req).await.unwrap();
        let status = resp.status();
        if !read_body {
            return (status, Vec::new());
        }
        let bytes = axum::body::to_bytes(resp.into_body(), 1 << 22)
            .await
            .unwrap();
        (status, bytes.to_vec())
    }
}

#[test]
fn the_committed_document_is_what_firebreak_openapi_prints() {
    let out = Command::new(env!("CARGO_BIN_EXE_firebreak"))
        .arg("openapi")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let generated = String::from_utf8(out.stdout).unwrap();
    let committed = committed();
    if generated != committed {
        let line = generated
            .lines()
            .zip(committed.lines())
            .position(|(a, b)| a != b)
            .map_or_else(
                || generated.lines().count().min(committed.lines().count()) + 1,
                |i| i + 1,
            );
        panic!(
            "crates/firebreak/openapi.json is not the document the handlers generate \
             (first difference at line {line}). Regenerate it and commit the result:\n    {REGENERATE}"
        );
    }
}

#[test]
fn the_document_is_openapi_3_1_with_every_reference_resolved() {
    let doc = document();
    assert_eq!(doc["openapi"], "3.1.0");
    assert!(doc["info"]["title"].is_string() && doc["info"]["version"].is_string());
    // Every `$ref` names a component that exists.
    fn refs<'a>(v: &'a Value, out: &mut Vec<&'a str>) {
        match v {
            Value::Object(m) => {
                if let Some(Value::String(r)) = m.get("$ref") {
                    out.push(r);
                }
                m.values().for_each(|x| refs(x, out));
            }
            Value::Array(a) => a.iter().for_each(|x| refs(x, out)),
            _ => {}
        }
    }
    let mut all = Vec::new();
    refs(&doc, &mut all);
    assert!(all.len() > 50, "{}", all.len());
    for r in all {
        let parts: Vec<&str> = r.trim_start_matches("#/").split('/').collect();
        assert_eq!(parts.len(), 3, "{r}");
        assert!(
            !doc[parts[0]][parts[1]][parts[2]].is_null(),
            "{r} does not resolve"
        );
    }
    // Every security requirement names a declared scheme; every path parameter in a
    // template is declared on the operation.
    let schemes = doc["components"]["securitySchemes"].as_object().unwrap();
    for (path, item) in doc["paths"].as_object().unwrap() {
        for (method, op) in item.as_object().unwrap() {
            for req in op["security"].as_array().into_iter().flatten() {
                for name in req.as_object().unwrap().keys() {
                    assert!(schemes.contains_key(name), "{method} {path}: {name}");
                }
            }
            let declared: BTreeSet<&str> = op["parameters"]
                .as_array()
                .into_iter()
                .flatten()
                .filter(|p| p["in"] == "path")
                .map(|p| p["name"].as_str().unwrap())
                .collect();
            let in_template: BTreeSet<&str> = path
                .split('/')
                .filter_map(|s| s.strip_prefix('{').and_then(|s| s.strip_suffix('}')))
                .collect();
            assert_eq!(declared, in_template, "{method} {path}");
            assert!(op["operationId"].is_string(), "{method} {path}");
        }
    }
}

/// Every documented operation is served by the daemon's router (not its own 404 or a
/// 405), every other method on a documented path is a 405, and paths the document does
/// not have are the router's 404.
#[tokio::test(flavor = "multi_thread")]
async fn the_router_serves_exactly_the_documented_operations() {
    let doc = document();
    let h = daemon();
    let ops = operations(&doc);
    let methods = ["GET", "PUT", "POST", "DELETE", "PATCH"];
    let paths: BTreeSet<&str> = ops.iter().map(|(_, p, _)| p.as_str()).collect();
    for path in paths {
        for method in methods {
            let documented = ops.iter().any(|(m, p, _)| m == method && p == path);
            let stream = path == "/v1/events" && method == "GET";
            let (status, body) = h
                .call(method, &concrete(path), Some(ALL), "", !stream)
                .await;
            if documented {
                assert_ne!(status, StatusCode::METHOD_NOT_ALLOWED, "{method} {path}");
                // A handler's 404 says what is missing; the router's has no body.
                if status == StatusCode::NOT_FOUND {
                    let v: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
                    assert!(
                        v["error"].is_string(),
                        "{method} {path}: the router does not serve it"
                    );
                }
            } else {
                assert_eq!(
                    status,
                    StatusCode::METHOD_NOT_ALLOWED,
                    "{method} {path} is served but not documented"
                );
            }
        }
    }
    // 17 authenticated operations and 3 open ones.
    assert_eq!(ops.len(), 20, "{ops:?}");
    for path in [
        "/v1",
        "/v1/incidents",
        "/v1/streams/a/b",
        "/openapi.json",
        "/v2/streams",
    ] {
        for method in methods {
            let (status, body) = h.call(method, path, Some(ALL), "", true).await;
            assert_eq!(status, StatusCode::NOT_FOUND, "{method} {path}");
            assert!(
                body.is_empty(),
                "{method} {path}: {}",
                String::from_utf8_lossy(&body)
            );
        }
    }
}

/// Each operation answers a credential that holds the scope the document lists (or one
/// implying it) past authentication, refuses every other scope with 403 and a missing
/// credential with 401; open operations need nothing.
#[tokio::test(flavor = "multi_thread")]
async fn each_operation_needs_the_scope_the_document_lists() {
    let doc = document();
    let h = daemon();
    let mut checked = 0;
    for (method, path, scope) in operations(&doc) {
        let stream = path == "/v1/events";
        let url = concrete(&path);
        let Some(needed) = scope else {
            let (status, _) = h.call(&method, &url, None, "", !stream).await;
            assert!(
                status.is_success(),
                "{method} {path} is documented as open: {status}"
            );
            continue;
        };
        let (status, _) = h.call(&method, &url, None, "", !stream).await;
        assert_eq!(
            status,
            StatusCode::UNAUTHORIZED,
            "{method} {path} without a credential"
        );
        for (held, token) in SCOPED {
            let (status, _) = h.call(&method, &url, Some(token), "", !stream).await;
            if implies(held, &needed) {
                assert!(
                    status != StatusCode::FORBIDDEN && status != StatusCode::UNAUTHORIZED,
                    "{method} {path} needs {needed}: refused {held} with {status}"
                );
            } else {
                assert_eq!(
                    status,
                    StatusCode::FORBIDDEN,
                    "{method} {path} needs {needed}: {held} got through"
                );
            }
            checked += 1;
        }
    }
    assert_eq!(checked, 17 * SCOPED.len());
}

/// The fields the document lists for `PATCH /v1/policy/rules/{name}` are those the
/// daemon takes: each documented one is accepted (set to its current value), and a
/// field outside the list is refused naming it.
#[tokio::test(flavor = "multi_thread")]
async fn the_rule_patch_fields_are_those_the_daemon_takes() {
    let doc = document();
    let op = &doc["paths"]["/v1/policy/rules/{name}"]["patch"];
    let schema = &op["requestBody"]["content"]["application/json"]["schema"]["$ref"];
    assert_eq!(schema, "#/components/schemas/RulePatch");
    let fields: Vec<String> = doc["components"]["schemas"]["RulePatch"]["properties"]
        .as_object()
        .unwrap()
        .keys()
        .cloned()
        .collect();
    assert!(!fields.is_empty());
    let h = daemon();
    let (status, body) = h.call("GET", "/v1/policy", Some(ALL), "", true).await;
    assert_eq!(status, StatusCode::OK);
    let policy: Value = serde_json::from_slice(&body).unwrap();
    let parsed: toml::Value = toml::from_str(policy["toml"].as_str().unwrap()).unwrap();
    let rule = &parsed["rule"][0];
    let name = rule["name"].as_str().unwrap();
    let url = format!("/v1/policy/rules/{name}");
    for field in &fields {
        let value = rule
            .get(field)
            .unwrap_or_else(|| panic!("the policy's rule has no {field}"));
        let value: Value = serde_json::to_value(value).unwrap();
        let body = json!({ field.as_str(): value }).to_string();
        let (status, answer) = h.call("PATCH", &url, Some(ALL), &body, true).await;
        assert_eq!(
            status,
            StatusCode::OK,
            "{field}: {}",
            String::from_utf8_lossy(&answer)
        );
    }
    let (status, answer) = h
        .call("PATCH", &url, Some(ALL), r#"{"cooldown_secs": 1}"#, true)
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    let answer: Value = serde_json::from_slice(&answer).unwrap();
    assert_eq!(answer["errors"][0]["path"], "cooldown_secs");
}
