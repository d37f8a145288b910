//! node.meta: a data dir is used only by the node and cluster it was made for.

use super::super::open_or_init_meta;
use super::super::write_meta;
use super::super::NodeMeta;
use super::super::StoreError;
use super::append;
use super::open_log;
use super::sets;

#[tokio::test]
async fn fresh_dir_then_own_dir_then_foreign_dirs() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data_dir = dir.path().join("data");
    assert_eq!(open_or_init_meta(&data_dir, "c", 1).expect("fresh"), None);
    let meta = NodeMeta {
        cluster: "c".into(),
        cluster_id: "id-1".into(),
        node_id: 1,
    };
    write_meta(&data_dir, &meta).expect("write");
    assert_eq!(open_or_init_meta(&data_dir, "c", 1).expect("own"), Some(meta.clone()));

    let other_node = open_or_init_meta(&data_dir, "c", 2).expect_err("node 2 on node 1's dir");
    assert!(matches!(other_node, StoreError::ForeignDataDir { .. }), "{other_node}");
    assert!(
        other_node.to_string().contains("node 1 of cluster \"c\""),
        "{other_node}"
    );
    let other_cluster = open_or_init_meta(&data_dir, "d", 1).expect_err("another cluster");
    assert!(
        matches!(other_cluster, StoreError::ForeignDataDir { .. }),
        "{other_cluster}"
    );
    meta.ensure_cluster_id(&data_dir, "id-1").expect("same incarnation");
    let reincarnated = meta
        .ensure_cluster_id(&data_dir, "id-2")
        .expect_err("another incarnation");
    assert!(reincarnated.to_string().contains("id-2"), "{reincarnated}");
}

#[tokio::test]
async fn raft_data_without_node_meta_is_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut log = open_log(dir.path()).await;
    assert_eq!(
        open_or_init_meta(dir.path(), "c", 1).expect("empty dirs are fresh"),
        None
    );
    append(&mut log, sets(1, 0..=0)).await;
    let err = open_or_init_meta(dir.path(), "c", 1).expect_err("unknown owner");
    assert!(matches!(err, StoreError::ForeignDataDir { .. }), "{err}");
}
