//! The Redis store and the memory store obey the same contract, checked against a real Redis.
use tongjiao_workflow::{CaseSnapshot, Workflow};

fn snap(id: &str, batch: &str, version: i64, state: &str) -> CaseSnapshot {
    CaseSnapshot {
        case_id: id.into(),
        batch_id: batch.into(),
        unit_code: format!("U-{id}"),
        buyer_ids: vec!["11010519491231002X".into()],
        version,
        state: state.into(),
        payload: format!("{id}@{version}").into_bytes(),
    }
}

async fn contract(w: Workflow) {
    assert!(w.put_case(&snap("c1", "b1", 1, "pending")).await.unwrap());
    assert!(w.put_case(&snap("c2", "b1", 1, "pending")).await.unwrap());
    assert!(w.put_case(&snap("c1", "b1", 2, "ready")).await.unwrap());
    // An older or equal version never overwrites a newer one.
    assert!(!w.put_case(&snap("c1", "b1", 2, "pending")).await.unwrap());
    assert!(!w.put_case(&snap("c1", "b1", 1, "pending")).await.unwrap());
    let counts = w.batch_counts("b1").await.unwrap();
    assert_eq!(counts.get("pending").copied().unwrap_or(0), 1);
    assert_eq!(counts.get("ready").copied().unwrap_or(0), 1);
    let got = w
        .get_cases(&["c1".into(), "c2".into(), "nope".into()])
        .await
        .unwrap();
    assert_eq!(got[0].as_deref(), Some(&b"c1@2"[..]));
    assert_eq!(got[1].as_deref(), Some(&b"c2@1"[..]));
    assert_eq!(got[2], None);
    // A look-up by index returns each case with its reply, in one round trip on Redis.
    assert_eq!(
        w.cases_by_unit("U-c1").await.unwrap(),
        vec![("c1".to_string(), Some(b"c1@2".to_vec()))]
    );
    assert_eq!(
        w.cases_by_buyer("11010519491231002X").await.unwrap(),
        vec![
            ("c1".to_string(), Some(b"c1@2".to_vec())),
            ("c2".to_string(), Some(b"c2@1".to_vec()))
        ]
    );
    assert!(
        w.cases_by_buyer("440524188001010014")
            .await
            .unwrap()
            .is_empty()
    );
    // Many at once: the newer ones apply, the stale one does not, counts follow.
    let applied = w
        .put_cases(&[
            snap("c1", "b1", 3, "transfer_registered"),
            snap("c2", "b1", 1, "ready"),
            snap("c3", "b1", 1, "pending"),
        ])
        .await
        .unwrap();
    assert_eq!(applied, 2, "c2@1 is not newer than the stored c2@1");
    let counts = w.batch_counts("b1").await.unwrap();
    assert_eq!(counts.get("transfer_registered").copied(), Some(1));
    assert_eq!(counts.get("pending").copied(), Some(2));
    assert_eq!(counts.get("ready").copied().unwrap_or(0), 0);
    w.clear().await.unwrap();
    assert_eq!(w.get_cases(&["c1".into()]).await.unwrap(), vec![None]);
    assert!(w.batch_counts("b1").await.unwrap().is_empty());
}

#[tokio::test]
async fn redis_store_keeps_the_contract() {
    let url = tongjiao_testkit::redis_url();
    let w = Workflow::redis(&url, &tongjiao_testkit::fresh_redis_prefix())
        .await
        .unwrap_or_else(|e| panic!("Redis is required at {url}: {e}"));
    contract(w).await;
}

/// An index member whose case is gone (evicted, or deleted by hand) comes back without a reply, so
/// the caller reads that case from the register.
#[tokio::test]
async fn a_redis_look_up_names_a_case_whose_reply_is_gone() {
    let url = tongjiao_testkit::redis_url();
    let prefix = tongjiao_testkit::fresh_redis_prefix();
    let w = Workflow::redis(&url, &prefix)
        .await
        .unwrap_or_else(|e| panic!("Redis is required at {url}: {e}"));
    assert!(w.put_case(&snap("c9", "b9", 1, "pending")).await.unwrap());
    assert!(w.put_case(&snap("c8", "b9", 1, "pending")).await.unwrap());
    let client = redis::Client::open(url.as_str()).expect("redis url");
    let mut conn = client
        .get_multiplexed_async_connection()
        .await
        .expect("connect to Redis");
    let _: i64 = redis::cmd("DEL")
        .arg(format!("{prefix}case:c9"))
        .query_async(&mut conn)
        .await
        .expect("DEL");
    assert_eq!(
        w.cases_by_unit("U-c9").await.unwrap(),
        vec![("c9".to_string(), None)]
    );
    assert_eq!(
        w.cases_by_buyer("11010519491231002X").await.unwrap(),
        vec![
            ("c8".to_string(), Some(b"c8@1".to_vec())),
            ("c9".to_string(), None)
        ]
    );
    w.clear().await.unwrap();
}

#[tokio::test]
async fn memory_store_keeps_the_contract() {
    contract(Workflow::memory()).await;
}

#[tokio::test]
async fn concurrent_writers_leave_the_newest_version_and_consistent_counts() {
    let w = Workflow::redis(
        &tongjiao_testkit::redis_url(),
        &tongjiao_testkit::fresh_redis_prefix(),
    )
    .await
    .unwrap();
    let states = [
        "pending",
        "ready",
        "transfer_registered",
        "certificate_issued",
    ];
    let mut tasks = Vec::new();
    for v in 1..=40i64 {
        let w = w.clone();
        let state = states[(v as usize) % states.len()];
        tasks.push(tokio::spawn(async move {
            w.put_case(&snap("c", "b", v, state)).await.unwrap()
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let got = w.get_cases(&["c".into()]).await.unwrap();
    assert_eq!(got[0].as_deref(), Some(&b"c@40"[..]));
    let counts = w.batch_counts("b").await.unwrap();
    let total: i64 = counts.values().sum();
    assert_eq!(total, 1, "one case is counted once: {counts:?}");
    assert_eq!(counts.get(states[0]).copied(), Some(1));
    w.clear().await.unwrap();
}
