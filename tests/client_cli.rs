//! The command-line client (`walship kv|status|members`) against a real
//! cluster: round trips with their exit codes, `--json`, endpoint failover,
//! and what scripts see when nothing answers.

mod common;

use std::process::Output;
use std::process::Stdio;

use anyhow::Context;
use anyhow::Result;
use common::cluster::ClusterContext;
use common::Cluster;
use common::WALSHIP_BIN;
use serde_json::Value;
use tokio::io::AsyncWriteExt;

/// `walship ARGS` with `stdin` as its input and no WALSHIP_* variable.
async fn walship(args: &[&str], stdin: Option<&[u8]>) -> Result<Output> {
    let mut cmd = tokio::process::Command::new(WALSHIP_BIN);
    cmd.args(args)
        .stdin(if stdin.is_some() { Stdio::piped() } else { Stdio::null() })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    for (k, _) in std::env::vars() {
        if k.starts_with("WALSHIP_") {
            cmd.env_remove(k);
        }
    }
    let mut child = cmd.spawn().context("spawn walship")?;
    if let Some(input) = stdin {
        let mut pipe = child.stdin.take().context("stdin")?;
        pipe.write_all(input).await?;
        drop(pipe);
    }
    Ok(child.wait_with_output().await?)
}

fn out(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn err(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Runs and checks the exit code; returns stdout.
async fn expect(code: i32, args: &[&str]) -> Result<String> {
    let o = walship(args, None).await?;
    anyhow::ensure!(
        o.status.code() == Some(code),
        "walship {}: exit {:?}, wanted {code}; stdout {:?} stderr {:?}",
        args.join(" "),
        o.status.code(),
        out(&o),
        err(&o)
    );
    Ok(out(&o))
}

fn json(text: &str) -> Result<Value> {
    serde_json::from_str(text).with_context(|| format!("not JSON: {text}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kv_status_and_members_through_the_cli() -> Result<()> {
    let c = Cluster::start("client-cli").await?;
    let result = async {
        let a1 = c.node(1).listen().to_string();
        let a2 = c.node(2).listen().to_string();
        let both = format!("{a1},{a2}");
        let eps = ["--endpoints", both.as_str()];
        let kv = |rest: &[&str]| -> Vec<String> {
            let mut v: Vec<String> = vec!["kv".into()];
            v.extend(rest.iter().map(|s| s.to_string()));
            v.extend(eps.iter().map(|s| s.to_string()));
            v
        };
        let run = |code: i32, args: Vec<String>| async move {
            let refs: Vec<&str> = args.iter().map(String::as_str).collect();
            expect(code, &refs).await
        };

        // put / get / del, human output.
        let put = run(0, kv(&["put", "greeting", "hello world"])).await?;
        assert!(put.starts_with("OK (index "), "{put}");
        assert_eq!(run(0, kv(&["get", "greeting"])).await?, "hello world");
        assert_eq!(run(0, kv(&["get", "greeting", "--stale"])).await?, "hello world");
        // A value from stdin, raw bytes, a key that needs escaping.
        let o = walship(
            &["kv", "put", "dir/a key?", "-", "--endpoints", &both],
            Some(b"line 1\nline 2\n\xff"),
        )
        .await?;
        assert_eq!(o.status.code(), Some(0), "{}", err(&o));
        let o = walship(&["kv", "get", "dir/a key?", "--endpoints", &both], None).await?;
        assert_eq!(o.stdout, b"line 1\nline 2\n\xff");
        assert!(run(0, kv(&["del", "greeting"])).await?.starts_with("OK (index "));
        // Not found: exit 1, one line on stderr, nothing on stdout.
        let o = walship(&["kv", "get", "greeting", "--endpoints", &both], None).await?;
        assert_eq!(o.status.code(), Some(1));
        assert!(o.stdout.is_empty());
        assert_eq!(err(&o).lines().count(), 1, "{}", err(&o));
        assert!(err(&o).contains("not found"), "{}", err(&o));

        // CAS: create when absent, refuse a wrong expectation (exit 1), swap, delete.
        assert_eq!(
            run(0, kv(&["cas", "c", "--expect-absent", "--value", "one"])).await?,
            "OK\n"
        );
        let refused = run(1, kv(&["cas", "c", "--expect", "two", "--value", "three"])).await?;
        assert!(refused.contains("NOT APPLIED") && refused.contains("one"), "{refused}");
        run(0, kv(&["cas", "c", "--expect", "one", "--value", "two"])).await?;
        run(0, kv(&["cas", "c", "--expect", "two", "--delete"])).await?;
        run(1, kv(&["get", "c"])).await?;
        // Bad usage: exit 2, one line.
        let o = walship(
            &["kv", "cas", "c", "--expect", "x", "--expect-absent", "--value", "y"],
            None,
        )
        .await?;
        assert_eq!(o.status.code(), Some(2));
        assert_eq!(err(&o).lines().count(), 1, "{}", err(&o));
        let big = "k".repeat(2000);
        run(2, kv(&["put", &big, "v"])).await?;

        // --json parses, and says what happened.
        let v = json(&run(0, kv(&["put", "j", "v1", "--json"])).await?)?;
        assert_eq!(v["ok"], true);
        assert!(v["index"].as_u64().is_some(), "{v}");
        let v = json(&run(0, kv(&["get", "j", "--json"])).await?)?;
        assert_eq!((v["found"].as_bool(), v["value"].as_str()), (Some(true), Some("v1")));
        let v = json(&run(1, kv(&["get", "nope", "--json"])).await?)?;
        assert_eq!(v["found"], false);
        let v = json(&run(1, kv(&["cas", "j", "--expect", "x", "--value", "y", "--json"])).await?)?;
        assert_eq!((v["ok"].as_bool(), v["current"].as_str()), (Some(false), Some("v1")));

        // The first endpoint dead: the second one serves, writes included.
        let dead = common::ports::free_addr()?.to_string();
        let via_dead = format!("{dead},{a2}");
        expect(0, &["kv", "put", "failover", "ok", "--endpoints", &via_dead]).await?;
        assert_eq!(
            expect(0, &["kv", "get", "failover", "--endpoints", &via_dead]).await?,
            "ok"
        );

        // status: both nodes with their roles, one leader, lag; and ZooKeeper's view.
        let leader = c.client(1).status().await.into_result()?.leader.context("a leader")?;
        let zk = c.zk().addr();
        let text = expect(0, &["status", "--endpoints", &both, "--zk", &zk, "--cluster", &c.name]).await?;
        assert!(text.contains("leader") && text.contains("follower"), "{text}");
        assert!(text.contains(&format!("leader: node {leader}")), "{text}");
        assert!(text.contains("W's last log id") && text.contains("members/1"), "{text}");
        let v = json(&expect(0, &["status", "--endpoints", &both, "--json"]).await?)?;
        let eps = v["endpoints"].as_array().context("endpoints")?;
        assert_eq!(eps.len(), 2);
        let mut roles: Vec<&str> = eps.iter().filter_map(|e| e["role"].as_str()).collect();
        roles.sort();
        assert_eq!(roles, ["follower", "leader"], "{v}");
        assert_eq!(v["leader"]["id"].as_u64(), Some(leader));
        let v = json(
            &expect(
                0,
                &[
                    "status",
                    "--endpoints",
                    &both,
                    "--zk",
                    &zk,
                    "--cluster",
                    &c.name,
                    "--json",
                ],
            )
            .await?,
        )?;
        assert!(
            v["zookeeper"]["witness"]["last_log_id"]["index"].as_u64().is_some(),
            "{v}"
        );
        assert_eq!(v["zookeeper"]["leader"]["id"].as_u64(), Some(leader), "{v}");
        // One endpoint dead: still a report, exit 3, one line on stderr naming it.
        let o = walship(&["status", "--endpoints", &via_dead], None).await?;
        assert_eq!(o.status.code(), Some(3));
        assert!(out(&o).contains(&dead) && out(&o).contains("error:"), "{}", out(&o));
        assert_eq!(err(&o).lines().count(), 1, "{}", err(&o));

        // members: from ZooKeeper, and from the endpoints without it.
        let v = json(&expect(0, &["members", "--zk", &zk, "--cluster", &c.name, "--json"]).await?)?;
        assert_eq!(v["source"], "zookeeper");
        let members = v["members"].as_array().context("members")?;
        let addrs: Vec<&str> = members.iter().filter_map(|m| m["addr"].as_str()).collect();
        assert_eq!(addrs, [a1.as_str(), a2.as_str()], "{v}");
        assert_eq!(v["leader"]["id"].as_u64(), Some(leader));
        let text = expect(0, &["members", "--zk", &zk, "--cluster", &c.name]).await?;
        assert!(text.contains(&a1) && text.contains("yes, term"), "{text}");
        let text = expect(0, &["members", "--endpoints", &both]).await?;
        assert!(text.contains("from the endpoints") && text.contains(&a2), "{text}");
        expect(2, &["members", "--zk", &zk, "--cluster", "no-such-cluster"]).await?;
        Ok(())
    }
    .await;
    result.in_cluster(&c)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_endpoint_reachable_is_exit_3_with_one_line() -> Result<()> {
    let a = common::ports::free_addr()?.to_string();
    let b = common::ports::free_addr()?.to_string();
    let eps = format!("{a},{b}");
    for args in [
        vec!["kv", "get", "k"],
        vec!["kv", "put", "k", "v"],
        vec!["kv", "del", "k"],
        vec!["kv", "cas", "k", "--expect-absent", "--value", "v"],
        vec!["members"],
        vec!["status"],
    ] {
        let mut all = args.clone();
        all.extend(["--endpoints", &eps, "--timeout-ms", "3000"]);
        let o = walship(&all, None).await?;
        assert_eq!(o.status.code(), Some(3), "{all:?}: {}", err(&o));
        let e = err(&o);
        assert_eq!(e.lines().count(), 1, "{all:?}: one line, got {e:?}");
        assert!(e.starts_with("walship ") && e.contains(&a) && e.contains(&b), "{e}");
    }
    // A bad endpoint is bad usage.
    let o = walship(&["kv", "get", "k", "--endpoints", "nonsense"], None).await?;
    assert_eq!(o.status.code(), Some(2), "{}", err(&o));
    Ok(())
}
