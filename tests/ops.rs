//! The ops API's tokens: created at the first start, kept across restarts, required on
//! every `/api/ops/v1/` call.

use std::os::unix::fs::PermissionsExt;

use crate::util::{Server, call, client, json, send};

/// A server on a fresh data directory, and the admin token of its first start.
fn started() -> (tempfile::TempDir, std::path::PathBuf, Server, String) {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    let s = Server::start(&data, &[]);
    let admin = std::fs::read_to_string(data.join("admin.token"))
        .expect("token")
        .trim()
        .to_string();
    (dir, data, s, admin)
}

/// Runs a `minos` client command against `s` with `token`.
fn cli(s: &Server, token: &str, args: &[&str]) -> (i32, String, String) {
    let url = s.url("");
    let mut all: Vec<&str> = args.to_vec();
    all.extend(["--server", &url, "--token", token]);
    crate::util::minos(&all)
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

fn hostnames(body: &serde_json::Value) -> Vec<String> {
    body["data"]["hosts"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|h| h["hostname"].as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

#[test]
fn the_tree_hosts_and_tags_are_managed_over_the_api() {
    use reqwest::Method;
    use serde_json::json;
    let (_dir, data, s, admin) = started();
    let post = |path: &str, body: serde_json::Value| send(&s, Method::POST, path, &admin, body);
    for (parent, name, kind) in [
        ("/", "sre", "team"),
        ("/sre", "minos", "service"),
        ("/sre/minos", "web", "module"),
        ("", "ops", "team"),
    ] {
        let (code, body) = post(
            "/api/ops/v1/tree/nodes",
            json!({"parent": parent, "name": name, "kind": kind}),
        );
        assert_eq!(code, 200, "{body}");
    }
    let (code, body) = post(
        "/api/ops/v1/tree/nodes",
        json!({"parent": "/sre", "name": "minos", "kind": "service"}),
    );
    assert_eq!((code, body["errorType"].as_str()), (409, Some("conflict")));
    let (code, _) = post(
        "/api/ops/v1/tree/nodes",
        json!({"parent": "/nope", "name": "x", "kind": "team"}),
    );
    assert_eq!(code, 404);
    let (code, body) = post(
        "/api/ops/v1/tree/nodes",
        json!({"name": "x", "kind": "team", "extra": 1}),
    );
    assert_eq!(code, 400, "unknown fields are refused: {body}");
    let (code, _) = send(
        &s,
        Method::POST,
        "/api/ops/v1/tree/nodes",
        &admin,
        json!("{"),
    );
    assert_eq!(code, 400);

    for (h, nodes) in [
        ("web-01", json!(["/sre/minos/web"])),
        ("web-02", json!(["/sre/minos/web"])),
        ("db-01", json!([])),
    ] {
        let (code, body) = post("/api/ops/v1/hosts", json!({"hostname": h, "nodes": nodes}));
        assert_eq!(code, 200, "{body}");
    }
    let (code, _) = post(
        "/api/ops/v1/hosts",
        json!({"hostname": "x-01", "nodes": ["/missing"]}),
    );
    assert_eq!(code, 404);
    let (code, _) = call(&s, "/api/ops/v1/hosts?selector=x-01", Some(&admin));
    assert_eq!(code, 400, "a refused host was not added");
    let (code, body) = post(
        "/api/ops/v1/tags",
        json!({"node": "/sre", "tags": {"env": "prod"}}),
    );
    assert_eq!(code, 200, "{body}");
    let (code, body) = post(
        "/api/ops/v1/tags",
        json!({"host": "web-02", "tags": {"env": "canary"}}),
    );
    assert_eq!(code, 200, "{body}");
    let (code, _) = post(
        "/api/ops/v1/attach",
        json!({"host": "db-01", "node": "/ops"}),
    );
    assert_eq!(code, 200);

    let q = |sel: &str| {
        let (code, body) = call(
            &s,
            &format!("/api/ops/v1/hosts?selector={}", crate::util::urlencode(sel)),
            Some(&admin),
        );
        assert_eq!(code, 200, "{body}");
        hostnames(&body)
    };
    assert_eq!(q("/sre/minos/web"), ["web-01", "web-02"]);
    assert_eq!(q("team=sre,env=prod"), ["web-01"]);
    assert_eq!(q("env=canary"), ["web-02"]);
    assert_eq!(q("team=ops"), ["db-01"]);

    let (code, body) = post(
        "/api/ops/v1/tree/move",
        json!({"path": "/sre", "to": "/sre/minos"}),
    );
    assert_eq!(
        (code, body["errorType"].as_str()),
        (400, Some("bad_data")),
        "{body}"
    );
    let (code, body) = send(
        &s,
        Method::DELETE,
        "/api/ops/v1/tree/nodes?path=/sre/minos",
        &admin,
        json!(null),
    );
    assert_eq!(code, 409, "{body}");
    let (code, body) = post(
        "/api/ops/v1/tree/move",
        json!({"path": "/sre/minos", "to": "/ops"}),
    );
    assert_eq!(code, 200, "{body}");
    assert_eq!(body["data"]["path"], "/ops/minos");
    assert_eq!(q("team=ops"), ["db-01", "web-01", "web-02"]);
    s.stop();

    // Everything survives a restart.
    let s = Server::start(&data, &[]);
    let (code, body) = call(
        &s,
        "/api/ops/v1/hosts?selector=/ops/minos/web",
        Some(&admin),
    );
    assert_eq!(code, 200);
    assert_eq!(hostnames(&body), ["web-01", "web-02"]);
    s.stop();
}

#[test]
fn the_cli_manages_and_lists_the_inventory() {
    let (_dir, _data, s, admin) = started();
    let run = |args: &[&str]| cli(&s, &admin, args);
    for a in [
        &["tree", "add", "/sre", "--kind", "team"][..],
        &["tree", "add", "/sre/minos", "--kind", "service"],
        &["tree", "add", "/sre/minos/web", "--kind", "module"],
        &[
            "hosts",
            "add",
            "web-01",
            "--node",
            "/sre/minos/web",
            "--tag",
            "rack=r1",
        ],
        &["hosts", "add", "db-01"],
        &["tag", "--node", "/sre", "env=prod"],
        &["tag", "web-01", "rack=", "role=frontend"],
    ] {
        let (code, out, err) = run(a);
        assert_eq!(code, 0, "{a:?}: {out}{err}");
    }
    let (code, out, _) = run(&["tree"]);
    assert_eq!(code, 0);
    assert_eq!(
        out, "sre (team)  env=prod\n  minos (service)\n    web (module)\n",
        "{out}"
    );
    let (code, out, _) = run(&["hosts", "list", "env=prod"]);
    assert_eq!(code, 0);
    assert_eq!(
        out,
        "HOST\tSTATUS\tPLACEMENTS\tTAGS\nweb-01\tno agent\t/sre/minos/web\trole=frontend\n"
    );
    let (code, out, _) = run(&["hosts", "list", "--json"]);
    assert_eq!(code, 0);
    assert_eq!(
        crate::util::json(&out)["hosts"].as_array().map(Vec::len),
        Some(2)
    );
    let (code, out, _) = run(&["hosts", "show", "web-01"]);
    assert_eq!(code, 0);
    assert!(
        out.contains("at /sre/minos/web: ") && out.contains("env=prod"),
        "{out}"
    );
    // Refusals print the server's message and exit with 2.
    let (code, _, err) = run(&["tree", "rm", "/sre"]);
    assert_eq!(code, 2);
    assert!(err.contains("/sre is not empty"), "{err}");
    let (code, _, err) = run(&["hosts", "list", "team=sre,,x"]);
    assert_eq!(code, 2);
    assert!(err.contains("position 10"), "{err}");
    let (code, _, err) = crate::util::minos(&["hosts", "list", "--server", &s.url("")]);
    assert_eq!(code, 2);
    assert!(err.contains("no token"), "{err}");
    s.stop();
}

#[test]
fn tokens_are_created_listed_and_revoked_by_admins_only() {
    let (_dir, _data, s, admin) = started();
    let with = |token: &str, args: &[&str]| cli(&s, token, args);
    let (code, api, err) = with(&admin, &["token", "create", "--kind", "api", "ci"]);
    assert_eq!(code, 0, "{err}");
    let api = api.trim().to_string();
    assert!(api.starts_with("minos_api_"), "{api}");
    // An api token reads the inventory but cannot manage tokens.
    let (code, _) = call(&s, "/api/ops/v1/tree", Some(&api));
    assert_eq!(code, 200);
    let (code, _, err) = with(&api, &["token", "list"]);
    assert_eq!(code, 2);
    assert!(err.contains("admin token"), "{err}");
    let (code, out, _) = with(&admin, &["token", "list"]);
    assert_eq!(code, 0);
    assert_eq!(out.lines().count(), 4, "{out}");
    assert!(out.contains("\tapi\tvalid\tci"), "{out}");
    // The only admin token cannot be revoked; the api one can, and stops working.
    let (code, _, err) = with(&admin, &["token", "revoke", "1"]);
    assert_eq!(code, 2);
    assert!(err.contains("last admin token"), "{err}");
    let (code, _, err) = with(&admin, &["token", "revoke", "3"]);
    assert_eq!(code, 0, "{err}");
    let (code, _) = call(&s, "/api/ops/v1/tree", Some(&api));
    assert_eq!(code, 401);
    let (code, _, err) = with(&admin, &["token", "create", "--kind", "root", "x"]);
    assert_eq!(code, 2);
    assert!(err.contains("unknown token kind"), "{err}");
    s.stop();
}

#[test]
fn hosts_are_imported_from_csv_or_not_at_all() {
    let (dir, _data, s, admin) = started();
    let run = |args: &[&str]| cli(&s, &admin, args);
    let (code, _, err) = run(&["tree", "add", "/ops", "--kind", "team"]);
    assert_eq!(code, 0, "{err}");
    let bad = dir.path().join("bad.csv");
    std::fs::write(
        &bad,
        "hostname,nodes,tags\ndb-01,/ops,rack=r1\ndb-02,/missing,\n",
    )
    .expect("write");
    let (code, _, err) = run(&["hosts", "import", bad.to_str().expect("path")]);
    assert_eq!(code, 2);
    assert!(err.contains("line 3: no tree node /missing"), "{err}");
    let (_, out, _) = run(&["hosts", "list"]);
    assert_eq!(
        out, "HOST\tSTATUS\tPLACEMENTS\tTAGS\n",
        "a bad file imports nothing"
    );
    let good = dir.path().join("good.csv");
    std::fs::write(
        &good,
        "# from the old CMDB\nhostname,nodes,tags\ndb-01,/ops,rack=r1;env=prod\n\"db-02\",,\n",
    )
    .expect("write");
    let (code, out, err) = run(&["hosts", "import", good.to_str().expect("path")]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("2 added, 0 updated"), "{out}");
    let (code, out, err) = run(&["hosts", "import", good.to_str().expect("path")]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("0 added, 2 updated"), "{out}");
    let (_, out, _) = run(&["hosts", "list", "env=prod"]);
    assert_eq!(
        out,
        "HOST\tSTATUS\tPLACEMENTS\tTAGS\ndb-01\tno agent\t/ops\tenv=prod,rack=r1\n"
    );
    s.stop();
}

#[test]
fn the_inventory_is_queryable_as_minos_host_info() {
    use serde_json::json;
    let (_dir, _data, s, admin) = started();
    let post = |path: &str, body: serde_json::Value| {
        let (code, b) = send(&s, reqwest::Method::POST, path, &admin, body);
        assert_eq!(code, 200, "{path}: {b}");
    };
    post(
        "/api/ops/v1/tree/nodes",
        json!({"parent": "/", "name": "sre", "kind": "team"}),
    );
    post(
        "/api/ops/v1/hosts",
        json!({"hostname": "web-01", "nodes": ["/sre"], "tags": {"rack.row": "r1"}}),
    );
    // Polls an instant query until `want(result)` holds.
    let wait = |q: &str, want: &dyn Fn(&serde_json::Value) -> bool| {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        loop {
            let (code, body) = s.get(&format!(
                "/api/v1/query?query={}",
                crate::util::urlencode(q)
            ));
            assert_eq!(code, 200, "{body}");
            let v = json(&body);
            if want(&v["data"]["result"]) {
                return v["data"]["result"].clone();
            }
            assert!(std::time::Instant::now() < deadline, "{q}: {body}");
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
    };
    let r = wait(r#"minos_host_info{team="sre"}"#, &|r| {
        r.as_array().is_some_and(|a| a.len() == 1)
    });
    let m = &r[0]["metric"];
    assert_eq!(
        (
            m["hostname"].as_str(),
            m["instance"].as_str(),
            m["rack_row"].as_str()
        ),
        (Some("web-01"), Some("web-01"), Some("r1")),
        "{r}"
    );
    assert_eq!(r[0]["value"][1], "1");
    // Detached: the placed series ends at once (a staleness marker), the host's own
    // placement-less series takes over.
    post(
        "/api/ops/v1/detach",
        json!({"host": "web-01", "node": "/sre"}),
    );
    wait(r#"minos_host_info{team="sre"}"#, &|r| {
        r.as_array().is_some_and(|a| a.is_empty())
    });
    let r = wait(r#"minos_host_info{hostname="web-01"}"#, &|r| {
        r.as_array().is_some_and(|a| a.len() == 1)
    });
    assert!(r[0]["metric"].get("team").is_none(), "{r}");
    s.stop();
}
