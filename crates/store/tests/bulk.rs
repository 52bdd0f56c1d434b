//! Bulk statements against the real backends: every value a service writes must come back exactly,
//! on PostgreSQL (array parameters) and on the sandbox's SQLite (multi-row VALUES).
use proptest::prelude::*;
use tongjiao_store::{
    Db, Rows, Schema, Val,
    bulk::{self, Insert},
    sqlx::{self, AssertSqlSafe, Executor},
};

type Row3 = (String, Option<i64>, Option<Vec<u8>>);

async fn postgres() -> Db {
    let url = tongjiao_testkit::fresh_database().await;
    let db = Db::connect(&url, 2).await.expect("connect PostgreSQL");
    db.pool()
        .execute("CREATE SCHEMA survey")
        .await
        .expect("create schema");
    db
}

async fn sqlite(dir: &std::path::Path) -> Db {
    let path = dir.join("bulk.db");
    Db::connect(&format!("sqlite://{}", path.display()), 1)
        .await
        .expect("open SQLite")
}

async fn make_tables(db: &Db) {
    let blob = match db.backend() {
        tongjiao_store::Backend::Postgres => "BYTEA",
        tongjiao_store::Backend::Sqlite => "BLOB",
    };
    let s = Schema::Survey.name();
    for sql in [
        format!("CREATE TABLE {s}.t (k TEXT PRIMARY KEY, n BIGINT, b {blob})"),
        format!("CREATE TABLE {s}.u (k TEXT PRIMARY KEY, n BIGINT NOT NULL)"),
    ] {
        db.pool()
            .execute(AssertSqlSafe(sql))
            .await
            .expect("create table");
    }
}

/// Writes `keys` with assorted numbers and bytes, reads them back by key, and compares.
async fn round_trip(db: &Db, keys: &[String]) {
    let mut rows = Rows::new(3);
    let mut want: Vec<Row3> = Vec::new();
    for (i, k) in keys.iter().enumerate() {
        let n = match i % 4 {
            0 => None,
            1 => Some(i64::MIN + i as i64),
            2 => Some(i64::MAX - i as i64),
            _ => Some(-(i as i64)),
        };
        let b = match i % 5 {
            0 => None,
            1 => Some(Vec::new()),
            _ => Some(vec![0u8, b'\\', b'"', b'{', 0xff, i as u8]),
        };
        rows.push([
            Val::Text(k.clone()),
            Val::opt_int(n),
            b.clone().map(Val::Bytes).unwrap_or(Val::NullBytes),
        ]);
        want.push((k.clone(), n, b));
    }
    let mut tx = db.begin().await.expect("begin");
    let inserted = bulk::insert(&mut tx, "INSERT INTO survey.t (k, n, b)", &rows, "")
        .await
        .expect("bulk insert");
    assert_eq!(inserted, keys.len() as u64);
    let mut got: Vec<Row3> =
        bulk::fetch_in(&mut tx, "SELECT k, n, b FROM survey.t WHERE k", keys, "")
            .await
            .expect("fetch by keys");
    tx.rollback().await.expect("rollback");
    got.sort();
    want.sort();
    assert_eq!(got, want);
}

fn awkward_keys() -> Vec<String> {
    [
        "plain",
        "",
        "NULL",
        "null",
        "with \"quotes\"",
        "back\\slash",
        "trailing\\",
        "{braces}",
        "comma, inside",
        "'single'",
        " leading and trailing ",
        "tab\tnewline\n",
        "不动产权证书 晋(2026)垣曲县不动产权第0000001号",
        "emoji 🏠",
        "$1::text[]",
    ]
    .into_iter()
    .map(str::to_owned)
    .collect()
}

#[tokio::test]
async fn awkward_values_round_trip_on_postgres() {
    let db = postgres().await;
    make_tables(&db).await;
    round_trip(&db, &awkward_keys()).await;
}

#[tokio::test]
async fn awkward_values_round_trip_on_sqlite() {
    let dir = tongjiao_testkit::fresh_sqlite_dir("bulk");
    let db = sqlite(&dir).await;
    make_tables(&db).await;
    round_trip(&db, &awkward_keys()).await;
    let _ = std::fs::remove_dir_all(dir);
}

/// More rows than one SQLite statement takes, so the chunking is exercised too.
#[tokio::test]
async fn many_rows_on_both_backends() {
    let keys: Vec<String> = (0..12_345).map(|i| format!("unit-{i:05}")).collect();
    let db = postgres().await;
    make_tables(&db).await;
    round_trip(&db, &keys).await;
    let dir = tongjiao_testkit::fresh_sqlite_dir("bulk");
    let db = sqlite(&dir).await;
    make_tables(&db).await;
    round_trip(&db, &keys).await;
    let _ = std::fs::remove_dir_all(dir);
}

