//! Request records claimed, replayed and released in batches, on both backends.
use tongjiao_store::{Claim, Db, Idempotency, RequestKey, Schema, StoreError, sqlx};

fn key(principal: &str, request_id: &str, digest: &str) -> RequestKey {
    RequestKey {
        principal: principal.to_owned(),
        request_id: request_id.to_owned(),
        method: "IssueCertificate",
        digest: digest.to_owned(),
    }
}

async fn batches_claim_replay_refuse_and_release(db: &Db) {
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

    // Claim all three; complete r1 and r2 with replies, refuse r3 (release it).
    let mut tx = db.begin().await.expect("begin");
    let claims = idem.claim_many(&mut tx, &first).await.expect("claim");
    assert!(
        claims.iter().all(|c| matches!(c, Ok(Claim::New))),
        "{claims:?}"
    );
    let rows = idem.completion_rows(vec![
        (first[0].clone(), b"reply-1".to_vec()),
        (first[1].clone(), b"reply-2".to_vec()),
    ]);
    tongjiao_store::bulk::insert_all(&mut tx, &[idem.completion(&rows)])
        .await
        .expect("store replies");
    idem.release_many(&mut tx, &[("clerk-1", "r3")])
        .await
        .expect("release");
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
    let claims = idem
        .claim_many(&mut tx, &second)
        .await
        .expect("claim again");
    tx.rollback().await.expect("rollback");
    assert!(
        matches!(&claims[0], Ok(Claim::Replay(r)) if r == b"reply-1"),
        "{:?}",
        claims[0]
    );
    assert!(
        matches!(&claims[1], Err(StoreError::RequestIdReused { request_id }) if request_id == "r2"),
        "{:?}",
        claims[1]
    );
    assert!(matches!(claims[2], Ok(Claim::New)), "{:?}", claims[2]);
    assert!(matches!(claims[3], Ok(Claim::New)), "{:?}", claims[3]);
}

#[tokio::test]
async fn batch_claims_on_postgres() {
    let url = tongjiao_testkit::fresh_database().await;
    let db = Db::connect(&url, 2).await.expect("connect PostgreSQL");
    batches_claim_replay_refuse_and_release(&db).await;
}

#[tokio::test]
async fn batch_claims_on_sqlite() {
    let dir = std::env::temp_dir().join(format!("tj-idem-{}", uuid::Uuid::new_v4().simple()));
    let db = Db::connect(&format!("sqlite://{}", dir.join("idem.db").display()), 1)
        .await
        .expect("open SQLite");
    batches_claim_replay_refuse_and_release(&db).await;
    let _ = std::fs::remove_dir_all(dir);
}
