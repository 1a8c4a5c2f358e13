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
    // 23 authenticated operations and 3 open ones.
    assert_eq!(ops.len(), 26, "{ops:?}");
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
    assert_eq!(checked, 23 * SCOPED.len());
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

/// A validator of answers to `METHOD template` with `status`, from the document: the
/// response's JSON schema (following a shared response's `$ref`), with the document's
/// components beside it so its `$ref`s resolve. Plain object schemas are closed
/// (`unevaluatedProperties: false`), so a field the document does not list fails too.
/// `None` if the document has no such answer.
fn answer_schema(doc: &Value, method: &str, template: &str, status: u16) -> Option<Value> {
    let op = &doc["paths"][template][method.to_lowercase()];
    assert!(op.is_object(), "{method} {template} is not documented");
    let mut response = &op["responses"][status.to_string()];
    if let Some(r) = response["$ref"].as_str() {
        let name = r.strip_prefix("#/components/responses/").unwrap();
        response = &doc["components"]["responses"][name];
    }
    if response.is_null() {
        return None;
    }
    let schema = response["content"]["application/json"]["schema"].clone();
    assert!(
        schema.is_object(),
        "{method} {template} {status}: no JSON schema"
    );
    let mut components = doc["components"].clone();
    for (_, s) in components["schemas"].as_object_mut().unwrap() {
        if s.get("properties").is_some() {
            s["unevaluatedProperties"] = json!(false);
        }
    }
    let mut root = json!({
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "components": components,
    });
    root.as_object_mut()
        .unwrap()
        .extend(schema.as_object().unwrap().clone());
    Some(root)
}

impl Harness {
    /// Calls `method` on `template` filled in as `path`, asserts the answer's status is
    /// documented and its body valid against the documented schema, and returns both.
    async fn checked(
        &self,
        doc: &Value,
        method: &str,
        template: &str,
        path: &str,
        token: Option<&str>,
        body: &[u8],
    ) -> (StatusCode, Value) {
        let mut req = Request::builder().method(method).uri(path);
        if let Some(t) = token {
            req = req.header("authorization", format!("Bearer {t}"));
        }
        let req = req.body(Body::from(body.to_vec())).unwrap();
        let resp = self.daemon.router().oneshot(req).await.unwrap();
        let status = resp.status();
        let bytes = axum::body::to_bytes(resp.into_body(), 1 << 22)
            .await
            .unwrap();
        let value: Value = serde_json::from_slice(&bytes).unwrap_or_else(|e| {
            panic!(
                "{method} {path} {status}: not JSON ({e}): {}",
                String::from_utf8_lossy(&bytes)
            )
        });
        let schema = answer_schema(doc, method, template, status.as_u16())
            .unwrap_or_else(|| panic!("{method} {template}: {status} is not documented: {value}"));
        let validator = jsonschema::validator_for(&schema).unwrap();
        let errors: Vec<String> = validator
            .iter_errors(&value)
            .map(|e| format!("{} at {}", e, e.instance_path))
            .collect();
        assert!(
            errors.is_empty(),
            "{method} {path} {status}: {value}\ndoes not match the document: {errors:#?}"
        );
        (status, value)
    }
}

