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
        }],
        vec![Response {
            ok: false,
            current: val("a"),
        }],
        vec![Response {
            ok: true,
            current: val("b"),
        }],
        vec![Response {
            ok: false,
            current: val("b"),
        }],
        vec![Response {
            ok: true,
            current: None,
        }],
        vec![Response {
            ok: true,
            current: val("d"),
        }],
        vec![Response {
            ok: true,
            current: None,
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
