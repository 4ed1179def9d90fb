//! The command line: bad flags and config files are refused with a clear message.

use std::process::Command;

fn minos(args: &[&str]) -> (i32, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_minos"))
        .args(args)
        .output()
        .expect("run minos");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stderr).to_string(),
    )
}

#[test]
fn bad_retention_is_refused_with_the_reason() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("d");
    let (code, err) = minos(&[
        "server",
        "--data",
        data.to_str().unwrap_or(""),
        "--retention",
        "15x",
    ]);
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("--retention") && err.contains("\"15x\""),
        "{err}"
    );
    assert!(!data.exists(), "nothing is created on a bad flag");
}

#[test]
fn config_file_errors_name_the_line() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = dir.path().join("minos.toml");
    std::fs::write(&cfg, "listen = \"127.0.0.1:0\"\nretension = \"90d\"\n").expect("write");
    let (code, err) = minos(&["server", "--config", cfg.to_str().unwrap_or("")]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("line 2") && err.contains("retension"), "{err}");
}

#[test]
fn zero_query_slots_are_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("d");
    let (code, err) = minos(&[
        "server",
        "--data",
        data.to_str().unwrap_or(""),
        "--query.max-concurrency",
        "0",
    ]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("--query.max-concurrency"), "{err}");
}
