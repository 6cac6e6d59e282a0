//! Debian's real `etcdctl` (v3 API, mutual TLS) against a 3-member cluster: the commands an
//! etcd operator types, with the output etcdctl prints for real etcd.

mod common;

use std::time::Duration;

use common::{leader_and_follower, run, start};
use testkit::{EtcdCluster, EtcdOpts};
use tokio::io::{AsyncBufReadExt, BufReader};

type R = anyhow::Result<()>;

fn lines(s: &str) -> Vec<&str> {
    s.lines().collect()
}

/// Standard base64, for the keys and values in etcdctl's JSON output.
fn b64(data: &[u8]) -> String {
    const T: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for chunk in data.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(T[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

#[test]
fn b64_matches_the_standard_alphabet() {
    assert_eq!(b64(b"/p/2"), "L3AvMg==");
    assert_eq!(b64(b"v2"), "djI=");
    assert_eq!(b64(b"abc"), "YWJj");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn put_get_del() {
    let mut c = start(3, EtcdOpts::default()).await;
    run(&mut c, put_get_del_body).await;
}

async fn put_get_del_body(c: &mut EtcdCluster) -> R {
    let (_, f) = leader_and_follower(c).await?;
    let all = c.etcdctl()?;
    let follower = c.etcdctl_for(f)?;

    assert_eq!(all.run(&["put", "/p/1", "v1"]).await?.ok()?.stdout, "OK\n");
    assert_eq!(
        follower.run(&["put", "/p/2", "v2"]).await?.ok()?.stdout,
        "OK\n"
    );
    all.run(&["put", "/q", "outside"]).await?.ok()?;

    let got = follower.run(&["get", "--prefix", "/p"]).await?.ok()?;
    assert_eq!(lines(&got.stdout), ["/p/1", "v1", "/p/2", "v2"]);
    let got = all
        .run(&["get", "--prefix", "/p", "--print-value-only"])
        .await?
        .ok()?;
    assert_eq!(lines(&got.stdout), ["v1", "v2"]);

    let json = follower.run(&["get", "/p/2", "-w", "json"]).await?.ok()?;
    let v: serde_json::Value = serde_json::from_str(&json.stdout)?;
    assert_eq!(v["count"], 1, "{v}");
    assert_eq!(v["kvs"][0]["key"], b64(b"/p/2"));
    assert_eq!(v["kvs"][0]["value"], b64(b"v2"));
    assert_eq!(v["kvs"][0]["version"], 1);
    let create = v["kvs"][0]["create_revision"].as_i64().unwrap_or(0);
    assert!(create > 1);
    assert_eq!(v["kvs"][0]["mod_revision"].as_i64(), Some(create));
    assert!(v["header"]["revision"].as_i64().unwrap_or(0) >= create);

    assert_eq!(all.run(&["del", "/p/1"]).await?.ok()?.stdout, "1\n");
    assert_eq!(all.run(&["del", "/p/1"]).await?.ok()?.stdout, "0\n");
    assert_eq!(
        follower.run(&["del", "--prefix", "/p"]).await?.ok()?.stdout,
        "1\n"
    );
    let got = all.run(&["get", "--prefix", "/"]).await?.ok()?;
    assert_eq!(lines(&got.stdout), ["/q", "outside"]);

    // An error is etcd's message on stderr and exit code 1.
    let bad = all.run(&["put", "", "x"]).await?;
    assert_eq!(bad.code, Some(1), "{bad:?}");
    assert!(
        bad.stderr
            .contains("Error: etcdserver: key is not provided"),
        "{}",
        bad.stderr
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn txn_from_stdin() {
    let mut c = start(3, EtcdOpts::default()).await;
    run(&mut c, txn_body).await;
}

async fn txn_body(c: &mut EtcdCluster) -> R {
    let (_, f) = leader_and_follower(c).await?;
    let ctl = c.etcdctl_for(f)?;
    ctl.run(&["put", "/t/a", "1"]).await?.ok()?;

    // Compares, blank line, success ops, blank line, failure ops, blank line.
    let input = "value(\"/t/a\") = \"1\"\nver(\"/t/a\") = \"1\"\ncreate(\"/t/none\") = \"0\"\n\n\
                 put /t/b then\nget /t/a\n\nput /t/b else\n\n";
    let out = ctl.run_with_stdin(&["txn"], Some(input)).await?.ok()?;
    assert_eq!(lines(&out.stdout), ["SUCCESS", "", "OK", "", "/t/a", "1"]);
    let got = ctl
        .run(&["get", "/t/b", "--print-value-only"])
        .await?
        .ok()?;
    assert_eq!(got.stdout, "then\n");

    let input = "mod(\"/t/a\") > \"1000000\"\n\nput /t/b then2\n\nput /t/b else\ndel /t/a\n\n";
    let out = ctl.run_with_stdin(&["txn"], Some(input)).await?.ok()?;
    assert_eq!(lines(&out.stdout), ["FAILURE", "", "OK", "", "1"]);
    let got = ctl.run(&["get", "--prefix", "/t/"]).await?.ok()?;
    assert_eq!(lines(&got.stdout), ["/t/b", "else"]);

    let out = ctl
        .run_with_stdin(
            &["txn", "-w", "json"],
            Some("value(\"/t/b\") = \"else\"\n\n\n\n"),
        )
        .await?
        .ok()?;
    let v: serde_json::Value = serde_json::from_str(&out.stdout)?;
    assert_eq!(v["succeeded"], true, "{v}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_with_rev() {
    let mut c = start(3, EtcdOpts::default()).await;
    run(&mut c, watch_body).await;
}

async fn watch_body(c: &mut EtcdCluster) -> R {
    let (_, f) = leader_and_follower(c).await?;
    let ctl = c.etcdctl_for(f)?;
    let mut cl = c.client().await?;
    let r1 = cl
        .put("/w/a", "1", None)
        .await?
        .header()
        .map_or(0, |h| h.revision());
    cl.put("/w/b", "2", None).await?;
    cl.delete("/w/a", None).await?;

    let rev = format!("--rev={r1}");
    let mut child = ctl
        .command(&["watch", &rev, "--prefix", "/w/", "--prev-kv"])
        .spawn()?;
    let stdout = child
        .stdout
        .take()
        .ok_or_else(|| anyhow::anyhow!("stdout"))?;
    let mut out = BufReader::new(stdout).lines();
    let mut seen = Vec::new();
    let mut read_until = async |n: usize, seen: &mut Vec<String>| -> R {
        while seen.len() < n {
            match tokio::time::timeout(Duration::from_secs(20), out.next_line()).await {
                Ok(Ok(Some(l))) => seen.push(l),
                Ok(Ok(None)) => anyhow::bail!("etcdctl watch exited; printed {seen:?}"),
                Ok(Err(e)) => return Err(e.into()),
                Err(_) => anyhow::bail!("etcdctl watch printed only {seen:?}"),
            }
        }
        Ok(())
    };
    // History from --rev: PUT (key, value), PUT, DELETE (prev key/value, key, empty value).
    read_until(10, &mut seen).await?;
    assert_eq!(
        seen,
        ["PUT", "/w/a", "1", "PUT", "/w/b", "2", "DELETE", "/w/a", "1", "/w/a"],
        "replayed history"
    );
    read_until(11, &mut seen).await?;
    assert_eq!(seen[10], "", "a delete event's empty value");
    // And live events.
    cl.put("/w/c", "3", None).await?;
    read_until(14, &mut seen).await?;
    assert_eq!(seen[11..], ["PUT", "/w/c", "3"]);
    child.kill().await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lease_commands() {
    let mut c = start(3, EtcdOpts::default()).await;
    run(&mut c, lease_body).await;
}

async fn lease_body(c: &mut EtcdCluster) -> R {
    let (_, f) = leader_and_follower(c).await?;
    let ctl = c.etcdctl_for(f)?;
    let out = ctl.run(&["lease", "grant", "60"]).await?.ok()?;
    // "lease 694d7f3c4c5d7a0b granted with TTL(60s)"
    let words: Vec<&str> = out.stdout.split_whitespace().collect();
    assert_eq!(words.len(), 5, "{}", out.stdout);
    assert_eq!(
        (words[0], words[2], words[3], words[4]),
        ("lease", "granted", "with", "TTL(60s)")
    );
    let id = words[1].to_string();
    assert!(
        i64::from_str_radix(&id, 16).is_ok_and(|v| v > 0),
        "hex lease id {id}"
    );

    ctl.run(&["put", &format!("--lease={id}"), "/l/1", "a"])
        .await?
        .ok()?;
    let out = ctl
        .run(&["lease", "keep-alive", "--once", &id])
        .await?
        .ok()?;
    assert_eq!(
        out.stdout.trim(),
        format!("lease {id} keepalived with TTL(60)")
    );

    let out = ctl
        .run(&["lease", "timetolive", "--keys", &id])
        .await?
        .ok()?;
    let t = out.stdout.trim();
    assert!(
        t.starts_with(&format!("lease {id} granted with TTL(60s), remaining("))
            && t.ends_with("s), attached keys([/l/1])"),
        "{t}"
    );
    let out = ctl.run(&["lease", "list"]).await?.ok()?;
    assert!(lines(&out.stdout).contains(&id.as_str()), "{}", out.stdout);
    assert!(out.stdout.starts_with("found 1 leases"), "{}", out.stdout);

    let out = ctl.run(&["lease", "revoke", &id]).await?.ok()?;
    assert_eq!(out.stdout.trim(), format!("lease {id} revoked"));
    let out = ctl.run(&["lease", "timetolive", &id]).await?.ok()?;
    assert_eq!(out.stdout.trim(), format!("lease {id} already expired"));
    let out = ctl.run(&["get", "/l/1"]).await?.ok()?;
    assert_eq!(out.stdout, "", "the lease's key went with it");

    let bad = ctl.run(&["lease", "revoke", "1234abcd"]).await?;
    assert_eq!(bad.code, Some(1));
    assert!(
        bad.stderr.contains("etcdserver: requested lease not found"),
        "{}",
        bad.stderr
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn member_and_endpoint_commands() {
    let mut c = start(3, EtcdOpts::default()).await;
    run(&mut c, member_endpoint_body).await;
}

async fn member_endpoint_body(c: &mut EtcdCluster) -> R {
    let (l, f) = leader_and_follower(c).await?;
    let ctl = c.etcdctl()?;
    let leader_hex = format!("{:x}", c.member_id(l).await?);

    // "8e9e05c52164694d, started, m0, https://127.0.0.1:P, https://127.0.0.1:C, false"
    let out = c.etcdctl_for(f)?.run(&["member", "list"]).await?.ok()?;
    let mut rows: Vec<Vec<String>> = lines(&out.stdout)
        .iter()
        .map(|l| l.split(", ").map(str::to_string).collect())
        .collect();
    rows.sort_by(|a, b| a[2].cmp(&b[2]));
    assert_eq!(rows.len(), 3, "{}", out.stdout);
    for (i, row) in rows.iter().enumerate() {
        let id = format!("{:x}", c.member_id(i).await?);
        assert_eq!(
            row,
            &[
                id,
                "started".to_string(),
                c.name(i).to_string(),
                c.peer_url(i),
                c.client_url(i),
                "false".to_string()
            ],
        );
    }
    let out = ctl.run(&["member", "list", "-w", "json"]).await?.ok()?;
    let v: serde_json::Value = serde_json::from_str(&out.stdout)?;
    assert_eq!(v["members"].as_array().map(Vec::len), Some(3), "{v}");

    // "https://127.0.0.1:C, <id>, <version>, <db size>, <is leader>, <is learner>, <term>,
    //  <index>, <applied index>, <errors>"
    let out = ctl.run(&["endpoint", "status"]).await?.ok()?;
    let rows: Vec<Vec<&str>> = lines(&out.stdout)
        .iter()
        .map(|l| l.split(", ").collect())
        .collect();
    assert_eq!(rows.len(), 3, "{}", out.stdout);
    let mut leaders = 0;
    for row in &rows {
        assert!(row.len() >= 9, "{row:?}");
        assert!(row[2].starts_with("3."), "version {row:?}");
        assert!(row[3].ends_with("B"), "db size {row:?}");
        assert_eq!(row[5], "false", "not a learner {row:?}");
        if row[4] == "true" {
            leaders += 1;
            assert_eq!(row[1], leader_hex);
        }
    }
    assert_eq!(leaders, 1, "exactly one leader: {}", out.stdout);
    let out = ctl.run(&["endpoint", "status", "-w", "json"]).await?.ok()?;
    let v: serde_json::Value = serde_json::from_str(&out.stdout)?;
    let arr = v.as_array().ok_or_else(|| anyhow::anyhow!("{v}"))?;
    assert_eq!(arr.len(), 3);
    for e in arr {
        let st = &e["Status"];
        assert_eq!(
            st["leader"].as_u64(),
            u64::from_str_radix(&leader_hex, 16).ok(),
            "{e}"
        );
        assert!(st["raftIndex"].as_u64().unwrap_or(0) > 0, "{e}");
        assert!(st["raftTerm"].as_u64().unwrap_or(0) > 0, "{e}");
        assert!(st["dbSize"].as_i64().unwrap_or(0) > 0, "{e}");
    }

    // etcdctl 3.4 prints the plain health lines on stderr, 3.5 on stdout.
    let out = ctl.run(&["endpoint", "health"]).await?.ok()?;
    let text = format!("{}{}", out.stdout, out.stderr);
    let rows: Vec<&str> = lines(&text)
        .into_iter()
        .filter(|l| l.contains(" is healthy: "))
        .collect();
    assert_eq!(rows.len(), 3, "{text}");
    for url in c.client_urls() {
        assert!(
            rows.iter().any(|r| r.starts_with(&format!(
                "{url} is healthy: successfully committed proposal: took = "
            ))),
            "{url}: {text}"
        );
    }
    let out = ctl.run(&["endpoint", "health", "-w", "json"]).await?.ok()?;
    let v: serde_json::Value = serde_json::from_str(&out.stdout)?;
    assert!(
        v.as_array()
            .is_some_and(|a| a.len() == 3 && a.iter().all(|e| e["health"] == true)),
        "{v}"
    );
    Ok(())
}