async fn insert_all_writes_every_part(db: &Db) {
    make_tables(db).await;
    // Bytes travel sliced from one parameter (three per column): the parts after them must still
    // find their own parameters.
    let t: Rows = vec![
        vec![Val::from("a"), Val::Int(1), Val::Bytes(b"\x00\\x".to_vec())],
        vec![Val::from("b"), Val::Int(2), Val::NullBytes],
        vec![Val::from("c"), Val::Int(3), Val::Bytes(vec![0xff; 3000])],
    ]
    .into();
    let u: Rows = vec![
        vec![Val::from("x"), Val::Int(7)],
        vec![Val::from("y"), Val::Int(8)],
    ]
    .into();
    let empty = Rows::new(2);
    let mut tx = db.begin().await.expect("begin");
    bulk::insert_all(
        &mut tx,
        &[
            Insert {
                head: "INSERT INTO survey.t (k, n, b)",
                rows: &t,
                tail: "",
            },
            Insert {
                head: "INSERT INTO survey.u (k, n)",
                rows: &empty,
                tail: "",
            },
            Insert {
                head: "INSERT INTO survey.u (k, n)",
                rows: &u,
                tail: " ON CONFLICT (k) DO UPDATE SET n = excluded.n",
            },
        ],
    )
    .await
    .expect("insert_all");
    tx.commit().await.expect("commit");
    let us: Vec<(String, i64)> = sqlx::query_as("SELECT k, n FROM survey.u ORDER BY k")
        .fetch_all(db.pool())
        .await
        .expect("read u");
    assert_eq!(us, vec![("x".into(), 7), ("y".into(), 8)]);
    let ts: Vec<Row3> = sqlx::query_as("SELECT k, n, b FROM survey.t ORDER BY k")
        .fetch_all(db.pool())
        .await
        .expect("read t");
    assert_eq!(
        ts,
        vec![
            ("a".into(), Some(1), Some(b"\x00\\x".to_vec())),
            ("b".into(), Some(2), None),
            ("c".into(), Some(3), Some(vec![0xff; 3000])),
        ]
    );

    // A failing part leaves nothing of the others once the transaction is rolled back.
    let dup: Rows = vec![vec![Val::from("a"), Val::Int(2), Val::NullBytes]].into();
    let fresh: Rows = vec![vec![Val::from("z"), Val::Int(9)]].into();
    let mut tx = db.begin().await.expect("begin");
    let err = bulk::insert_all(
        &mut tx,
        &[
            Insert {
                head: "INSERT INTO survey.u (k, n)",
                rows: &fresh,
                tail: "",
            },
            Insert {
                head: "INSERT INTO survey.t (k, n, b)",
                rows: &dup,
                tail: "",
            },
        ],
    )
    .await
    .expect_err("duplicate key");
    assert!(err.is_unique_violation(), "{err}");
    tx.rollback().await.expect("rollback");
    let n: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM survey.u")
        .fetch_one(db.pool())
        .await
        .expect("count");
    assert_eq!(n, 2);
}

#[tokio::test]
async fn insert_all_on_postgres() {
    insert_all_writes_every_part(&postgres().await).await;
}

#[tokio::test]
async fn insert_all_on_sqlite() {
    let dir = tongjiao_testkit::fresh_sqlite_dir("bulk");
    insert_all_writes_every_part(&sqlite(&dir).await).await;
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test]
async fn insert_returning_reports_only_new_rows() {
    let db = postgres().await;
    make_tables(&db).await;
    let first: Rows = vec![vec![Val::from("a"), Val::Int(1)]].into();
    let both: Rows = vec![
        vec![Val::from("a"), Val::Int(1)],
        vec![Val::from("b"), Val::Int(2)],
    ]
    .into();
    let mut tx = db.begin().await.expect("begin");
    bulk::insert(&mut tx, "INSERT INTO survey.u (k, n)", &first, "")
        .await
        .expect("insert");
    let new: Vec<(String,)> = bulk::insert_returning(
        &mut tx,
        "INSERT INTO survey.u (k, n)",
        &both,
        " ON CONFLICT DO NOTHING RETURNING k",
    )
    .await
    .expect("insert returning");
    assert_eq!(new, vec![("b".to_owned(),)]);
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(12))]

    /// Any text a caller can send survives the array encoding on PostgreSQL.
    #[test]
    fn any_text_round_trips_on_postgres(keys in proptest::collection::hash_set("[^\u{0}]{0,24}", 1..40)) {
        let keys: Vec<String> = keys.into_iter().collect();
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
        rt.block_on(async {
            let db = postgres().await;
            make_tables(&db).await;
            round_trip(&db, &keys).await;
        });
    }
}

/// Bulk statements are planned once per connection (generic plans), not once per execution.
#[tokio::test]
async fn postgres_connections_keep_generic_plans() {
    let db = postgres().await;
    let (mode,): (String,) = sqlx::query_as("SHOW plan_cache_mode")
        .fetch_one(db.pool())
        .await
        .expect("show plan_cache_mode");
    assert_eq!(mode, "force_generic_plan");
    // A look-up planned for one key still answers for thousands, and the other way round.
    make_tables(&db).await;
    let keys: Vec<String> = (0..3_000).map(|i| format!("key-{i:04}")).collect();
    round_trip(&db, &keys).await;
    round_trip(&db, &keys[..1]).await;
}
