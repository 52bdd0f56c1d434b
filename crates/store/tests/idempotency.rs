//! Request records looked up, recorded and replayed in batches, on both backends.
use tongjiao_store::{Db, Idempotency, RequestKey, Schema, StoreError, sqlx};

fn key(principal: &str, request_id: &str, digest: &str) -> RequestKey {
    RequestKey {
        principal: principal.to_owned(),
        request_id: request_id.to_owned(),
        method: "IssueCertificate",
        digest: digest.to_owned(),
    }
}

async fn batches_record_replay_and_refuse(db: &Db) {
    db.migrate(
        Schema::Survey,
        &sqlx::migrate::Migrator::with_migrations(Vec::new()),
    )
    .await
    .expect("migrate");
    let idem = Idempotency::new(Schema::Survey);
    let first = [
        key("clerk-1", "r1", "d1"),
        key("clerk-1", "r2", "d2"),
        key("clerk-1", "r3", "d3"),
    ];

    // All three are new; r1 and r2 are settled with replies, r3 is refused (nothing recorded).
    let mut tx = db.begin().await.expect("begin");
    let seen = idem.seen_many(&mut tx, &first).await.expect("look up");
    assert!(seen.iter().all(Option::is_none), "{seen:?}");
    let rows = idem.completion_rows(vec![
        (first[0].clone(), b"reply-1".to_vec()),
        (first[1].clone(), b"reply-2".to_vec()),
    ]);
    tongjiao_store::bulk::insert_all(&mut tx, &[idem.completion(&rows)])
        .await
        .expect("store replies");
    tx.commit().await.expect("commit");

    // A second batch: r1 replays, r2 under another payload is refused, r3 is new again, and the
    // same request id under another principal is a different request.
    let second = [
        key("clerk-1", "r1", "d1"),
        key("clerk-1", "r2", "other"),
        key("clerk-1", "r3", "d3"),
        key("clerk-2", "r1", "d1"),
    ];
    let mut tx = db.begin().await.expect("begin");
    let seen = idem
        .seen_many(&mut tx, &second)
        .await
        .expect("look up again");
    tx.rollback().await.expect("rollback");
    assert!(
        matches!(&seen[0], Some(Ok(r)) if r == b"reply-1"),
        "{:?}",
        seen[0]
    );
    assert!(
        matches!(&seen[1], Some(Err(StoreError::RequestIdReused { request_id })) if request_id == "r2"),
        "{:?}",
        seen[1]
    );
    assert!(seen[2].is_none(), "{:?}", seen[2]);
    assert!(seen[3].is_none(), "{:?}", seen[3]);

    // Recording a request id a second time fails the statement: a batch that raced another one
    // for the same id rolls back instead of applying the request twice.
    let mut tx = db.begin().await.expect("begin");
    let rows = idem.completion_rows(vec![(first[0].clone(), b"reply-again".to_vec())]);
    let err = tongjiao_store::bulk::insert_all(&mut tx, &[idem.completion(&rows)])
        .await
        .expect_err("second record of r1");
    assert!(err.is_unique_violation(), "{err:?}");
    tx.rollback().await.expect("rollback");
    let mut tx = db.begin().await.expect("begin");
    let seen = idem.seen_many(&mut tx, &first[..1]).await.expect("look up");
    tx.rollback().await.expect("rollback");
    assert!(
        matches!(&seen[0], Some(Ok(r)) if r == b"reply-1"),
        "the first reply stands: {:?}",
        seen[0]
    );
}

#[tokio::test]
async fn batch_request_records_on_postgres() {
    let url = tongjiao_testkit::fresh_database().await;
    let db = Db::connect(&url, 2).await.expect("connect PostgreSQL");
    batches_record_replay_and_refuse(&db).await;
}

#[tokio::test]
async fn batch_request_records_on_sqlite() {
    let dir = tongjiao_testkit::fresh_sqlite_dir("idem");
    let db = Db::connect(&format!("sqlite://{}", dir.join("idem.db").display()), 1)
        .await
        .expect("open SQLite");
    batches_record_replay_and_refuse(&db).await;
    let _ = std::fs::remove_dir_all(dir);
}
