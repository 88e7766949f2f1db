//! A database after copy-up: a ~90 MB SQLite file in a lower layer, copied up by the first
//! write through the mount, then thousands of small transactions (rollback journal: each one
//! creates, writes and deletes `-journal` beside the database, and rewrites pages anywhere in
//! the file). `PRAGMA integrity_check` must pass, and the content must equal that of the same
//! transactions run on a plain copy, before and after a remount; the lower file is untouched.
//!
//! Uses the sqlite3 CLI (installed by scripts/test.sh). CI: 2,000 transactions;
//! `COWFS_LONG=1`: 20,000.

use crate::common::*;
use std::fmt::Write as _;
use std::fs;
use std::io::Write as _;
use std::path::Path;
use std::process::{Command, Stdio};

fn transactions() -> usize {
    if std::env::var_os("COWFS_LONG").is_some_and(|v| v == "1") {
        20_000
    } else {
        2_000
    }
}

/// Runs `script` with `sqlite3 -batch -bail DB`; returns its output.
fn sqlite(db: &Path, script: &str) -> String {
    let mut child = Command::new("sqlite3")
        .args(["-batch", "-bail"])
        .arg(db)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run sqlite3 (scripts/test.sh installs it)");
    let mut stdin = child.stdin.take().unwrap();
    let input = script.to_string();
    let writer = std::thread::spawn(move || stdin.write_all(input.as_bytes()));
    let out = child.wait_with_output().unwrap();
    writer.join().unwrap().unwrap();
    assert!(
        out.status.success(),
        "sqlite3 {}: {}\n{}",
        db.display(),
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// 90 blobs of 1 MB (one transaction: quick) and an empty key-value table.
const BUILD: &str = "PRAGMA page_size = 4096;
CREATE TABLE blob(id INTEGER PRIMARY KEY, b BLOB);
BEGIN;
WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < 90)
  INSERT INTO blob SELECT x, randomblob(1000000) FROM c;
COMMIT;
CREATE TABLE kv(k INTEGER PRIMARY KEY, v TEXT, n INTEGER);
CREATE INDEX kv_n ON kv(n);
";

/// `n` small transactions, the same every time: inserts, updates and deletes of rows (single
/// statements, each its own transaction, and a few BEGIN..COMMIT groups), and now and then a
/// blob rewritten in the middle of the file. Most commits skip fsync (time); a stretch syncs.
fn workload(n: usize) -> String {
    let mut s = String::from("PRAGMA synchronous = OFF;\n");
    for i in 0..n {
        // An earlier key, some of which still exist.
        let j = (i * 7919) % (i + 1);
        if i == n / 2 {
            s.push_str("PRAGMA synchronous = FULL;\n");
        }
        if i == n / 2 + 50 {
            s.push_str("PRAGMA synchronous = OFF;\n");
        }
        let _ = match i % 10 {
            0..=4 => writeln!(
                s,
                "INSERT INTO kv VALUES({i}, 'value {i}', {});",
                i * 7 % 13
            ),
            5 | 6 => writeln!(s, "UPDATE kv SET n = n + {i}, v = v || '.' WHERE k = {j};"),
            7 => writeln!(s, "DELETE FROM kv WHERE k = {j};"),
            8 => writeln!(
                s,
                "BEGIN; INSERT OR REPLACE INTO kv VALUES({j}, 'again {i}', {i}); \
                 UPDATE kv SET n = -n WHERE n % 5 = {}; COMMIT;",
                i % 5
            ),
            _ if i % 50 == 9 => writeln!(
                s,
                "UPDATE blob SET b = CAST(printf('%.*c', {}, char(65 + {})) AS BLOB) WHERE id = {};",
                500_000 + i % 1000,
                i % 26,
                1 + i % 90
            ),
            _ => writeln!(s, "UPDATE kv SET v = 'nine {i}' WHERE k = {j};"),
        };
    }
    s
}

/// Everything the transactions can change, as text.
const CONTENT: &str = "SELECT count(*), total(n) FROM kv;
SELECT k, v, n FROM kv ORDER BY k;
SELECT id, length(b), hex(substr(b, 1, 8)), hex(substr(b, 250000, 8)), hex(substr(b, -8, 8))
  FROM blob ORDER BY id;
";

fn integrity_ok(db: &Path, when: &str) {
    let check = sqlite(db, "PRAGMA integrity_check;");
    assert_eq!(check, "ok\n", "integrity_check {when}");
}

#[test]
fn database_copied_up_then_thousands_of_transactions() {
    let l = Layers::new(1);
    let lower_db = l.lower(0).join("data/app.db");
    fs::create_dir(l.lower(0).join("data")).unwrap();
    sqlite(&lower_db, BUILD);
    let lower_len = fs::metadata(&lower_db).unwrap().len();
    assert!(lower_len > 90_000_000, "database of {lower_len} bytes");
    let lower_sum = fnv1a(&fs::read(&lower_db).unwrap());
    let plain_db = l.fresh_dir("plain").join("app.db");
    fs::copy(&lower_db, &plain_db).unwrap();

    let script = workload(transactions());
    let mount = l.mount();
    let db = l.mnt.join("data/app.db");
    let upper_db = l.upper.join("data/app.db");
    assert!(!upper_db.exists(), "copied up before any write");
    sqlite(&db, &script);
    sqlite(&plain_db, &script);
    assert!(upper_db.exists(), "not copied up by the writes");

    integrity_ok(&db, "through the mount");
    let want = sqlite(&plain_db, CONTENT);
    assert_eq!(sqlite(&db, CONTENT), want, "content through the mount");
    assert!(
        !l.mnt.join("data/app.db-journal").exists(),
        "a journal was left behind"
    );
    mount.unmount();

    assert_eq!(
        fnv1a(&fs::read(&lower_db).unwrap()),
        lower_sum,
        "the lower database changed"
    );
    // SQLite writes the same bytes for the same transactions on the same file.
    assert!(
        fs::read(&upper_db).unwrap() == fs::read(&plain_db).unwrap(),
        "the upper database differs from the plain copy byte for byte"
    );

    let mount = l.mount();
    integrity_ok(&db, "after a remount");
    assert_eq!(sqlite(&db, CONTENT), want, "content after a remount");
    mount.unmount();
}
