//! The ops API's tokens: created at the first start, kept across restarts, required on
//! every `/api/ops/v1/` call.

use std::os::unix::fs::PermissionsExt;

use crate::util::{Server, client, json};

fn call(s: &Server, path: &str, token: Option<&str>) -> (u16, serde_json::Value) {
    let mut req = client().get(s.url(path));
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    let r = req.send().expect("request");
    let status = r.status().as_u16();
    let body = r.text().expect("body");
    (status, json(&body))
}

#[test]
fn first_start_tokens_guard_the_ops_api() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    let s = Server::start(&data, &[]);
    let read = |name: &str| {
        let p = data.join(name);
        let mode = std::fs::metadata(&p)
            .expect("token file")
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600, "{name} is readable by its owner only");
        std::fs::read_to_string(&p)
            .expect("token")
            .trim()
            .to_string()
    };
    let admin = read("admin.token");
    let enroll = read("enroll.token");
    assert!(admin.starts_with("minos_admin_") && enroll.starts_with("minos_enroll_"));

    let (code, body) = call(&s, "/api/ops/v1/tree", None);
    assert_eq!(code, 401, "{body}");
    assert_eq!(body["errorType"], "unauthorized");
    let (code, _) = call(&s, "/api/ops/v1/tree", Some("minos_admin_0000"));
    assert_eq!(code, 401);
    let (code, body) = call(&s, "/api/ops/v1/hosts", Some(&enroll));
    assert_eq!(code, 403, "{body}");
    let (code, body) = call(&s, "/api/ops/v1/tree", Some(&admin));
    assert_eq!(code, 200, "{body}");
    assert_eq!(body["data"]["nodes"], serde_json::json!([]));
    let (code, body) = call(&s, "/api/ops/v1/hosts?selector=*", Some(&admin));
    assert_eq!(code, 200, "{body}");
    assert_eq!(body["data"]["hosts"], serde_json::json!([]));
    let (code, body) = call(&s, "/api/ops/v1/hosts?selector=team%3Dsre,,x", Some(&admin));
    assert_eq!(code, 400, "{body}");
    assert!(
        body["error"].as_str().unwrap_or("").contains("position 10"),
        "{body}"
    );
    // The Prometheus-compatible API stays open.
    let r = client()
        .get(s.url("/api/v1/query?query=1"))
        .send()
        .expect("query");
    assert_eq!(r.status().as_u16(), 200);
    s.stop();

    // A restart keeps the tokens and creates no new ones.
    let s = Server::start(&data, &[]);
    assert_eq!(read("admin.token"), admin);
    let (code, _) = call(&s, "/api/ops/v1/tree", Some(&admin));
    assert_eq!(code, 200);
    s.stop();
}
