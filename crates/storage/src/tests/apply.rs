//! The state machine's command semantics (what API clients see).

use openraft::storage::RaftStateMachine;
use openraft::EntryPayload;
use walship_types::genesis_entry;
use walship_types::Entry;
use walship_types::Request;
use walship_types::Response;

use super::lid;
use super::open_sm;

fn cmd(index: u64, req: Request) -> Entry {
    Entry {
        log_id: lid(1, index),
        payload: EntryPayload::Normal(walship_types::Batch::one(req)),
    }
}

fn val(s: &str) -> Option<Vec<u8>> {
    Some(s.as_bytes().to_vec())
}

#[tokio::test]
async fn set_delete_cas() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut sm = open_sm(dir.path()).await;
    let k = || "k".to_string();
    let replies = sm
        .apply(vec![
            genesis_entry(),
            cmd(
                1,
                Request::Set {
                    key: k(),
                    value: b"a".to_vec(),
                },
            ),
            cmd(
                2,
                Request::Cas {
                    key: k(),
                    expect: val("x"),
                    value: val("b"),
                },
            ),
            cmd(
                3,
                Request::Cas {
                    key: k(),
                    expect: val("a"),
                    value: val("b"),
                },
            ),
            cmd(
                4,
                Request::Cas {
                    key: k(),
                    expect: None,
                    value: val("c"),
                },
            ),
            cmd(
                5,
                Request::Cas {
                    key: k(),
                    expect: val("b"),
                    value: None,
                },
            ),
            cmd(
                6,
                Request::Cas {
                    key: k(),
                    expect: None,
                    value: val("d"),
                },
            ),
            cmd(7, Request::Delete { key: k() }),
            Entry {
                log_id: lid(1, 8),
                payload: EntryPayload::Blank,
            },
        ])
        .await
        .expect("apply");
    let want = vec![
        vec![],
        vec![Response {
            ok: true,
            current: val("a"),
            refusal: None,
        }],
        vec![Response {
            ok: false,
            current: val("a"),
            refusal: None,
        }],
        vec![Response {
            ok: true,
            current: val("b"),
            refusal: None,
        }],
        vec![Response {
            ok: false,
            current: val("b"),
            refusal: None,
        }],
        vec![Response {
            ok: true,
            current: None,
            refusal: None,
        }],
        vec![Response {
            ok: true,
            current: val("d"),
            refusal: None,
        }],
        vec![Response {
            ok: true,
            current: None,
            refusal: None,
        }],
        vec![],
    ];
    assert_eq!(replies, want);
    assert_eq!(sm.get("k"), None);
    assert!(sm.is_empty());
    assert_eq!(sm.applied(), Some(lid(1, 8)));
    let (_, membership) = sm.applied_state().await.expect("applied state");
    assert_eq!(
        membership.log_id(),
        &Some(genesis_entry().log_id),
        "genesis membership recorded"
    );
}

/// A retry in a client session is answered from the table, not applied
/// again, even after a later write to the same key, and after the table
/// went through a snapshot and a restart: `Set a=1`, `Set a=2`, then the
/// retry of `Set a=1` must leave `a=2`.
#[tokio::test]
async fn a_session_retry_is_replayed_not_applied_again_across_a_snapshot() {
    use openraft::RaftSnapshotBuilder;
    use walship_types::Refusal;
    use walship_types::SessionTag;

    let dir = tempfile::tempdir().expect("tempdir");
    let set = |v: &str| Request::Set {
        key: "a".into(),
        value: v.as_bytes().to_vec(),
    };
    let id = crate::session_id(1, 0).expect("an id");
    let tag = |seq| SessionTag {
        client: id,
        seq,
        acked_below: 1,
    };
    {
        let mut sm = open_sm(dir.path()).await;
        let replies = sm
            .apply(vec![
                genesis_entry(),
                cmd(1, Request::OpenSession),
                cmd(2, tag(1).wrap(set("1"))),
                cmd(3, set("2")),
            ])
            .await
            .expect("apply");
        assert_eq!(
            replies[1][0].current,
            Some(id.to_le_bytes().to_vec()),
            "the session id of request 0 of entry 1"
        );
        sm.get_snapshot_builder().await.build_snapshot().await.expect("build");
    }
    let mut sm = open_sm(dir.path()).await;
    assert_eq!(sm.sessions(), 1, "the table came back from the snapshot");
    let replies = sm
        .apply(vec![cmd(4, tag(1).wrap(set("1"))), cmd(5, tag(2).wrap(set("3")))])
        .await
        .expect("apply");
    assert_eq!(replies[0][0].current, val("1"), "the retry gets the first answer");
    assert_eq!(
        sm.get("a"),
        val("3"),
        "the retry did not write a=1 again; seq 2 applied"
    );
    let replies = sm
        .apply(vec![cmd(
            6,
            SessionTag {
                client: 99,
                seq: 1,
                acked_below: 1,
            }
            .wrap(set("4")),
        )])
        .await
        .expect("apply");
    assert_eq!(replies[0][0].refusal, Some(Refusal::UnknownSession(99)));
    assert_eq!(sm.get("a"), val("3"), "a request of an unknown session changes nothing");
}

/// Sessions opened by requests batched into one entry get distinct ids, so
/// each client's request 1 is its own. (With the log index as the id, the
/// second client's write was answered with the first's reply, acknowledged,
/// and never applied.)
#[tokio::test]
async fn sessions_opened_in_one_entry_are_distinct() {
    use walship_types::Batch;
    use walship_types::SessionTag;

    let dir = tempfile::tempdir().expect("tempdir");
    let mut sm = open_sm(dir.path()).await;
    let opened = sm
        .apply(vec![
            genesis_entry(),
            Entry {
                log_id: lid(1, 1),
                payload: EntryPayload::Normal(Batch {
                    ops: vec![Request::OpenSession, Request::OpenSession],
                }),
            },
        ])
        .await
        .expect("apply");
    let ids: Vec<u64> = opened[1]
        .iter()
        .map(|r| u64::from_le_bytes(r.current.as_deref().expect("an id").try_into().expect("8 bytes")))
        .collect();
    assert_ne!(ids[0], ids[1], "two sessions, two ids: {ids:?}");
    let put = |id: u64, key: &str| {
        SessionTag {
            client: id,
            seq: 1,
            acked_below: 1,
        }
        .wrap(Request::Set {
            key: key.into(),
            value: b"v".to_vec(),
        })
    };
    sm.apply(vec![Entry {
        log_id: lid(1, 2),
        payload: EntryPayload::Normal(Batch {
            ops: vec![put(ids[0], "a"), put(ids[1], "b")],
        }),
    }])
    .await
    .expect("apply");
    assert_eq!(sm.get("a"), val("v"));
    assert_eq!(
        sm.get("b"),
        val("v"),
        "the second session's request 1 was applied, not replayed"
    );
    assert_eq!(sm.sessions(), 2);
}
