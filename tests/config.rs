//! `walship node`'s configuration layers, through the real binary:
//! `--print-config` round-trips, flags beat env beat the file beats the
//! defaults, and a bad value or unknown key is refused naming it (exit 2,
//! one line, nothing started).

use std::path::Path;
use std::process::Command;
use std::process::Output;

const BIN: &str = env!("CARGO_BIN_EXE_walship");

const REQUIRED_FLAGS: &[&str] = &[
    "--id",
    "1",
    "--cluster",
    "demo",
    "--zk",
    "127.0.0.1:2181",
    "--data-dir",
    "/var/lib/walship",
    "--listen",
    "127.0.0.1:8081",
];

/// `walship node ARGS` with no WALSHIP_* variable but those in `env`.
fn node(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut cmd = Command::new(BIN);
    cmd.arg("node").args(args);
    for (k, _) in std::env::vars() {
        if k.starts_with("WALSHIP_") {
            cmd.env_remove(k);
        }
    }
    cmd.envs(env.iter().copied());
    cmd.output().expect("run walship")
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// The value of `key = value` in printed TOML.
fn value_of(toml: &str, key: &str) -> Option<String> {
    toml.lines()
        .find_map(|l| l.strip_prefix(&format!("{key} = ")))
        .map(str::to_string)
}

fn write(dir: &Path, name: &str, text: &str) -> String {
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path.to_string_lossy().into_owned()
}

fn print_config(args: &[&str], env: &[(&str, &str)]) -> String {
    let mut all = vec!["--print-config"];
    all.extend_from_slice(args);
    let o = node(&all, env);
    assert!(o.status.success(), "print-config failed: {}", stderr(&o));
    stdout(&o)
}

/// Refused with exit 2 and one line on stderr; returns that line.
fn refused(args: &[&str], env: &[(&str, &str)]) -> String {
    let o = node(args, env);
    assert_eq!(o.status.code(), Some(2), "stdout {} stderr {}", stdout(&o), stderr(&o));
    let err = stderr(&o);
    assert_eq!(err.lines().count(), 1, "one line on stderr: {err}");
    assert!(stdout(&o).is_empty(), "nothing on stdout: {}", stdout(&o));
    err.trim_end().to_string()
}

#[test]
fn print_config_round_trips_through_a_file() {
    let dir = tempfile::tempdir().unwrap();
    let first = print_config(
        &[
            REQUIRED_FLAGS,
            &["--advertise", "node1.example:8081", "--write-timeout-ms", "7000"],
        ]
        .concat(),
        &[],
    );
    // Every setting is there, defaults included.
    for key in [
        "id",
        "cluster",
        "zk",
        "data_dir",
        "listen",
        "advertise",
        "heartbeat_interval_ms",
        "election_timeout_ms",
        "zk_session_timeout_ms",
        "zk_op_timeout_ms",
        "snapshot_every_entries",
        "max_payload_entries",
        "write_timeout_ms",
        "max_inflight_batches",
        "max_batch_bytes",
        "max_group_wait_us",
        "witness_pipeline",
        "log_sync",
        "rebuild_from_witness",
        "max_connections",
        "header_read_timeout_ms",
        "request_timeout_ms",
    ] {
        assert!(value_of(&first, key).is_some(), "{key} missing from\n{first}");
    }
    assert_eq!(value_of(&first, "heartbeat_interval_ms").as_deref(), Some("200"));
    assert_eq!(value_of(&first, "log_sync").as_deref(), Some("\"background\""));
    assert_eq!(value_of(&first, "rebuild_from_witness").as_deref(), Some("false"));
    assert_eq!(value_of(&first, "write_timeout_ms").as_deref(), Some("7000"));
    assert_eq!(value_of(&first, "data_dir").as_deref(), Some("\"/var/lib/walship\""));

    let file = write(dir.path(), "walship.toml", &first);
    let second = print_config(&["--config", &file], &[]);
    assert_eq!(first, second, "--print-config of its own output differs");
    // WALSHIP_CONFIG names the file too.
    let third = print_config(&[], &[("WALSHIP_CONFIG", &file)]);
    assert_eq!(first, third);
}

#[test]
fn flags_beat_env_beat_the_file_beat_defaults() {
    let dir = tempfile::tempdir().unwrap();
    let file = write(
        dir.path(),
        "w.toml",
        "id = 2\ncluster = \"from-file\"\nzk = \"zk:2181\"\ndata_dir = \"/d\"\nlisten = \"0.0.0.0:8080\"\n\
         heartbeat_interval_ms = 300\nelection_timeout_ms = 1500\nwrite_timeout_ms = 9000\n",
    );
    let out = print_config(
        &[
            "--config",
            &file,
            "--heartbeat-interval-ms",
            "100",
            "--cluster",
            "from-flag",
        ],
        &[
            ("WALSHIP_HEARTBEAT_MS", "250"),
            ("WALSHIP_ELECTION_TIMEOUT_MS", "1200"),
            ("WALSHIP_CLUSTER", "from-env"),
        ],
    );
    assert_eq!(
        value_of(&out, "heartbeat_interval_ms").as_deref(),
        Some("100"),
        "flag > env > file"
    );
    assert_eq!(
        value_of(&out, "cluster").as_deref(),
        Some("\"from-flag\""),
        "flag > env > file"
    );
    assert_eq!(
        value_of(&out, "election_timeout_ms").as_deref(),
        Some("1200"),
        "env > file"
    );
    assert_eq!(
        value_of(&out, "write_timeout_ms").as_deref(),
        Some("9000"),
        "file > default"
    );
    assert_eq!(
        value_of(&out, "id").as_deref(),
        Some("2"),
        "file fills a required setting"
    );
    assert_eq!(value_of(&out, "zk_op_timeout_ms").as_deref(), Some("2000"), "default");
}

/// `--rebuild-from-witness` is a bare flag (or `=false`), a boolean in the
/// file, and `WALSHIP_REBUILD_FROM_WITNESS=1` (or true, yes, on).
#[test]
fn rebuild_from_witness_as_flag_env_and_file() {
    let dir = tempfile::tempdir().unwrap();
    let rebuild = |args: &[&str], env: &[(&str, &str)]| {
        let out = print_config(&[REQUIRED_FLAGS, args].concat(), env);
        value_of(&out, "rebuild_from_witness").unwrap()
    };
    assert_eq!(rebuild(&[], &[]), "false");
    assert_eq!(rebuild(&["--rebuild-from-witness"], &[]), "true");
    assert_eq!(
        rebuild(&["--rebuild-from-witness", "--log-sync", "per-append"], &[]),
        "true"
    );
    assert_eq!(rebuild(&[], &[("WALSHIP_REBUILD_FROM_WITNESS", "1")]), "true");
    assert_eq!(rebuild(&[], &[("WALSHIP_REBUILD_FROM_WITNESS", "true")]), "true");
    assert_eq!(
        rebuild(
            &["--rebuild-from-witness=false"],
            &[("WALSHIP_REBUILD_FROM_WITNESS", "1")]
        ),
        "false",
        "flag > env"
    );
    let file = write(dir.path(), "w.toml", "rebuild_from_witness = true\n");
    assert_eq!(rebuild(&["--config", &file], &[]), "true");
    let file = write(dir.path(), "bad.toml", "rebuild_from_witness = \"yes\"\n");
    let err = refused(&[REQUIRED_FLAGS, &["--config", &file]].concat(), &[]);
    assert!(err.contains("invalid setting rebuild_from_witness"), "{err}");
}

#[test]
fn unknown_key_in_the_file_is_refused_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    let file = write(dir.path(), "w.toml", "id = 1\nheartbeat_ms = 100\n");
    let err = refused(&[REQUIRED_FLAGS, &["--config", &file]].concat(), &[]);
    assert!(err.contains("unknown setting heartbeat_ms"), "{err}");
    assert!(err.contains("line 2"), "{err}");
    // The same without --print-config: refused before anything starts.
    let file = write(dir.path(), "x.toml", "election-timeout-ms = 100\n");
    let err = refused(&[REQUIRED_FLAGS, &["--config", &file, "--print-config"]].concat(), &[]);
    assert!(
        err.contains("unknown setting election-timeout-ms") && err.contains("did you mean election_timeout_ms?"),
        "{err}"
    );
}