/// What the daemon answers matches what the document says it answers: each status is
/// documented for its operation, and each body is valid against the documented schema
/// (closed objects: no undocumented field), for answers with content and errors.
#[tokio::test(flavor = "multi_thread")]
async fn answers_match_the_documented_schemas() {
    let doc = document();
    let h = daemon_with_bank();
    let read = SCOPED[1].1;
    let ingest = SCOPED[0].1;
    let metrics = SCOPED[4].1;

    let (s, v) = h
        .checked(&doc, "GET", "/healthz", "/healthz", None, b"")
        .await;
    assert_eq!((s, v), (StatusCode::OK, json!({"status": "ok"})));
    let (s, v) = h
        .checked(&doc, "GET", "/readyz", "/readyz", None, b"")
        .await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(v["ready"], true);

    // Errors of the authentication layer.
    let esc = "/v1/escalations";
    let (s, _) = h.checked(&doc, "GET", esc, esc, None, b"").await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
    let (s, _) = h.checked(&doc, "GET", esc, esc, Some(metrics), b"").await;
    assert_eq!(s, StatusCode::FORBIDDEN);
    let (s, v) = h.checked(&doc, "GET", esc, esc, Some(ALL), b"").await;
    assert_eq!(
        (s, v),
        (
            StatusCode::OK,
            json!({"escalations": [], "total": 0, "next_offset": null})
        )
    );

    // Acknowledging what does not exist, with and without a valid body.
    let ack = "/v1/escalations/{id}/ack";
    let (s, _) = h
        .checked(
            &doc,
            "POST",
            ack,
            "/v1/escalations/nope/ack",
            Some(ALL),
            br#"{"note":"x"}"#,
        )
        .await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    let (s, _) = h
        .checked(
            &doc,
            "POST",
            ack,
            "/v1/escalations/nope/ack",
            Some(ALL),
            b"not json",
        )
        .await;
    assert_eq!(s, StatusCode::BAD_REQUEST);

    // The policy: a rule patched, refused, unknown; a whole policy refused.
    let (_, policy) = h
        .checked(&doc, "GET", "/v1/policy", "/v1/policy", Some(ALL), b"")
        .await;
    let parsed: toml::Value = toml::from_str(policy["toml"].as_str().unwrap()).unwrap();
    let rule = parsed["rule"][0]["name"].as_str().unwrap().to_owned();
    let enter = serde_json::to_value(&parsed["rule"][0]["enter"]).unwrap();
    let rules = "/v1/policy/rules/{name}";
    let url = format!("/v1/policy/rules/{rule}");
    let patch = json!({ "enter": enter }).to_string();
    let (s, v) = h
        .checked(&doc, "PATCH", rules, &url, Some(ALL), patch.as_bytes())
        .await;
    assert_eq!(s, StatusCode::OK);
    assert!(v["version"].is_string());
    let (s, _) = h
        .checked(&doc, "PATCH", rules, &url, Some(ALL), br#"{"bogus": 1}"#)
        .await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY);
    let (s, _) = h
        .checked(
            &doc,
            "PATCH",
            rules,
            "/v1/policy/rules/nope",
            Some(ALL),
            b"{}",
        )
        .await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    let (s, _) = h
        .checked(
            &doc,
            "PUT",
            "/v1/policy",
            "/v1/policy",
            Some(ALL),
            b"not = [toml",
        )
        .await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY);
    // The history now has the change: with `who` for an admin, without for others.
    let (_, v) = h
        .checked(&doc, "GET", "/v1/policy", "/v1/policy", Some(ALL), b"")
        .await;
    assert_eq!(v["audit"][0]["who"], "all");
    let (_, v) = h
        .checked(&doc, "GET", "/v1/policy", "/v1/policy", Some(read), b"")
        .await;
    assert!(v["audit"][0]["action"].is_string() && v["audit"][0].get("who").is_none());
    let (_, v) = h
        .checked(&doc, "GET", "/v1/audit", "/v1/audit", Some(ALL), b"")
        .await;
    assert!(!v["entries"].as_array().unwrap().is_empty());

    // Reload: the bank as a `[name, entries, negative]` tuple.
    let (s, v) = h
        .checked(&doc, "POST", "/v1/reload", "/v1/reload", Some(ALL), b"")
        .await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(v["banks"], json!([["crisis", 1, false]]));

    // A pushed stream: taken, a duplicate, held; listed, shown; ended twice; removed.
    let seg = "/v1/streams/{id}/segments/{seq}";
    let push = |seq: u64| format!("/v1/streams/cam/segments/{seq}");
    let (_, v) = h
        .checked(&doc, "PUT", seg, &push(0), Some(ingest), b"not video")
        .await;
    assert_eq!(v["result"], "released");
    let (_, v) = h
        .checked(&doc, "PUT", seg, &push(0), Some(ingest), b"not video")
        .await;
    assert_eq!(v["result"], "duplicate");
    let (_, v) = h
        .checked(&doc, "PUT", seg, &push(2), Some(ingest), b"not video")
        .await;
    assert_eq!(v["result"], "held");
    let (s, _) = h
        .checked(&doc, "PUT", seg, &push(3), Some(ingest), b"")
        .await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    let (_, v) = h
        .checked(&doc, "GET", "/v1/streams", "/v1/streams", Some(ALL), b"")
        .await;
    assert_eq!(v["streams"][0]["id"], "cam");
    assert_eq!(v["streams"][0]["tier"], "none");
    let one = "/v1/streams/{id}";
    let (s, _) = h
        .checked(&doc, "GET", one, "/v1/streams/cam", Some(ALL), b"")
        .await;
    assert_eq!(s, StatusCode::OK);
    let (s, _) = h
        .checked(&doc, "GET", one, "/v1/streams/nope", Some(ALL), b"")
        .await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    let timeline = "/v1/streams/{id}/timeline";
    h.checked(
        &doc,
        "GET",
        timeline,
        "/v1/streams/cam/timeline",
        Some(ALL),
        b"",
    )
    .await;
    let end = "/v1/streams/{id}/end";
    let (_, v) = h
        .checked(&doc, "POST", end, "/v1/streams/cam/end", Some(ingest), b"")
        .await;
    assert_eq!(
        (v["result"].clone(), v["released"].clone()),
        (json!("ended"), json!(1))
    );
    let (_, v) = h
        .checked(&doc, "POST", end, "/v1/streams/cam/end", Some(ingest), b"")
        .await;
    assert_eq!(v["result"], "already ended");
    assert!(v.get("released").is_none());
    let (s, v) = h
        .checked(&doc, "DELETE", one, "/v1/streams/cam", Some(ingest), b"")
        .await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(v["id"], "cam");

    // Registrations refused: every problem listed; a file source.
    let streams = "/v1/streams";
    let (s, v) = h
        .checked(
            &doc,
            "POST",
            streams,
            streams,
            Some(ingest),
            br#"{"id": ""}"#,
        )
        .await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    // The document's example is this very answer.
    assert_eq!(
        v,
        doc["components"]["schemas"]["RegistrationInvalid"]["example"]
    );
    let (s, _) = h
        .checked(
            &doc,
            "POST",
            streams,
            streams,
            Some(ingest),
            br#"{"id": "f", "file": "/x.ts"}"#,
        )
        .await;
    assert_eq!(s, StatusCode::FORBIDDEN);
}

/// [`daemon`] with bank `crisis` of one entry in its data directory.
fn daemon_with_bank() -> Harness {
    use firebreak_matching::bank::{Bank, ImportPolicy};
    use firebreak_matching::lists::{Record, Signal};
    use firebreak_matching::store::BankStore;
    let h = daemon();
    let mut bank = Bank::new("crisis", false);
    let report = bank.import(
        vec![Record {
            line: 1,
            id: Some("e1".into()),
            signal: Signal::Pdq {
                hash: "f8f8f0cee0f4a84f06370a22038f63f0b36e2ed596621e1d33e6b39c4e9c9b22"
                    .parse()
                    .unwrap(),
                quality: Some(100),
            },
            labels: vec![],
            delete: false,
        }],
        vec![],
        ImportPolicy::default(),
    );
    assert_eq!(report.added, 1);
    BankStore::new(h._dir.path().join("data").join("banks"))
        .save(&bank)
        .unwrap();
    h
}