#[test]
fn bad_values_are_refused_naming_the_setting() {
    let dir = tempfile::tempdir().unwrap();
    // A rule between two settings, from a flag.
    let err = refused(&[REQUIRED_FLAGS, &["--election-timeout-ms", "50"]].concat(), &[]);
    assert!(
        err.contains("invalid setting election_timeout_ms = 50: must be more than twice heartbeat_interval_ms (200)"),
        "{err}"
    );
    assert!(
        err.contains("--election-timeout-ms or WALSHIP_ELECTION_TIMEOUT_MS"),
        "{err}"
    );
    // A type error in the file names the key.
    let file = write(dir.path(), "t.toml", "max_batch_bytes = \"big\"\n");
    let err = refused(&[REQUIRED_FLAGS, &["--config", &file]].concat(), &[]);
    assert!(err.contains("invalid setting max_batch_bytes"), "{err}");
    // An out-of-range value from the file, from env.
    let file = write(dir.path(), "r.toml", "max_batch_bytes = 10\n");
    let err = refused(&[REQUIRED_FLAGS, &["--config", &file]].concat(), &[]);
    assert!(
        err.contains("invalid setting max_batch_bytes = 10") && err.contains(&file),
        "{err}"
    );
    let err = refused(
        &["--id", "1", "--cluster", "c", "--zk", "z:1", "--data-dir", "/d"],
        &[("WALSHIP_LISTEN", "x")],
    );
    assert!(err.contains("invalid setting listen"), "{err}");
    let err = refused(
        &[
            "--cluster",
            "c",
            "--zk",
            "z:1",
            "--data-dir",
            "/d",
            "--listen",
            "h:1",
            "--id",
            "3",
        ],
        &[],
    );
    assert!(err.contains("invalid setting id = 3: must be 1 or 2"), "{err}");
    // A type error in a flag or its env var (clap's message, one line).
    let err = refused(REQUIRED_FLAGS, &[("WALSHIP_HEARTBEAT_MS", "soon")]);
    assert!(
        err.contains("--heartbeat-interval-ms") && err.contains("'soon'"),
        "{err}"
    );
    // A required setting missing.
    let err = refused(&["--id", "1"], &[]);
    assert!(err.contains("missing setting cluster"), "{err}");
    // A file that is not there.
    let err = refused(&[REQUIRED_FLAGS, &["--config", "/nonexistent/w.toml"]].concat(), &[]);
    assert!(err.contains("cannot read the config file /nonexistent/w.toml"), "{err}");
}
